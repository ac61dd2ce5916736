//! The local token broker: `POST /v2/token` answered by the proxy itself, so
//! SDK-based tools (FuelSDK, fuel-auth, …) that insist on authenticating can use
//! the proxy unmodified. The tool's auth URL becomes the proxy; it gets a local
//! stand-in token and instance URLs that point back at the proxy, so every call
//! it then makes comes here and is sent on with the real token. The real secret
//! and token never leave the proxy.
//!
//! This module owns the token request (both encodings, SFMC-shaped answers and
//! errors) and the local tokens (`local`, and `sealed` for those any replica
//! of a fleet honours); `proxy` resolves presented tokens.

mod local;
mod sealed;

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::body::{ClientBody, ProxyBody};
use crate::config::{Settings, Tenant};
use crate::error::{PROXY_ERROR_HEADER, ProxyError};
use crate::failures::token_failure;
use crate::token::{TokenCache, TokenKey};
pub use local::{LOCAL_TOKEN_PREFIX, LocalTokens, Presented};
pub use sealed::FleetGrants;

/// A token request is a few hundred bytes; anything far larger is not one.
/// Read before the tool is authenticated, so kept small.
const BODY_LIMIT: usize = 8 * 1024;

/// An OAuth error as SFMC words it, plus the proxy's own code in the header.
pub(crate) struct Refusal {
    status: StatusCode,
    error: String,
    description: String,
    proxy_code: &'static str,
}

impl Refusal {
    fn new(status: u16, error: &str, description: impl Into<String>, code: &'static str) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            error: error.to_owned(),
            description: description.into(),
            proxy_code: code,
        }
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(401, "invalid_client", description, "invalid_client")
    }

    fn into_response(self) -> Response<ProxyBody> {
        let body = json!({
            "error": self.error,
            "error_description": self.description,
            "error_uri": "https://developer.salesforce.com/docs",
        });
        let mut response = json_response(self.status, &body);
        response.headers_mut().insert(
            PROXY_ERROR_HEADER,
            HeaderValue::from_static(self.proxy_code),
        );
        response
    }
}

/// A proxy error met while issuing: SFMC's own refusal keeps SFMC's words
/// (the tool reports them as an authentication failure); the rest keep their
/// status and code.
impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Self {
        let code = error.code();
        match &error {
            ProxyError::TokenRejected(rejection) => Self::new(
                401,
                &rejection.sfmc_error,
                rejection
                    .sfmc_error_description
                    .clone()
                    .unwrap_or_else(|| error.to_string()),
                code,
            ),
            ProxyError::AccountNotAllowed { .. } => {
                Self::new(401, "unauthorized_client", error.to_string(), code)
            }
            _ => Self::new(error.status().as_u16(), code, error.to_string(), code),
        }
    }
}

