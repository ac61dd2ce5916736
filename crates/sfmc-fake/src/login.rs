//! The fake's side of a person's login (Web and Public App packages):
//! `GET /v2/authorize` shows a page with an "Allow" button, which posts back
//! and redirects to the `redirect_uri` with a one-time code and the `state`;
//! `/v2/token` exchanges codes (5 minutes, once) and rotates refresh tokens
//! (each one works once; SFMC's do too). A code issued for a PKCE challenge
//! (S256 only) is exchanged only with its verifier.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{
    DEFAULT_MID, DEFAULT_SCOPE, Reply, State, escape, hex, json_response, lock, query_pairs,
    text_response, token_error,
};

const CODE_LIFETIME: Duration = Duration::from_secs(300);

pub(super) struct Code {
    redirect_uri: String,
    scope: String,
    issued_at: Instant,
    /// The PKCE S256 challenge sent to `/v2/authorize`, if any.
    code_challenge: Option<String>,
}

pub(super) struct RefreshGrant {
    scope: String,
    used: bool,
}

/// `GET /v2/authorize`: the consent page; `POST`: "Allow" was clicked.
pub(super) async fn authorize(req: Request<Incoming>, state: &State) -> Reply {
    if req.method() == Method::POST {
        let Ok(body) = Limited::new(req.into_body(), 16 * 1024).collect().await else {
            return page(StatusCode::BAD_REQUEST, "The form could not be read.");
        };
        let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
            .into_owned()
            .collect();
        return allow(&form, state);
    }
    let query: HashMap<String, String> = query_pairs(req.uri().query()).into_iter().collect();
    if let Err(problem) = check_authorize(&query, state) {
        return page(StatusCode::BAD_REQUEST, problem);
    }
    let fields = [
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ];
    let hidden: String = fields
        .iter()
        .map(|name| {
            let value = query.get(*name).map_or("", String::as_str);
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            )
        })
        .collect();
    let html = format!(
        "<!doctype html><title>Fake SFMC login</title><h1>Fake SFMC</h1><p>Allow this app to act for you?</p><form method=\"post\" action=\"/v2/authorize\">{hidden}<button id=\"allow\" type=\"submit\">Allow</button></form>"
    );
    text_response(StatusCode::OK, "text/html; charset=utf-8", html)
}

fn check_authorize(query: &HashMap<String, String>, state: &State) -> Result<(), &'static str> {
    if query.get("response_type").map(String::as_str) != Some("code") {
        return Err("response_type must be code.");
    }
    if query.get("client_id") != Some(&state.client_id) {
        return Err("Unknown client_id.");
    }
    let method = query.get("code_challenge_method").map(String::as_str);
    match (query.get("code_challenge"), method) {
        (None, None) | (Some(_), Some("S256")) => {}
        (Some(_), _) => return Err("code_challenge_method must be S256."),
        (None, Some(_)) => return Err("code_challenge_method without code_challenge."),
    }
    match query.get("redirect_uri") {
        Some(uri) if uri.starts_with("https://") => Ok(()),
        _ => Err("redirect_uri must be https."),
    }
}

fn allow(form: &HashMap<String, String>, state: &State) -> Reply {
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    if form.get("client_id") != Some(&state.client_id) {
        return page(StatusCode::BAD_REQUEST, "Unknown client_id.");
    }
    let redirect_uri = field("redirect_uri");
    let code = format!("code-{}", hex(&fastrand_bytes(16)));
    let scope = Some(field("scope")).filter(|s| !s.is_empty());
    let pkce = !state.pkce_unsupported.load(Ordering::SeqCst);
    let code_challenge = form.get("code_challenge").filter(|_| pkce).cloned();
    lock(&state.codes).insert(
        code.clone(),
        Code {
            redirect_uri: redirect_uri.clone(),
            scope: scope.unwrap_or_else(|| DEFAULT_SCOPE.to_owned()),
            issued_at: Instant::now(),
            code_challenge,
        },
    );
    let mut location = form_urlencoded::Serializer::new(String::new());
    location
        .append_pair("code", &code)
        .append_pair("state", &field("state"));
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let target = format!("{redirect_uri}{separator}{}", location.finish());
    let mut reply = text_response(StatusCode::FOUND, "text/plain", "Redirecting");
    if let Ok(value) = HeaderValue::try_from(target) {
        reply.headers_mut().insert(header::LOCATION, value);
    }
    reply
}

