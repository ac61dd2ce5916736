//! The proxy's own paths under `/_proxy/`, never forwarded: liveness
//! (`health`), readiness (`ready`: every tenant can get a token) and the
//! browser login for Web/Public App tenants (`login`). Metrics and the status
//! page come with their own work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::body::{ProxyBody, json_response};
use crate::config::{NoTenant, Settings};
use crate::error::ProxyError;
use crate::oauth;
use crate::route::key_for;
use crate::sync::lock;
use crate::token::TokenCache;
use crate::token::sfmc::SfmcTokenClient;

pub const HEALTH_PATH: &str = "/_proxy/health";
const READY_PATH: &str = "/_proxy/ready";
const LOGIN_PATH: &str = "/_proxy/login";
/// A browser login left unfinished this long is abandoned (codes live 5 minutes).
const LOGIN_WAIT: Duration = Duration::from_secs(600);

/// What the admin paths may use of the proxy.
pub struct Context<'a> {
    pub settings: &'a Arc<Settings>,
    pub tokens: &'a TokenCache,
    pub client: &'a Arc<SfmcTokenClient>,
    pub pending: &'a PendingLogins,
}

/// Liveness: the process is up and serving. Says nothing about SFMC.
pub fn health() -> Response<ProxyBody> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

pub async fn handle(
    parts: &Parts,
    context: &Context<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match parts.uri.path() {
        READY_PATH => Ok(ready(context).await),
        LOGIN_PATH => login(parts, context).await,
        other => Err(ProxyError::NotFound(other.to_owned())),
    }
}

/// 200 when every tenant's default business unit has a token (fetched if need
/// be, within the usual backoff), else 503; either way, per tenant what is wrong.
async fn ready(context: &Context<'_>) -> Response<ProxyBody> {
    let mut tenants = Map::new();
    let mut all_ready = true;
    for tenant in &context.settings.tenants {
        let state = match key_for(tenant, None, None) {
            Ok(key) => match context.tokens.get(&key).await {
                Ok(lease) => json!({
                    "ready": true,
                    "expires_in_s": lease.token.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                }),
                Err(failure) => not_ready(failure.into_proxy_error(&tenant.name)),
            },
            Err(error) => not_ready(error),
        };
        all_ready &= state["ready"] == true;
        tenants.insert(tenant.name.to_string(), state);
    }
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if all_ready { "ready" } else { "not_ready" }, "tenants": tenants});
    json_response(status, &body)
}

fn not_ready(error: ProxyError) -> Value {
    json!({"ready": false, "error": error.code(), "message": error.to_string()})
}

/// `GET /_proxy/login?tenant=NAME[&account_id=MID]`: starts a person's login
/// and sends the browser to SFMC. SFMC redirects back to the tenant's
/// `redirect_uri`, where a TLS listener started here for this one login takes
/// the code, exchanges it and stores the refresh token.
async fn login(parts: &Parts, context: &Context<'_>) -> Result<Response<ProxyBody>, ProxyError> {
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let settings = context.settings;
    let tenant = settings
        .tenant_or_default(param("tenant"))
        .map_err(|missing| match missing {
            NoTenant::Unknown(name) => ProxyError::UnknownTenant {
                name: name.to_owned(),
                known: settings.tenant_names(),
            },
            NoTenant::NoDefault => {
                ProxyError::BadRequest("name the tenant: /_proxy/login?tenant=NAME".into())
            }
        })?;
    let key = key_for(tenant, param("account_id"), None)?;
    let start = oauth::start(tenant).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    // A reload or second click joins the login already waiting on this
    // redirect URI (its listener holds the port and knows its state).
    let waiting = lock(context.pending).get(&start.redirect_uri).cloned();
    match waiting {
        Some((name, url)) if name == tenant.name => return redirect(url),
        Some((name, _)) => {
            return Err(ProxyError::BadRequest(format!(
                "a login for tenant `{name}` is waiting on {}; finish it first (it is given up after 10 minutes)",
                start.redirect_uri
            )));
        }
        None => {}
    }
    let listener = oauth::bind_callback(&start.redirect_uri)
        .await
        .map_err(|e| {
            ProxyError::BadRequest(format!(
                "{e} (is another login waiting?); or run `sfmc-proxy login --tenant {}`",
                tenant.name
            ))
        })?;
    let tokens = context.tokens.clone();
    let exchange = oauth::exchanger(
        context.client.clone(),
        tenant.name.clone(),
        key.account_id.clone(),
        start.code_verifier.clone(),
        move |token, sent_at| {
            if let Err(error) = tokens.put(&key, token, sent_at) {
                tracing::warn!(?error, "the login's first token could not be cached");
            }
        },
    );
    let tenant_name = tenant.name.clone();
    let (pending, redirect_uri) = (context.pending.clone(), start.redirect_uri.clone());
    lock(&pending).insert(
        redirect_uri.clone(),
        (tenant_name.clone(), start.authorize_url.clone()),
    );
    let authorize_url = start.authorize_url.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(LOGIN_WAIT, listener.complete(&start.state, exchange)).await {
            Ok(Ok(())) => tracing::info!(tenant = %tenant_name, "logged in; refresh token stored"),
            Ok(Err(error)) => tracing::warn!(tenant = %tenant_name, %error, "browser login failed"),
            Err(_) => tracing::warn!(tenant = %tenant_name, "browser login not completed in time"),
        }
        lock(&pending).remove(&redirect_uri);
    });
    redirect(authorize_url)
}

/// Logins waiting for their browser redirect: redirect URI → (tenant, authorize URL).
pub type PendingLogins = Arc<Mutex<HashMap<String, (Arc<str>, String)>>>;

/// Sends the browser to SFMC's login page.
fn redirect(authorize_url: String) -> Result<Response<ProxyBody>, ProxyError> {
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::FOUND;
    let location = HeaderValue::try_from(authorize_url)
        .map_err(|_| ProxyError::BadRequest("the authorize URL is not a valid header".into()))?;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
