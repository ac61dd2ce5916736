//! `ProxyError`: every response the proxy makes itself instead of forwarding.
//!
//! Each variant knows its HTTP status, a stable machine-readable `code` (sent as
//! the JSON `error` field and in the `x-sfmc-proxy-error` header, so users can tell
//! the proxy's answers from SFMC's) and a message a person can act on. Nothing in
//! here ever carries a token or a secret.
//!
//! A leaf: it renders into a response over any body type that can be made
//! from bytes, so it depends on no other module of the crate.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

/// Name of the response header that marks a proxy-made response.
pub const PROXY_ERROR_HEADER: &str = "x-sfmc-proxy-error";

/// Which side of the proxy a failure belongs to (pingora's convention): it
/// decides the status family and helps operators read logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something the proxy refuses.
    Downstream,
    /// SFMC (auth endpoint or instance) failed or refused.
    Upstream,
    /// The proxy itself failed (a bug, or the system under it).
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("unknown tenant `{name}`; configured tenants: {known}")]
    UnknownTenant { name: String, known: String },
    #[error("no tenant selected: {0}")]
    NoTenantSelected(String),
    #[error(
        "business unit (account_id) {mid} is not in tenant `{tenant}`'s account_ids; add it to tenants.{tenant}.account_ids or pick another MID"
    )]
    AccountNotAllowed { tenant: String, mid: String },
    #[error("{0}")]
    BadRequest(String),
    /// SFMC refused the token request (boxed: the biggest variant by far,
    /// and every `Result<_, ProxyError>` would carry its size).
    #[error("{0}")]
    TokenRejected(Box<TokenRejection>),
    #[error("could not get a token for tenant `{tenant}`: {reason}")]
    TokenUnavailable {
        tenant: String,
        reason: String,
        retry_after_secs: u64,
    },
    #[error(
        "SFMC returned an instance URL the proxy will not send a token to ({url}): {reason}; if this host is legitimate add its suffix to upstream.allowed_instance_hosts"
    )]
    InstanceNotAllowed { url: String, reason: String },
    #[error("could not reach the SFMC instance: {0}")]
    UpstreamUnavailable(String),
    #[error(
        "SFMC did not answer within upstream.response_timeout ({})",
        humantime::format_duration(*.0)
    )]
    UpstreamTimeout(std::time::Duration),
    #[error(
        "Host `{0}` is not allowed; requests must address the proxy by a name in server.allowed_hosts (DNS-rebinding defence)"
    )]
    HostNotAllowed(String),
    #[error(
        "cross-site browser request refused (Origin `{0}`); add the origin to server.allowed_origins if this page should call the proxy"
    )]
    CrossSiteRequest(String),
    #[error(
        "this proxy requires an inbound key: send `Proxy-Authorization: Bearer KEY` or `X-Proxy-Key: KEY`"
    )]
    InboundKeyRequired,
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A tenant's `read_only`, `allow_paths` or `deny_paths` refused the
    /// request (`rule` names which); the message says what and how to allow it.
    #[error("{message}")]
    PolicyRefused {
        tenant: String,
        rule: &'static str,
        message: String,
    },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no such admin path `{0}`; see /_proxy/health")]
    NotFound(String),
    /// An admin path asked with a method it does not answer (`Allow` says which).
    #[error("{path} answers {allow} only")]
    WrongMethod {
        path: &'static str,
        allow: &'static str,
    },
    /// The status page's action named a key the cache does not hold.
    #[error(
        "tenant `{tenant}` holds no token key for business unit {account_id}, scope {scope}; reload /_proxy/status for the keys held now"
    )]
    UnknownKey {
        tenant: String,
        account_id: String,
        scope: String,
    },
    /// The status page's action came without the page's form token.
    #[error(
        "the form token is missing or wrong (the proxy may have restarted since the page was loaded); reload /_proxy/status and try again"
    )]
    FormTokenInvalid,
    #[error(
        "this local token from the proxy's /v2/token is unknown or expired (local tokens live in memory and end with a restart); authenticate again"
    )]
    LocalTokenInvalid,
    #[error("tenant `{tenant}` needs a person to log in ({reason}); run `{command}`")]
    LoginRequired {
        tenant: String,
        reason: String,
        command: String,
    },
    /// A tenant's `max_concurrent_requests` were all at SFMC for its whole
    /// `queue_timeout`.
    #[error(
        "tenant `{tenant}` already has tenants.{tenant}.max_concurrent_requests ({limit}) requests at SFMC, and none finished within {} (tenants.{tenant}.queue_timeout); send fewer requests at once, or try again shortly",
        humantime::format_duration(*.waited)
    )]
    UpstreamBusy {
        tenant: String,
        limit: usize,
        waited: std::time::Duration,
    },
    #[error("the proxy failed: {0}")]
    Internal(String),
    #[error("the proxy is at a limit of its own: {0}; try again shortly")]
    Overloaded(String),
}

