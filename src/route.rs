//! Routing: which tenant, business unit (MID) and scope a request is for, and
//! the path to forward. Selectors, in order: a tenant's `path_prefix`, the
//! `X-SFMC-Tenant` / `X-SFMC-Account-Id` / `X-SFMC-Scope` headers, the default
//! tenant. Prefixes are stripped; every other byte of path and query is kept.

use std::sync::Arc;

use http::HeaderMap;
use http::request::Parts;
use http::uri::PathAndQuery;

use crate::config::{Settings, Tenant};
use crate::error::ProxyError;
use crate::failures::no_tenant;
use crate::headers::{X_SFMC_ACCOUNT_ID, X_SFMC_SCOPE, X_SFMC_TENANT};
use crate::token::{TokenKey, checked_scope};

/// Paths under this prefix are the proxy's own and never forwarded.
pub const ADMIN_PREFIX: &str = "/_proxy";

/// Liveness: answered before any check (orchestrators' probes carry neither
/// an allowed Host nor a key).
pub const HEALTH_PATH: &str = "/_proxy/health";
/// Readiness, per tenant or over all of them.
pub const READY_PATH: &str = "/_proxy/ready";
/// A person's login from a browser.
pub const LOGIN_PATH: &str = "/_proxy/login";
/// Where a browser comes back from SFMC's login page when a tenant's
/// `redirect_uri` is the proxy's own (behind a TLS front).
pub use crate::config::CALLBACK_PATH;
/// Metrics, for Prometheus (served with the operations work).
pub const METRICS_PATH: &str = "/_proxy/metrics";
/// The status page: JSON for programs, HTML for a browser.
pub const STATUS_PATH: &str = "/_proxy/status";
/// The status page's action: `POST` drops one key's cached token.
pub const STATUS_DROP_PATH: &str = "/_proxy/status/drop";

/// What a browser asks every host for. SFMC's APIs have no icon, so it is
/// answered here: forwarded, it would cost a token and show up as an error.
pub const FAVICON_PATH: &str = "/favicon.ico";

/// The path SDKs post to for a token (`{auth_url}/v2/token`): the broker's.
pub const TOKEN_PATH: &str = "/v2/token";

/// `/_proxy` and everything under it: the proxy's own, never forwarded.
pub fn is_admin_path(path: &str) -> bool {
    path == ADMIN_PREFIX || path.starts_with("/_proxy/")
}

/// The paths orchestrators and Prometheus poll: their access-log events
/// are written at debug, not info, so they do not drown the requests.
pub fn is_probe(path: &str) -> bool {
    [HEALTH_PATH, READY_PATH, METRICS_PATH].contains(&path)
}

pub enum Route {
    Admin,
    /// `POST /v2/token`: the local token broker for SDK tools.
    Broker,
    Api(Target),
}

/// Which SFMC API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rest,
    /// `POST /Service.asmx` (any case): the token goes into the envelope.
    Soap,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Soap => "soap",
        }
    }
}

/// The SOAP endpoint, as SDKs build it: `soap_instance_url + "Service.asmx"`.
const SOAP_PATH: &str = "/Service.asmx";

/// Where one API request goes.
#[derive(Debug)]
pub struct Target {
    pub tenant: Arc<Tenant>,
    pub key: TokenKey,
    pub api: Api,
    /// The client's path and query (minus a tenant prefix), byte for byte.
    pub path_and_query: PathAndQuery,
}

