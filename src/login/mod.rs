//! A person's login for Web and Public App tenants (authorization code).
//!
//! `start` builds the `/v2/authorize` URL with a fresh random `state`; the
//! browser comes back to the package's `redirect_uri` with a code. SFMC accepts
//! only https redirect URIs (`https://127.0.0.1:PORT/` locally), so the code is
//! received either by [`bind_callback`] — a short-lived TLS listener on that
//! address with a certificate made on the spot (the browser warns once) — or
//! by pasting the final URL from the address bar ([`code_from_callback`]) —
//! or, for a `redirect_uri` behind a TLS front, by the proxy's own listener
//! at `/_proxy/callback` (`callback`, with the waiting logins in `states`:
//! in process, or in Redis for a fleet).
//! The `state` is checked either way (CSRF); [`exchanger`] does the code
//! exchange through the token client (`SfmcTokenClient::exchange_code`).
//! `sfmc-proxy login` (the CLI) and `/_proxy/login` (a browser, through
//! [`PendingLogins`]) both start here and wait [`LOGIN_WAIT`] at most.
//!
//! With `pkce` (the default) the login also sends PKCE (RFC 7636): an S256
//! `code_challenge` on `/v2/authorize`, and its `code_verifier` (32 random
//! bytes, base64url) on the exchange, so a code intercepted on its way back
//! is useless to anyone else. SFMC's docs do not list these parameters: a
//! refusal that names them tells the user to set `pkce = false`.

mod callback;
mod exchange;
mod listener;
mod pending;
mod states;

use std::time::Duration;

use subtle::ConstantTimeEq;

pub use callback::{Callback, Finished, at_callback, begin_at_callback, finish_at_callback};
pub use exchange::{Exchange, exchanger};
pub use listener::{CallbackListener, bind_callback};
pub use pending::PendingLogins;
pub use states::{LocalStates, LoginStates, Started, StatesFuture, package_of};

use crate::config::{Grant, Secret, Tenant};
use crate::error::ProxyError;

/// How long a login waits for its code, in the CLI and the browser alike;
/// SFMC's codes live 5 minutes, a login left longer is abandoned.
pub const LOGIN_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "tenant `{0}` uses client credentials; only grant = \"authorization_code\" tenants log in"
    )]
    NotALoginTenant(String),
    #[error(
        "the answer's state does not match this login (a stale or forged redirect); start the login again"
    )]
    StateMismatch,
    #[error("SFMC refused the login: {0}{hint}", hint = pkce_hint(.0).unwrap_or_default())]
    Denied(String),
    #[error("the URL has no code: paste the whole address the browser ended on")]
    NoCode,
    #[error("cannot receive the redirect on {uri}: {reason}")]
    Listener { uri: String, reason: String },
    #[error("cannot make random state: {0}")]
    Random(#[from] rustls::Error),
    #[error("the code exchange failed: {0}")]
    Exchange(ProxyError),
}

/// A login in progress: where to send the browser, and what must come back.
pub struct LoginStart {
    pub authorize_url: String,
    pub state: String,
    pub redirect_uri: String,
    /// The PKCE verifier the code exchange must send (`None`: `pkce = false`).
    pub code_verifier: Option<Secret>,
}

pub fn start(tenant: &Tenant) -> Result<LoginStart, LoginError> {
    start_with(tenant, crate::tls::random_hex(16)?)
}

/// [`start`] with a `state` made elsewhere (see `LoginStates::mint`).
pub fn start_with(tenant: &Tenant, state: String) -> Result<LoginStart, LoginError> {
    let Grant::AuthorizationCode {
        redirect_uri, pkce, ..
    } = &tenant.grant
    else {
        return Err(LoginError::NotALoginTenant(tenant.name.to_string()));
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &tenant.client_id)
        .append_pair("redirect_uri", redirect_uri);
    if let Some(scope) = &tenant.scope {
        query.append_pair("scope", scope);
    }
    query.append_pair("state", &state);
    let code_verifier = if *pkce {
        let verifier = crate::tls::base64url(&crate::tls::random_bytes(32)?);
        query
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Some(Secret::new(verifier))
    } else {
        None
    };
    Ok(LoginStart {
        authorize_url: format!("{}?{}", tenant.authorize_url, query.finish()),
        state,
        redirect_uri: redirect_uri.clone(),
        code_verifier,
    })
}