/// SFMC's refusal of a token request: its words, the URL that answered, and
/// `hint`, what to change (chosen by SFMC's error).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "SFMC refused the token request for tenant `{tenant}`: POST {url} answered HTTP {status}{}; {hint}",
    sfmc_words(*.status, .sfmc_error, .sfmc_error_description.as_deref())
)]
pub struct TokenRejection {
    pub tenant: String,
    pub status: u16,
    pub sfmc_error: String,
    pub sfmc_error_description: Option<String>,
    pub url: String,
    pub hint: String,
    pub retry_after_secs: u64,
}

/// `: invalid_client "Client authentication failed."` — SFMC's `error` and
/// `error_description` as it sent them; nothing when the body named no error
/// (`error` is then the `http_<status>` the parser made up).
pub fn sfmc_words(status: u16, error: &str, description: Option<&str>) -> String {
    let code = match error == format!("http_{status}") {
        true => None,
        false => Some(error),
    };
    match (code, description) {
        (Some(code), Some(description)) => format!(": {code} \"{description}\""),
        (Some(code), None) => format!(": {code}"),
        (None, Some(description)) => format!(": \"{description}\""),
        (None, None) => " (no SFMC error in the body)".to_owned(),
    }
}

/// An error and its causes on one line ("connect failed: connection refused"):
/// the top-level message of hyper and reqwest errors alone rarely says why.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl ProxyError {
    /// The one table: status, side and stable code of every variant. No
    /// `_ =>`: a new variant does not compile until it has its row.
    fn row(&self) -> (StatusCode, Side, &'static str) {
        use Side::{Downstream, Internal, Upstream};
        match self {
            Self::UnknownTenant { .. } => (StatusCode::BAD_REQUEST, Downstream, "unknown_tenant"),
            Self::NoTenantSelected(_) => (StatusCode::BAD_REQUEST, Downstream, "unknown_tenant"),
            Self::AccountNotAllowed { .. } => {
                (StatusCode::FORBIDDEN, Downstream, "account_not_allowed")
            }
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, Downstream, "bad_request"),
            Self::TokenRejected(_) => (StatusCode::BAD_GATEWAY, Upstream, "token_rejected"),
            Self::TokenUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Upstream,
                "token_unavailable",
            ),
            Self::InstanceNotAllowed { .. } => {
                (StatusCode::BAD_GATEWAY, Upstream, "instance_not_allowed")
            }
            Self::UpstreamUnavailable(_) => {
                (StatusCode::BAD_GATEWAY, Upstream, "upstream_unavailable")
            }
            Self::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, Upstream, "upstream_timeout"),
            Self::HostNotAllowed(_) => (StatusCode::FORBIDDEN, Downstream, "host_not_allowed"),
            Self::CrossSiteRequest(_) => (StatusCode::FORBIDDEN, Downstream, "cross_site_request"),
            Self::InboundKeyRequired => {
                (StatusCode::UNAUTHORIZED, Downstream, "inbound_key_required")
            }
            Self::MethodNotAllowed(_) => (StatusCode::FORBIDDEN, Downstream, "method_not_allowed"),
            Self::PolicyRefused { .. } => (StatusCode::FORBIDDEN, Downstream, "method_not_allowed"),
            Self::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, Downstream, "body_too_large")
            }
            Self::NotFound(_) => (StatusCode::NOT_FOUND, Downstream, "not_found"),
            Self::WrongMethod { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                Downstream,
                "method_not_allowed",
            ),
            Self::UnknownKey { .. } => (StatusCode::NOT_FOUND, Downstream, "unknown_key"),
            Self::FormTokenInvalid => (StatusCode::FORBIDDEN, Downstream, "form_token_invalid"),
            Self::LocalTokenInvalid => {
                (StatusCode::UNAUTHORIZED, Downstream, "local_token_invalid")
            }
            Self::LoginRequired { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Upstream, "login_required")
            }
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Internal,
                "internal_error",
            ),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, Internal, "overloaded"),
            // The tenant's own limit, set to spare SFMC's: the proxy's side.
            Self::UpstreamBusy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Internal, "upstream_busy")
            }
        }
    }

    /// Stable code: the JSON `error` field and the `x-sfmc-proxy-error` value.
    pub fn code(&self) -> &'static str {
        self.row().2
    }

    pub fn status(&self) -> StatusCode {
        self.row().0
    }

    pub fn side(&self) -> Side {
        self.row().1
    }

    /// Extra JSON fields that give the client context beyond the message.
    fn context(&self) -> Map<String, Value> {
        let mut ctx = Map::new();
        match self {
            Self::UnknownTenant { name, .. } => {
                ctx.insert("tenant".into(), json!(name));
            }
            Self::AccountNotAllowed { tenant, mid } => {
                ctx.insert("tenant".into(), json!(tenant));
                ctx.insert("account_id".into(), json!(mid));
            }
            Self::TokenRejected(rejection) => {
                let TokenRejection {
                    tenant,
                    status,
                    sfmc_error,
                    sfmc_error_description,
                    url,
                    ..
                } = &**rejection;
                ctx.insert("tenant".into(), json!(tenant));
                ctx.insert("sfmc_status".into(), json!(status));
                ctx.insert("sfmc_error".into(), json!(sfmc_error));
                ctx.insert(
                    "sfmc_error_description".into(),
                    json!(sfmc_error_description),
                );
                ctx.insert("token_url".into(), json!(url));
            }
            Self::TokenUnavailable { tenant, .. } => {
                ctx.insert("tenant".into(), json!(tenant));
            }
            Self::PolicyRefused { tenant, rule, .. } => {
                ctx.insert("tenant".into(), json!(tenant));
                ctx.insert("rule".into(), json!(rule));
            }
            Self::LoginRequired {
                tenant, command, ..
            } => {
                ctx.insert("tenant".into(), json!(tenant));
                ctx.insert("command".into(), json!(command));
            }
            Self::UnknownKey { tenant, .. } => {
                ctx.insert("tenant".into(), json!(tenant));
            }
            Self::UpstreamBusy { tenant, limit, .. } => {
                ctx.insert("tenant".into(), json!(tenant));
                ctx.insert("max_concurrent_requests".into(), json!(limit));
            }
            _ => {}
        }
        ctx
    }

    /// Seconds a client should wait before retrying, when the proxy knows.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TokenRejected(rejection) => Some(rejection.retry_after_secs.max(1)),
            Self::TokenUnavailable {
                retry_after_secs, ..
            } => Some((*retry_after_secs).max(1)),
            Self::Overloaded(_) | Self::UpstreamBusy { .. } => Some(1),
            _ => None,
        }
    }

    /// The JSON body: `{"error": code, "message": …, …context}`.
    pub fn json_body(&self) -> Value {
        let mut body = Map::new();
        if let Self::LocalTokenInvalid = self {
            // SFMC's own 401, so SDK tools re-authenticate as they would with
            // SFMC; the proxy's code and explanation ride along.
            body.insert("message".into(), json!("Not Authorized"));
            body.insert("errorcode".into(), json!(0));
            body.insert("error".into(), json!(self.code()));
            body.insert("detail".into(), json!(self.to_string()));
            return Value::Object(body);
        }
        body.insert("error".into(), json!(self.code()));
        body.insert("message".into(), json!(self.to_string()));
        body.extend(self.context());
        Value::Object(body)
    }

    /// The JSON response, in any body type made from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = Bytes::from(self.json_body().to_string());
        let mut response = Response::new(B::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(self.code()));
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::WrongMethod { allow, .. } = self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Self::LocalTokenInvalid = self {
            // RFC 6750's signal for "get a new token": fuel-rest, for one,
            // re-authenticates only when it sees it.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"sfmc-proxy\", error=\"invalid_token\", error_description=\"unknown or expired local token\"",
                ),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests;