/// Routes a request; `bound` is what a broker-issued local token binds it
/// to (see [`crate::guard::Caller`]): its tenant, MID and scope then stand,
/// and a selector that names others is a conflict (400), never silently
/// overridden.
pub fn route(
    parts: &Parts,
    settings: &Settings,
    bound: Option<&TokenKey>,
) -> Result<Route, ProxyError> {
    let path = parts.uri.path();
    if is_admin_path(path) {
        return Ok(Route::Admin);
    }
    if is_token_request(&parts.method, path) {
        return Ok(Route::Broker);
    }
    let by_prefix = tenant_by_prefix(path, settings);
    // An SDK whose auth URL carries a tenant prefix: still the broker, never
    // SFMC (the body holds the tool's client id and secret).
    let prefixed_rest = by_prefix.and_then(|t| path.strip_prefix(t.path_prefix.as_deref()?));
    if prefixed_rest.is_some_and(|rest| is_token_request(&parts.method, rest)) {
        return Ok(Route::Broker);
    }
    let selectors = crate::headers::has_selectors(&parts.headers);
    let selector = |name: &http::HeaderName| match selectors {
        true => header(&parts.headers, name),
        false => Ok(None),
    };
    let by_header = selector(&X_SFMC_TENANT)?;
    let tenant = match bound {
        Some(key) => bound_tenant(key, by_header, by_prefix, settings)?,
        None => select_tenant(by_header, by_prefix, settings)?,
    };
    let path_and_query = match (by_prefix, parts.uri.path_and_query()) {
        (Some(prefixed), Some(pq)) => {
            strip_prefix(pq, prefixed.path_prefix.as_deref().unwrap_or(""))?
        }
        (None, Some(pq)) => pq.clone(),
        (_, None) => PathAndQuery::from_static("/"),
    };
    let (api, path_and_query) = classify(&parts.method, path_and_query)?;
    let mid = selector(&X_SFMC_ACCOUNT_ID)?;
    let scope = selector(&X_SFMC_SCOPE)?;
    let key = match bound {
        Some(key) => bound_key(key, mid, scope)?,
        None => TokenKey::for_tenant(&tenant, mid, scope)?,
    };
    Ok(Route::Api(Target {
        tenant,
        key,
        api,
        path_and_query,
    }))
}

/// The tenant a local token is bound to; a path prefix or `X-SFMC-Tenant`
/// naming another is a conflict, as a header against a prefix is.
fn bound_tenant(
    key: &TokenKey,
    by_header: Option<&str>,
    by_prefix: Option<&Arc<Tenant>>,
    settings: &Settings,
) -> Result<Arc<Tenant>, ProxyError> {
    let bound = &*key.tenant;
    let conflict = |selector: &str, named: &str| {
        ProxyError::BadRequest(format!(
            "this local token is bound to tenant `{bound}`, but {selector} selects tenant `{named}`; use a token from that tenant's /v2/token, or drop the selector"
        ))
    };
    if let Some(prefixed) = by_prefix.filter(|t| *t.name != *bound) {
        return Err(conflict("the path prefix", &prefixed.name));
    }
    if let Some(named) = by_header.filter(|name| *name != bound) {
        return Err(conflict("X-SFMC-Tenant", named));
    }
    // A tenant removed since the token was issued: the token is stale.
    settings
        .tenant(bound)
        .cloned()
        .ok_or(ProxyError::LocalTokenInvalid)
}

/// A local token's key; `X-SFMC-Account-Id` / `X-SFMC-Scope` may repeat it
/// but not change it (the tool authenticated for that MID and scope).
fn bound_key(
    key: &TokenKey,
    mid: Option<&str>,
    scope: Option<&str>,
) -> Result<TokenKey, ProxyError> {
    if let Some(mid) = mid.filter(|mid| key.account_id.as_deref() != Some(*mid)) {
        return Err(ProxyError::BadRequest(format!(
            "this local token is bound to business unit {}, but X-SFMC-Account-Id asks for {mid}; request a token for that MID from /v2/token",
            key.account_id.as_deref().unwrap_or("(the package's own)")
        )));
    }
    if let Some(scope) = scope
        && key.scope.as_deref() != Some(checked_scope(scope)?.as_ref())
    {
        return Err(ProxyError::BadRequest(
            "this local token is bound to another scope than X-SFMC-Scope asks for; request a token with that scope from /v2/token".into(),
        ));
    }
    Ok(key.clone())
}

