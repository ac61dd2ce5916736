//! The fake's auth host: `POST /v2/token` with SFMC's answers and errors, and
//! the book of tokens it issued, which the REST and SOAP instances check.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    AuthFailure, DEFAULT_MID, DEFAULT_SCOPE, Reply, State, hex, json_response, lock, login, lossy,
    text_response, token_error,
};

/// A token the fake issued, as the instances see it.
#[derive(Clone)]
pub(super) struct Issued {
    pub(super) number: usize,
    pub(super) account_id: String,
    pub(super) scope: String,
    issued_at: Instant,
    revoked: bool,
    /// Set by `expire_all_tokens`: expired before its time, as SFMC's may be.
    expired: bool,
}

/// Why an instance refuses a token (SOAP tells expiry apart; REST does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InvalidToken {
    /// Never issued here, or revoked.
    Unknown,
    Expired,
}

impl State {
    pub(super) fn issue(&self, account_id: String, scope: String) -> String {
        let random: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
            .take(64)
            .collect();
        let mut tokens = lock(&self.tokens);
        let number = tokens.len() + 1;
        let token = format!("fake-{number}-{}", hex(&random));
        let issued = Issued {
            number,
            account_id,
            scope,
            issued_at: Instant::now(),
            revoked: false,
            expired: false,
        };
        tokens.insert(token.clone(), issued);
        token
    }

    /// The issued token `token`, if it is unrevoked and unexpired.
    pub(super) fn check(&self, token: &str) -> Result<Issued, InvalidToken> {
        let tokens = lock(&self.tokens);
        let issued = tokens.get(token).ok_or(InvalidToken::Unknown)?;
        let lifetime = Duration::from_secs(self.expires_in);
        if issued.revoked {
            Err(InvalidToken::Unknown)
        } else if issued.expired || issued.issued_at.elapsed() >= lifetime {
            Err(InvalidToken::Expired)
        } else {
            Ok(issued.clone())
        }
    }

    /// The valid token a REST request carries as `Authorization: Bearer`.
    pub(super) fn authorize(&self, headers: &HeaderMap) -> Option<Issued> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        let bearer = scheme.eq_ignore_ascii_case("bearer");
        bearer.then(|| self.check(token.trim()).ok()).flatten()
    }

    /// From now on every token issued so far is refused for this reason.
    pub(super) fn refuse_all(&self, refusal: InvalidToken) {
        for issued in lock(&self.tokens).values_mut() {
            match refusal {
                InvalidToken::Unknown => issued.revoked = true,
                InvalidToken::Expired => issued.expired = true,
            }
        }
    }
}

pub(super) async fn token_endpoint(req: Request<Incoming>, state: &State) -> Reply {
    if req.method() != Method::POST {
        let mut reply = token_error(405, "invalid_request", "Use POST.");
        let allow = HeaderValue::from_static("POST");
        reply.headers_mut().insert(header::ALLOW, allow);
        return reply;
    }
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let content_type = req.headers().get(header::CONTENT_TYPE).map(lossy);
    let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
        return token_error(400, "invalid_request", "The body could not be read.");
    };
    let body = parse_token_body(&body.to_bytes(), content_type.as_deref());
    *lock(&state.last_token) = Some((body.clone(), content_type));
    let failure = lock(&state.failure).clone();
    match failure {
        None => issue_token(&body, state),
        Some(AuthFailure::Reject {
            status,
            error,
            description,
        }) => token_error(status, &error, &description),
        Some(AuthFailure::ServerError) => {
            let page = "<html><body><h1>500 Internal Server Error</h1></body></html>";
            text_response(StatusCode::INTERNAL_SERVER_ERROR, "text/html", page)
        }
        Some(AuthFailure::Hang) => {
            state.stopped().await;
            text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopped")
        }
    }
}

/// A form becomes an object of strings (`+` a space, malformed escapes kept as
/// they are); anything else is read as JSON (or kept as a string when it is
/// not JSON).
pub(super) fn parse_token_body(body: &[u8], content_type: Option<&str>) -> Value {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("");
    if media
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        let pairs = form_urlencoded::parse(body)
            .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())));
        return Value::Object(pairs.collect());
    }
    let text = || Value::String(String::from_utf8_lossy(body).into_owned());
    serde_json::from_slice(body).unwrap_or_else(|_| text())
}

fn issue_token(body: &Value, state: &State) -> Reply {
    let field = |name: &str| match body.get(name) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    if !body.is_object() {
        return token_error(400, "invalid_request", "Malformed request body.");
    }
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some("authorization_code" | "refresh_token") => return login::grant(body, state),
        _ => return token_error(400, "unsupported_grant_type", "Use client_credentials."),
    }
    let id_ok = field("client_id").as_deref() == Some(state.client_id.as_str());
    if !id_ok || field("client_secret").as_deref() != Some(state.client_secret.as_str()) {
        let text = "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.";
        return token_error(401, "invalid_client", text);
    }
    let account_id = field("account_id");
    let digits = |mid: &String| !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit());
    if !account_id.as_ref().is_none_or(digits) {
        let text = "The client is not enabled for this account (MID).";
        return token_error(401, "unauthorized_client", text);
    }
    let scope = field("scope").filter(|scope| !scope.trim().is_empty());
    let scope = scope.unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
    let account_id = account_id.unwrap_or_else(|| DEFAULT_MID.to_owned());
    let token = state.issue(account_id, scope.clone());
    let url = &state.instance_url;
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token, "token_type": "Bearer", "expires_in": state.expires_in,
            "scope": scope, "rest_instance_url": url, "soap_instance_url": url,
        }),
    )
}

pub(super) fn last_issued(state: &State) -> Option<String> {
    let tokens = lock(&state.tokens);
    tokens
        .iter()
        .max_by_key(|(_, issued)| issued.number)
        .map(|(token, _)| token.clone())
}
