//! The proxy's own paths under `/_proxy/`, never forwarded: liveness
//! (`health`), readiness (`ready`: each tenant's state, see `readiness`),
//! the metrics (`metrics`, see `telemetry::metrics`), the browser login for
//! Web/Public App tenants (`login`) and the status page (`status`: the
//! model, `page`: its HTML, `accept`: which of JSON and HTML, `actions`:
//! dropping a cached token); and `/favicon.ico`, which a browser asks every
//! host for.

mod accept;
mod actions;
mod page;
mod status;

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use tokio::time::Instant;

pub use actions::FormToken;

use crate::body::{ClientBody, ProxyBody, json_response};
use crate::config::Settings;
use crate::error::ProxyError;
use crate::failures::no_tenant;
use crate::fleet::Health;
use crate::login::{self as logins, LoginStates, PendingLogins};
use crate::readiness;
use crate::route::{
    CALLBACK_PATH, LOGIN_PATH, METRICS_PATH, READY_PATH, STATUS_DROP_PATH, STATUS_PATH,
};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::CONTENT_TYPE;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{TokenCache, TokenKey};

/// What the admin paths may use of the proxy.
pub struct Context<'a> {
    pub settings: &'a Arc<Settings>,
    pub tokens: &'a TokenCache,
    pub client: &'a Arc<SfmcTokenClient>,
    pub pending: &'a PendingLogins,
    /// Browser logins waiting at `/_proxy/callback` (in Redis with `[redis]`).
    pub logins: &'a Arc<dyn LoginStates>,
    pub metrics: &'a Arc<Metrics>,
    pub page: &'a PageState,
    /// The fleet's seal with `[redis]`: the status page's form tokens are
    /// the fleet's.
    pub fleet_seal: Option<&'a crate::fleet::Sealer>,
    /// Redis' state with `[redis]`; a Redis down makes serving tenants
    /// `degraded`.
    pub redis: Option<&'a Health>,
}

/// What the status page keeps for the process's lifetime.
pub struct PageState {
    /// When the proxy was built, for the page's uptime.
    pub started: Instant,
    /// Required back with every action the page posts.
    pub form_token: FormToken,
}

impl PageState {
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            started: Instant::now(),
            form_token: FormToken::new()?,
        })
    }
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
    body: ClientBody,
    context: &Context<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match parts.uri.path() {
        READY_PATH => ready(parts, context).await,
        METRICS_PATH => metrics(parts, context.metrics),
        LOGIN_PATH => login(parts, context).await,
        STATUS_PATH => status_page(parts, context).await,
        STATUS_DROP_PATH => match parts.method {
            Method::POST => actions::drop_token(parts, body, context).await,
            // A link or a prefetch must never drop anything.
            _ => Err(ProxyError::WrongMethod {
                path: STATUS_DROP_PATH,
                allow: "POST",
            }),
        },
        other => Err(ProxyError::NotFound(other.to_owned())),
    }
}

/// `GET /_proxy/status`: JSON, or the HTML page for a browser
/// (`accept::prefers_html`). Bounded like readiness: it never waits on a hung
/// token endpoint for longer than a probe does.
async fn status_page(
    parts: &Parts,
    context: &Context<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        return Err(ProxyError::WrongMethod {
            path: STATUS_PATH,
            allow: "GET, HEAD",
        });
    }
    let status = status::Status::build(context).await;
    if accept::prefers_html(parts) {
        let notice = page::Notice::from_query(parts, &status);
        return Ok(page::response(&status, notice.as_ref()));
    }
    let mut response = json_response(StatusCode::OK, &status.to_json());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(response)
}

/// Requests and errors (4xx/5xx answers) of a key's business unit, all its
/// scopes together, since start.
fn business_unit_counts(context: &Context<'_>, key: &TokenKey) -> (u64, u64) {
    context
        .metrics
        .business_unit_counts(&key.tenant, key.account_id.as_ref())
}

