//! Logins whose code comes back to the proxy's own listener, at
//! `/_proxy/callback` behind a TLS front (`config::proxy_callback_host`):
//! [`begin_at_callback`] keeps what the login needs in the [`LoginStates`]
//! under a fresh `state` and gives the authorize URL and the browser's
//! login cookie; [`finish_at_callback`] takes it back when the browser
//! returns — to this replica or, with `[redis]`, to any — and exchanges the
//! code. The browser coming back from SFMC carries no inbound key: the
//! one-time `state` and the cookie of the browser that began the login are
//! what prove it.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    LOGIN_WAIT, LoginError, LoginStates, Redirect, Started, exchanger, package_of, pkce_hint,
    start_with,
};
use crate::config::{CALLBACK_PATH, Grant, Secret, Settings, Tenant, proxy_callback_host};
use crate::error::ProxyError;
use crate::route::LOGIN_PATH;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{TokenCache, TokenKey};

/// The cookie that ties a login to the browser that began it. `__Host-`:
/// the browser keeps it only from https, for this host and path `/`.
pub const LOGIN_COOKIE: &str = "__Host-sfmc-proxy-login";

/// Whether `tenant`'s code comes back to `/_proxy/callback` (else to a
/// listener of the login's own, see `PendingLogins`).
pub fn at_callback(tenant: &Tenant) -> bool {
    match &tenant.grant {
        Grant::AuthorizationCode { redirect_uri, .. } => {
            proxy_callback_host(redirect_uri).is_some()
        }
        Grant::ClientCredentials => false,
    }
}

/// A login begun: where to send the browser, and the cookie to set on it.
pub struct Begun {
    pub authorize_url: String,
    pub set_cookie: HeaderValue,
}

/// Keeps `tenant`'s login for `account_id` until its code comes back to
/// the browser whose request `headers` are (its login cookie is kept, or
/// one made). Any number of logins may wait at once.
pub async fn begin_at_callback(
    tenant: &Tenant,
    account_id: Option<&str>,
    headers: &HeaderMap,
    states: &dyn LoginStates,
) -> Result<Begun, ProxyError> {
    let unavailable = |reason: String| ProxyError::TokenUnavailable {
        tenant: tenant.name.to_string(),
        reason: format!("the login cannot begin: {reason}; try again"),
        retry_after_secs: 5,
    };
    let random = |e| unavailable(LoginError::Random(e).to_string());
    let cookie = match login_cookie(headers) {
        Some(cookie) => cookie.to_owned(),
        None => crate::tls::random_hex(32).map_err(random)?,
    };
    let state = states.mint().map_err(random)?;
    let start = start_with(tenant, state).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let started = Started {
        tenant: tenant.name.to_string(),
        account_id: account_id.map(str::to_owned),
        package: package_of(tenant),
        browser: browser_of(&cookie),
        code_verifier: start.code_verifier.as_ref().map(|v| v.expose().to_owned()),
    };
    states
        .put(&start.state, started)
        .await
        .map_err(unavailable)?;
    let set_cookie = format!(
        "{LOGIN_COOKIE}={cookie}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        LOGIN_WAIT.as_secs()
    );
    Ok(Begun {
        authorize_url: start.authorize_url,
        set_cookie: HeaderValue::try_from(set_cookie)
            .map_err(|_| ProxyError::Internal("the login cookie is not a header".into()))?,
    })
}

/// The browser's login cookie, when it sent a well-formed one.
fn login_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == LOGIN_COOKIE)
        .map(|(_, value)| value)
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What is kept of a login cookie: its hash (the cookie itself is the
/// browser's secret).
fn browser_of(cookie: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(cookie.as_bytes()))
}

/// How a browser's return to `/_proxy/callback` ended: the page's status
/// and what it says.
#[derive(Debug)]
pub struct Finished {
    pub status: StatusCode,
    pub text: String,
}

impl Finished {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            text: text.into(),
        }
    }
}

/// What the callback may use of the proxy.
pub struct Callback<'a> {
    pub settings: &'a Arc<Settings>,
    pub states: &'a Arc<dyn LoginStates>,
    pub client: &'a Arc<SfmcTokenClient>,
    pub tokens: &'a TokenCache,
}