/// Answers one `POST /v2/token`: authenticates the tool by tenant and local
/// secret, makes sure the real token can be had (so SFMC's refusal reaches the
/// tool at authentication, as it would without the proxy), and issues a local one.
/// `trusted`: the caller already proved who it is (an inbound key) or nobody
/// has to; only then may a refusal name tenants or say which part was wrong.
pub async fn issue(
    parts: &Parts,
    body: ClientBody,
    settings: &Settings,
    tokens: &TokenCache,
    locals: &LocalTokens,
    trusted: bool,
) -> Response<ProxyBody> {
    match try_issue(parts, body, settings, tokens, locals, trusted).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn try_issue(
    parts: &Parts,
    body: ClientBody,
    settings: &Settings,
    tokens: &TokenCache,
    locals: &LocalTokens,
    trusted: bool,
) -> Result<Response<ProxyBody>, Refusal> {
    // A stranger has the head's deadline to send its (small) body as well.
    let request = if trusted {
        read_request(parts, body).await?
    } else {
        let deadline = settings.server.header_read_timeout;
        tokio::time::timeout(deadline, read_request(parts, body))
            .await
            .map_err(|_| {
                malformed("the body did not arrive within server.header_read_timeout".into())
            })??
    };
    let field = |name: &str| match request.get(name) {
        Some(Value::String(text)) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    if field("grant_type").as_deref() != Some("client_credentials") {
        return Err(Refusal::new(
            400,
            "unsupported_grant_type",
            "the proxy's /v2/token issues local tokens for grant_type client_credentials",
            "unsupported_grant_type",
        ));
    }
    let client_id = field("client_id")
        .ok_or_else(|| Refusal::invalid_client("client_id is missing: send the tenant's name"))?;
    let secret = field("client_secret");
    let authenticated = tenant_for(settings, &client_id)
        .and_then(|tenant| authenticate(settings, &tenant, secret.as_deref()).map(|()| tenant));
    let tenant = match authenticated {
        Ok(tenant) => tenant,
        // One answer whatever was wrong, so that a stranger cannot tell a
        // tenant name from a wrong secret; the details go to the log.
        Err(refusal) if !trusted => {
            tracing::info!(reason = %refusal.description, "broker: token request refused");
            return Err(Refusal::invalid_client(
                "invalid client_id or client_secret: send a tenant name (or its real client id) and its local secret from broker.client_secrets",
            ));
        }
        Err(refusal) => return Err(refusal),
    };
    let key = TokenKey::for_tenant(
        &tenant,
        field("account_id").as_deref(),
        field("scope").as_deref(),
    )
    .map_err(ProxyError::from)?;
    let real = tokens
        .get(&key)
        .await
        .map_err(|failure| token_failure(failure, &tenant.name))?;
    let local = locals.issue(key, &client_id).map_err(|error| {
        Refusal::new(
            503,
            "temporarily_unavailable",
            error.to_string(),
            "token_unavailable",
        )
    })?;
    let base = public_base(parts, settings);
    let body = json!({
        "access_token": local.token,
        "token_type": "Bearer",
        // A reused token announces what is left of it.
        "expires_in": local.expires_in.as_secs(),
        "scope": real.token.scope.as_deref().unwrap_or_default(),
        "soap_instance_url": base,
        "rest_instance_url": base,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// Reads the body (at most `BODY_LIMIT` bytes) and parses it.
async fn read_request(parts: &Parts, body: ClientBody) -> Result<Map<String, Value>, Refusal> {
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|_| {
            malformed(format!(
                "the body could not be read (at most {BODY_LIMIT} bytes)"
            ))
        })?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    parse_request(content_type, &bytes)
}

/// The body as SFMC accepts it: JSON, or a form (`application/x-www-form-urlencoded`).
/// Pure (no I/O), so that it can be fuzzed.
pub(crate) fn parse_request(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, Refusal> {
    let is_form = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form {
        let pairs = form_urlencoded::parse(body)
            .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())));
        return Ok(pairs.collect());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(malformed(
            "the body must be a JSON object or a form (application/x-www-form-urlencoded)".into(),
        )),
    }
}

fn malformed(description: String) -> Refusal {
    Refusal::new(400, "invalid_request", description, "bad_request")
}

/// `client_id` names the tenant: by its name in `proxy.toml`, or by the real
/// client id (so a tool's existing config can stay as it is).
fn tenant_for(settings: &Settings, client_id: &str) -> Result<Arc<Tenant>, Refusal> {
    settings
        .tenants
        .iter()
        .find(|t| *t.name == *client_id || t.client_id == client_id)
        .cloned()
        .ok_or_else(|| {
            // Tenant names are listed only where anyone may ask anyway.
            let known = if settings.broker.accept_any_secret {
                format!(" ({})", settings.tenant_names())
            } else {
                String::new()
            };
            Refusal::invalid_client(format!(
                "unknown client_id: use a tenant name from proxy.toml{known}"
            ))
        })
}

fn authenticate(settings: &Settings, tenant: &Tenant, secret: Option<&str>) -> Result<(), Refusal> {
    let broker = &settings.broker;
    match broker.client_secrets.get(&tenant.name) {
        Some(expected) => {
            let presented = secret.unwrap_or_default().as_bytes();
            if bool::from(expected.expose().as_bytes().ct_eq(presented)) {
                Ok(())
            } else {
                // Not naming the tenant: the client id may be the real one.
                Err(Refusal::invalid_client(
                    "wrong client_secret: use the tenant's local secret (broker.client_secrets)",
                ))
            }
        }
        None if broker.accept_any_secret => Ok(()),
        None => Err(Refusal::invalid_client(format!(
            "this proxy is reachable from other hosts or requires inbound keys, so its /v2/token needs a local secret: set broker.client_secrets.{}",
            tenant.name
        ))),
    }
}

/// Where the tool should send its calls: `server.public_url`, else the address
/// the tool used to reach us (already checked against `allowed_hosts`).
fn public_base(parts: &Parts, settings: &Settings) -> String {
    if let Some(url) = &settings.server.public_url {
        return url.clone();
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let first = settings.server.listen.first();
            first.map_or_else(
                || crate::config::DEFAULT_LISTEN.to_owned(),
                ToString::to_string,
            )
        });
    format!("http://{host}/")
}

/// A token answer must never be cached by anything in between.
fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut response = crate::body::json_response(status, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