fn header<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<&'a str>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    // Two selectors of one kind: which one wins must not depend on who reads.
    if values.next().is_some() {
        return Err(ProxyError::BadRequest(format!(
            "header {name} is sent more than once; send one"
        )));
    }
    match first {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| ProxyError::BadRequest(format!("header {name} is not valid text"))),
    }
}

/// The tenant whose prefix is a whole leading segment run of `path`.
fn tenant_by_prefix<'a>(path: &str, settings: &'a Settings) -> Option<&'a Arc<Tenant>> {
    settings
        .tenants
        .iter()
        .filter(|t| {
            t.path_prefix.as_deref().is_some_and(|prefix| {
                path.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
        .max_by_key(|t| t.path_prefix.as_ref().map_or(0, String::len))
}

fn select_tenant(
    by_header: Option<&str>,
    by_prefix: Option<&Arc<Tenant>>,
    settings: &Settings,
) -> Result<Arc<Tenant>, ProxyError> {
    match (by_header, by_prefix) {
        (Some(name), Some(prefixed)) if name != &*prefixed.name => {
            Err(ProxyError::BadRequest(format!(
                "X-SFMC-Tenant `{name}` conflicts with the path prefix of tenant `{}`",
                prefixed.name
            )))
        }
        (_, Some(prefixed)) => Ok(prefixed.clone()),
        (by_header, None) => settings
            .tenant_or_default(by_header)
            .cloned()
            .map_err(|missing| {
                let how = format!(
                    "send X-SFMC-Tenant ({}) or use a tenant's path_prefix",
                    settings.tenant_names()
                );
                no_tenant(missing, settings, &how)
            }),
    }
}

/// `POST /v2/token`. SDKs join `auth_url + "/v2/token"`, so a trailing slash
/// in the tool's auth URL gives `//v2/token`: that must reach the broker too,
/// never SFMC (the body holds the tool's client id and secret).
pub fn is_token_request(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && path.trim_start_matches('/') == &TOKEN_PATH[1..]
}

/// Whether a request looks like a SOAP call before it is routed: a POST whose
/// path (a tenant prefix included) ends in `/Service.asmx`, in any case. Errors
/// found before routing (guard, selectors) are then answered as SOAP faults.
pub fn soap_shaped(method: &http::Method, path: &str) -> bool {
    let (path, soap) = (path.as_bytes(), SOAP_PATH.as_bytes());
    let tail = path.get(path.len().saturating_sub(soap.len())..);
    method == http::Method::POST && tail.is_some_and(|tail| tail.eq_ignore_ascii_case(soap))
}

/// SOAP if it is a POST to `/Service.asmx` in any case (FuelSDK-Python posts
/// `/service.asmx`); SFMC's path is then written the way SFMC spells it.
fn classify(method: &http::Method, pq: PathAndQuery) -> Result<(Api, PathAndQuery), ProxyError> {
    if method != http::Method::POST || !pq.path().eq_ignore_ascii_case(SOAP_PATH) {
        return Ok((Api::Rest, pq));
    }
    let canonical = match pq.query() {
        Some(query) => PathAndQuery::try_from(format!("{SOAP_PATH}?{query}")),
        None => Ok(PathAndQuery::from_static(SOAP_PATH)),
    }
    .map_err(|e| ProxyError::BadRequest(format!("invalid path: {e}")))?;
    Ok((Api::Soap, canonical))
}

fn strip_prefix(pq: &PathAndQuery, prefix: &str) -> Result<PathAndQuery, ProxyError> {
    let rest = &pq.path()[prefix.len()..];
    let path = if rest.is_empty() { "/" } else { rest };
    let joined = match pq.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    PathAndQuery::try_from(joined).map_err(|e| ProxyError::BadRequest(format!("invalid path: {e}")))
}