/// `grant_type=authorization_code` or `refresh_token` at `/v2/token`.
pub(super) fn grant(body: &Value, state: &State) -> Reply {
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    if field("client_id").as_deref() != Some(state.client_id.as_str()) {
        return token_error(401, "invalid_client", "Invalid client ID.");
    }
    // A web app sends its secret, a public app none; a wrong one is refused.
    if field("client_secret").is_some_and(|s| s != state.client_secret) {
        return token_error(401, "invalid_client", "Invalid client secret.");
    }
    let verifier = field("code_verifier");
    if verifier.is_some() && state.pkce_unsupported.load(Ordering::SeqCst) {
        return token_error(400, "invalid_request", "Unknown parameter: code_verifier.");
    }
    let scope = match field("grant_type").as_deref() {
        Some("authorization_code") => {
            let code = field("code").unwrap_or_default();
            let Some(grant) = lock(&state.codes).remove(&code) else {
                return token_error(400, "invalid_grant", "Invalid or used authorization code.");
            };
            let fresh = grant.issued_at.elapsed() < CODE_LIFETIME;
            if !fresh || field("redirect_uri").as_deref() != Some(grant.redirect_uri.as_str()) {
                return token_error(
                    400,
                    "invalid_grant",
                    "Expired code or redirect_uri mismatch.",
                );
            }
            if !pkce_verified(grant.code_challenge.as_deref(), verifier.as_deref()) {
                return token_error(
                    400,
                    "invalid_grant",
                    "The code_verifier does not match the code_challenge.",
                );
            }
            grant.scope
        }
        _ => {
            let presented = field("refresh_token").unwrap_or_default();
            let mut grants = lock(&state.refresh_tokens);
            match grants.get_mut(&presented) {
                Some(grant) if !grant.used => {
                    grant.used = true;
                    grant.scope.clone()
                }
                _ => return token_error(400, "invalid_grant", "Invalid refresh token."),
            }
        }
    };
    let account_id = field("account_id").unwrap_or_else(|| DEFAULT_MID.to_owned());
    let access_token = state.issue(account_id, scope.clone());
    let refresh_token = format!("rt-{}", hex(&fastrand_bytes(24)));
    lock(&state.refresh_tokens).insert(
        refresh_token.clone(),
        RefreshGrant {
            scope: scope.clone(),
            used: false,
        },
    );
    let url = &state.instance_url;
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token, "refresh_token": refresh_token, "token_type": "Bearer",
            "expires_in": state.expires_in, "scope": scope,
            "rest_instance_url": url, "soap_instance_url": url,
        }),
    )
}

/// RFC 7636 §4.6: without a challenge anything goes (PKCE is optional);
/// with one, base64url(SHA-256(verifier)) must equal it.
fn pkce_verified(challenge: Option<&str>, verifier: Option<&str>) -> bool {
    let Some(challenge) = challenge else {
        return true;
    };
    let Some(verifier) = verifier else {
        return false;
    };
    let digest = Sha256::digest(verifier.as_bytes());
    base64url_nopad(&digest) == challenge
}

fn base64url_nopad(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn revoke_all(state: &State) {
    for grant in lock(&state.refresh_tokens).values_mut() {
        grant.used = true;
    }
}

fn fastrand_bytes(n: usize) -> Vec<u8> {
    std::iter::repeat_with(|| fastrand::u8(..))
        .take(n)
        .collect()
}

fn page(status: StatusCode, message: &str) -> Reply {
    let html = format!(
        "<!doctype html><title>Fake SFMC</title><p>{}</p>",
        escape(message)
    );
    text_response(status, "text/html; charset=utf-8", html)
}

#[cfg(test)]
mod tests {
    use super::pkce_verified;

    #[test]
    fn the_fake_checks_pkce_as_rfc_7636_appendix_b() {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_verified(Some(challenge), Some(verifier)));
        assert!(!pkce_verified(Some(challenge), Some("wrong")));
        assert!(!pkce_verified(Some(challenge), None));
        assert!(pkce_verified(None, None), "PKCE is optional");
    }
}