/// The page a browser sees when its login ends, saying how (`text`).
pub fn outcome_page(text: &str) -> String {
    format!(
        "<!doctype html><title>sfmc-proxy login</title><p id=\"result\">{}</p>",
        quick_xml::escape::escape(text)
    )
}

/// The S256 challenge of a PKCE verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::tls::base64url(&Sha256::digest(verifier.as_bytes()))
}

/// What to tell a user whose SFMC refused the PKCE parameters, when
/// `refusal` (SFMC's error and description) names them.
pub fn pkce_hint(refusal: &str) -> Option<String> {
    crate::token::names_pkce(refusal).then(|| {
        " — this package seems not to accept PKCE: set `pkce = false` in the tenant's [tenants.NAME] section of proxy.toml and log in again".to_owned()
    })
}

/// What SFMC's redirect back carries: the login's `state`, and its `code`
/// or its refusal (`error`, `error_description`).
#[derive(Default)]
pub struct Redirect {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub description: Option<String>,
}

impl Redirect {
    /// The fields of `query` (a field given twice: the last).
    pub fn parse(query: &str) -> Self {
        let mut redirect = Self::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*name {
                "code" => &mut redirect.code,
                "state" => &mut redirect.state,
                "error" => &mut redirect.error,
                "error_description" => &mut redirect.description,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        redirect
    }

    /// The code, or SFMC's refusal: what ends a login whose state matched.
    pub fn outcome(self) -> Result<String, LoginError> {
        if let Some(error) = self.error {
            return Err(LoginError::Denied(self.description.unwrap_or(error)));
        }
        self.code
            .filter(|c| !c.is_empty())
            .ok_or(LoginError::NoCode)
    }
}

/// The code in a redirect: the whole URL the browser ended on, or its query.
pub fn code_from_callback(input: &str, expected_state: &str) -> Result<String, LoginError> {
    let input = input.trim();
    let query = match input.split_once('?') {
        Some((_, query)) => query,
        None => input,
    };
    let redirect = Redirect::parse(query.split('#').next().unwrap_or_default());
    let state_ok = redirect
        .state
        .as_ref()
        .is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected_state.as_bytes())));
    if !state_ok {
        return Err(LoginError::StateMismatch);
    }
    redirect.outcome()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_comes_from_a_pasted_url_only_with_the_right_state() {
        let url = "https://127.0.0.1:8443/?code=abc%2Fdef&state=s1";
        assert_eq!(code_from_callback(url, "s1").expect("code"), "abc/def");
        assert_eq!(
            code_from_callback("code=abc&state=s1", "s1").expect("query"),
            "abc"
        );
        assert!(matches!(
            code_from_callback(url, "s2"),
            Err(LoginError::StateMismatch)
        ));
        assert!(matches!(
            code_from_callback("https://x/?code=abc", "s1"),
            Err(LoginError::StateMismatch)
        ));
        assert!(matches!(
            code_from_callback("https://x/?error=access_denied&error_description=User%20said%20no&state=s1", "s1"),
            Err(LoginError::Denied(reason)) if reason == "User said no"
        ));
        assert!(matches!(
            code_from_callback("https://x/?state=s1", "s1"),
            Err(LoginError::NoCode)
        ));
    }

    #[test]
    fn a_refused_pkce_challenge_says_to_set_pkce_false() {
        let url = "https://x/?error=invalid_request&error_description=Unknown%20parameter%20code_challenge&state=s1";
        let denied = code_from_callback(url, "s1").expect_err("denied");
        assert!(denied.to_string().contains("pkce = false"), "{denied}");
        let other = code_from_callback("https://x/?error=access_denied&state=s1", "s1")
            .expect_err("denied");
        assert!(!other.to_string().contains("pkce"), "{other}");
    }
}