/// `GET /_proxy/metrics`: the OpenMetrics exposition.
fn metrics(parts: &Parts, metrics: &Metrics) -> Result<Response<ProxyBody>, ProxyError> {
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        return Err(ProxyError::WrongMethod {
            path: METRICS_PATH,
            allow: "GET, HEAD",
        });
    }
    let mut response = Response::new(ProxyBody::full(metrics.encode()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `/_proxy/ready?tenant=NAME`: 200 when that tenant is `ready` or
/// `degraded`, else 503. Plain `/_proxy/ready`: `server.ready_requires` over
/// all tenants (see `readiness::overall`), and each tenant's state. Neither
/// joins a token fetch in flight nor fetches for a key in backoff.
async fn ready(parts: &Parts, context: &Context<'_>) -> Result<Response<ProxyBody>, ProxyError> {
    let settings = context.settings;
    if let Some(name) = query_param(parts, "tenant") {
        let tenant = settings.tenant_or_default(Some(&name)).map_err(|missing| {
            no_tenant(missing, settings, "name one: /_proxy/ready?tenant=NAME")
        })?;
        let mut report = readiness::check(tenant, context.tokens).await;
        degrade(&mut report, context);
        let mut body = tenant_state(&report);
        body.insert("tenant".into(), json!(&*tenant.name));
        return Ok(json_response(
            status(report.state.serving()),
            &Value::Object(body),
        ));
    }
    let mut reports = readiness::check_all(&settings.tenants, context.tokens).await;
    for report in &mut reports {
        degrade(report, context);
    }
    let states: Vec<_> = reports.iter().map(|r| r.state).collect();
    let requires = settings.server.ready_requires;
    let ready = readiness::overall(&states, requires);
    let tenants: Map<String, Value> = settings
        .tenants
        .iter()
        .zip(&reports)
        .map(|(tenant, report)| (tenant.name.to_string(), Value::Object(tenant_state(report))))
        .collect();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "ready_requires": requires.as_str(),
        "tenants": tenants,
    });
    Ok(json_response(status(ready), &body))
}

/// A serving tenant is `degraded` while the fleet's Redis is down: it
/// serves, but fetches on its own (a login tenant: until its token expires).
fn degrade(report: &mut readiness::Report, context: &Context<'_>) {
    if let Some(why) = context.redis.and_then(Health::down) {
        report.degrade(why);
    }
}

fn status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `state`, `ready`, and either the token's time left or the error a request
/// would get (code, message, SFMC's `sfmc_error` and description). Never a token.
fn tenant_state(report: &readiness::Report) -> Map<String, Value> {
    let mut state = match &report.error {
        Some(error) => match error.json_body() {
            Value::Object(body) => body,
            _ => Map::new(),
        },
        None => Map::new(),
    };
    state.remove("tenant");
    state.insert("state".into(), json!(report.state.as_str()));
    state.insert("ready".into(), json!(report.state.serving()));
    if let Some(left) = report.expires_in {
        state.insert("expires_in_s".into(), json!(left.as_secs()));
    }
    if let Some(why) = &report.degraded {
        state.insert("degraded".into(), json!(why));
    }
    state
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
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
    if logins::at_callback(tenant) {
        let account_id = key.account_id.as_deref();
        let begun =
            logins::begin_at_callback(tenant, account_id, &parts.headers, &**context.logins)
                .await?;
        let mut response = redirect(begun.authorize_url)?;
        response
            .headers_mut()
            .insert(header::SET_COOKIE, begun.set_cookie);
        return Ok(response);
    }
    let authorize_url = context
        .pending
        .begin(tenant, key, context.client.clone(), context.tokens.clone())
        .await?;
    redirect(authorize_url)
}

/// `GET /_proxy/callback?code=…&state=…`: a browser back from SFMC's login
/// page, through the TLS front of a tenant whose `redirect_uri` is this
/// path. It carries no key; its one-time `state` and the login cookie of
/// the browser that began it prove it. The answer is a
/// page for the person, whatever happened.
pub async fn callback(
    parts: &Parts,
    context: &Context<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if parts.method != Method::GET {
        return Err(ProxyError::WrongMethod {
            path: CALLBACK_PATH,
            allow: "GET",
        });
    }
    let callback = logins::Callback {
        settings: context.settings,
        states: context.logins,
        client: context.client,
        tokens: context.tokens,
    };
    let query = parts.uri.query().unwrap_or_default();
    let finished = logins::finish_at_callback(query, &parts.headers, &callback).await;
    let page = logins::outcome_page(&finished.text);
    let mut response = Response::new(ProxyBody::full(page));
    *response.status_mut() = finished.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The address held a one-time code: nothing of it is kept or sent on.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
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