/// Finishes the login `query` (the redirect's: `code` or `error`, and
/// `state`) belongs to, for the browser whose request `headers` are: the
/// code exchanged, the refresh token stored, the first access token cached.
/// A `state` works once; an unknown one ends nothing, so a login
/// `sfmc-proxy login` began can still be pasted there. The work runs in a
/// task of its own: a browser that goes away mid-exchange does not cut it
/// between SFMC's answer and the refresh token's storing.
pub async fn finish_at_callback(
    query: &str,
    headers: &HeaderMap,
    callback: &Callback<'_>,
) -> Finished {
    let redirect = Redirect::parse(query);
    let browser = login_cookie(headers).map(browser_of);
    let (settings, states) = (callback.settings.clone(), callback.states.clone());
    let (client, tokens) = (callback.client.clone(), callback.tokens.clone());
    let work = tokio::spawn(async move {
        let started = match take(&redirect, &*states).await {
            Ok(started) => started,
            Err(finished) => return finished,
        };
        let again = format!(
            "Start again at {LOGIN_PATH}?tenant={}.",
            form_urlencoded::byte_serialize(started.tenant.as_bytes()).collect::<String>()
        );
        let same_browser = browser.is_some_and(|browser| {
            bool::from(browser.as_bytes().ct_eq(started.browser.as_bytes()))
        });
        if !same_browser {
            return Finished::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Login failed: this login was begun in another browser (or this one's cookies were cleared). A login finishes only in the browser that opened {LOGIN_PATH}. {again}"
                ),
            );
        }
        let code = match redirect.outcome() {
            Ok(code) => code,
            Err(LoginError::Denied(reason)) => {
                let hint = pkce_hint(&reason).unwrap_or_default();
                tracing::warn!(tenant = %started.tenant, reason = %reason.chars().take(200).collect::<String>(), "SFMC refused the browser login");
                return Finished::new(
                    StatusCode::BAD_REQUEST,
                    format!("Login failed: SFMC refused the login: {reason}{hint}. {again}"),
                );
            }
            Err(error) => {
                return Finished::new(
                    StatusCode::BAD_REQUEST,
                    format!("Login failed: {error}. {again}"),
                );
            }
        };
        exchange(started, code, &settings, client, tokens, &again).await
    });
    work.await.unwrap_or_else(|_| {
        Finished::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed: the proxy failed while finishing it; see its log.",
        )
    })
}

/// The login `redirect`'s state began, taken from `states` — or the page
/// that says why there is none.
async fn take(redirect: &Redirect, states: &dyn LoginStates) -> Result<Started, Finished> {
    let Some(state) = redirect.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(Finished::new(
            StatusCode::BAD_REQUEST,
            format!(
                "This is not a login's redirect (it has no state). Start a login at {LOGIN_PATH}?tenant=NAME."
            ),
        ));
    };
    match states.take(state).await {
        Ok(Some(started)) => Ok(started),
        Ok(None) => Err(Finished::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Login failed: no login is waiting for this redirect. It was finished already, began more than {} minutes ago, began on another replica of a proxy without [redis], or was begun by `sfmc-proxy login` (then paste this page's address into it). Start again at {LOGIN_PATH}?tenant=NAME.",
                LOGIN_WAIT.as_secs() / 60
            ),
        )),
        Err(error) => Err(Finished::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Login failed: the waiting login cannot be looked up in Redis: {error}. Reload this page to try again; if it then says no login is waiting, start again at {LOGIN_PATH}?tenant=NAME."
            ),
        )),
    }
}

/// The code exchange for `started`, if its tenant is still the package
/// the login began with.
async fn exchange(
    started: Started,
    code: String,
    settings: &Settings,
    client: Arc<SfmcTokenClient>,
    tokens: TokenCache,
    again: &str,
) -> Finished {
    let tenant = match settings.tenant(&started.tenant) {
        Some(tenant) if package_of(tenant) == started.package => tenant,
        _ => {
            return Finished::new(
                StatusCode::CONFLICT,
                format!(
                    "Login failed: tenant `{}` was changed or removed in the configuration since this login began. {again}",
                    started.tenant
                ),
            );
        }
    };
    let key = match TokenKey::for_tenant(tenant, started.account_id.as_deref(), None) {
        Ok(key) => key,
        Err(error) => {
            return Finished::new(StatusCode::FORBIDDEN, format!("Login failed: {error}"));
        }
    };
    let exchange = exchanger(
        client,
        tenant.name.clone(),
        key.account_id.clone(),
        started.code_verifier.map(Secret::new),
        move |token, sent_at| {
            if let Err(error) = tokens.put(&key, token, sent_at) {
                tracing::warn!(%error, "the login's first token could not be cached");
            }
        },
    );
    match exchange(code).await {
        Ok(()) => {
            tracing::info!(tenant = %tenant.name, "logged in at {CALLBACK_PATH}; refresh token stored");
            Finished::new(
                StatusCode::OK,
                "Logged in. sfmc-proxy has stored the login; you can close this tab.",
            )
        }
        Err(error) => {
            tracing::warn!(tenant = %tenant.name, %error, "browser login failed");
            Finished::new(
                StatusCode::BAD_GATEWAY,
                format!("Login failed: {error}. {again}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_login_cookie_is_read() {
        let cookie = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("other=1"));
        assert_eq!(login_cookie(&headers), None);
        let sent = format!("theme=dark; {LOGIN_COOKIE}={cookie}");
        headers.append(header::COOKIE, HeaderValue::try_from(sent).expect("value"));
        assert_eq!(login_cookie(&headers), Some(cookie.as_str()));
        let mut short = HeaderMap::new();
        let sent = format!("{LOGIN_COOKIE}=abc");
        short.insert(header::COOKIE, HeaderValue::try_from(sent).expect("value"));
        assert_eq!(login_cookie(&short), None);
        assert_ne!(browser_of(&cookie), cookie, "only its hash is kept");
    }
}
