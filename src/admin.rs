//! The proxy's own paths under `/_proxy/`, never forwarded: liveness
//! (`health`), readiness (`ready`: every tenant can get a token) and the
//! browser login for Web/Public App tenants (`login`); and `/favicon.ico`,
//! which a browser asks every host for. Metrics and the status
//! page come with their own work.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::body::{ProxyBody, json_response};
use crate::config::Settings;
use crate::error::ProxyError;
use crate::failures::{no_tenant, token_failure};
use crate::login::PendingLogins;
use crate::route::{LOGIN_PATH, READY_PATH};
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{TokenCache, TokenKey};

/// What the admin paths may use of the proxy.
pub struct Context<'a> {
    pub settings: &'a Arc<Settings>,
    pub tokens: &'a TokenCache,
    pub client: &'a Arc<SfmcTokenClient>,
    pub pending: &'a PendingLogins,
}

/// No icon (204), cached by the browser for a day so it does not ask again.
pub fn favicon() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
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
        let state = match TokenKey::for_tenant(tenant, None, None) {
            Ok(key) => match context.tokens.get(&key).await {
                Ok(lease) => json!({
                    "ready": true,
                    "expires_in_s": lease.token.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                }),
                Err(failure) => not_ready(token_failure(failure, &tenant.name)),
            },
            Err(refused) => not_ready(refused.into()),
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
        .map_err(|missing| no_tenant(missing, settings, "name one: /_proxy/login?tenant=NAME"))?;
    let key = TokenKey::for_tenant(tenant, param("account_id"), None)?;
    let authorize_url = context
        .pending
        .begin(tenant, key, context.client.clone(), context.tokens.clone())
        .await?;
    redirect(authorize_url)
}

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
