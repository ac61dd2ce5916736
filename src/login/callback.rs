//! Logins whose code comes back to the proxy's own listener, at
//! `/_proxy/callback` behind a TLS front (`config::proxy_callback_host`):
//! [`begin_at_callback`] keeps what the login needs in the [`LoginStates`]
//! under a fresh `state` and gives the authorize URL; [`finish_at_callback`]
//! takes it back when the browser returns — to this replica or, with
//! `[redis]`, to any — and exchanges the code. The browser coming back from
//! SFMC carries no inbound key: the one-time `state` is what proves it.

use std::sync::Arc;

use http::StatusCode;

use super::{LOGIN_WAIT, LoginError, LoginStates, Started, exchanger, pkce_hint, start_with};
use crate::config::{CALLBACK_PATH, Secret, Settings, Tenant};
use crate::error::ProxyError;
use crate::route::LOGIN_PATH;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{TokenCache, TokenKey};

/// Keeps `tenant`'s login for `account_id` until its code comes back, and
/// returns where to send the browser. Any number may wait at once.
pub async fn begin_at_callback(
    tenant: &Tenant,
    account_id: Option<&str>,
    states: &dyn LoginStates,
) -> Result<String, ProxyError> {
    let unavailable = |e: String| ProxyError::Internal(format!("cannot begin the login: {e}"));
    let state = states
        .mint()
        .map_err(|e| unavailable(LoginError::Random(e).to_string()))?;
    let start = start_with(tenant, state).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let started = Started {
        tenant: tenant.name.to_string(),
        account_id: account_id.map(str::to_owned),
        client_id: tenant.client_id.clone(),
        code_verifier: start.code_verifier.as_ref().map(|v| v.expose().to_owned()),
    };
    states
        .put(&start.state, started)
        .await
        .map_err(|e| unavailable(format!("{e}; try again")))?;
    Ok(start.authorize_url)
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
    pub settings: &'a Settings,
    pub states: &'a dyn LoginStates,
    pub client: &'a Arc<SfmcTokenClient>,
    pub tokens: &'a TokenCache,
}

/// Finishes the login `query` (the redirect's: `code` or `error`, and
/// `state`) belongs to: the code exchanged, the refresh token stored, the
/// first access token cached. A `state` works once; an unknown one ends
/// nothing, so a login `sfmc-proxy login` began can still be pasted there.
pub async fn finish_at_callback(query: &str, callback: &Callback<'_>) -> Finished {
    let mut fields = Fields::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*name {
            "state" => &mut fields.state,
            "code" => &mut fields.code,
            "error" => &mut fields.error,
            "error_description" => &mut fields.description,
            _ => continue,
        };
        *slot = Some(value.into_owned());
    }
    let Some(state) = fields.state.filter(|s| !s.is_empty()) else {
        return Finished::new(
            StatusCode::BAD_REQUEST,
            format!(
                "This is not a login's redirect (it has no state). Start a login at {LOGIN_PATH}?tenant=NAME."
            ),
        );
    };
    let started = match callback.states.take(&state).await {
        Ok(Some(started)) => started,
        Ok(None) => return unknown_login(),
        Err(error) => {
            return Finished::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Cannot look this login up: {error}. Reload this page to try again (the code is still unused)."
                ),
            );
        }
    };
    let again = format!(
        "{LOGIN_PATH}?tenant={}",
        form_urlencoded::byte_serialize(started.tenant.as_bytes()).collect::<String>()
    );
    if let Some(error) = fields.error {
        let reason = fields.description.unwrap_or(error);
        let hint = pkce_hint(&reason).unwrap_or_default();
        tracing::warn!(tenant = %started.tenant, reason = %crate::telemetry::clip(&reason, 200), "SFMC refused the browser login");
        return Finished::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Login failed: SFMC refused the login: {reason}{hint}. Start again at {again}."
            ),
        );
    }
    let Some(code) = fields.code.filter(|c| !c.is_empty()) else {
        return Finished::new(
            StatusCode::BAD_REQUEST,
            format!("Login failed: the redirect has no code. Start again at {again}."),
        );
    };
    let tenant = match callback.settings.tenant(&started.tenant) {
        Some(tenant) if tenant.client_id == started.client_id => tenant,
        _ => {
            return Finished::new(
                StatusCode::CONFLICT,
                format!(
                    "Login failed: tenant `{}` was changed or removed in the configuration since this login began. Start again at {again}.",
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
    let tokens = callback.tokens.clone();
    let exchange = exchanger(
        callback.client.clone(),
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
                format!("Login failed: {error}. Start again at {again}."),
            )
        }
    }
}

fn unknown_login() -> Finished {
    Finished::new(
        StatusCode::BAD_REQUEST,
        format!(
            "Login failed: no login is waiting for this redirect — it was finished already, began more than {} minutes ago, or was begun by `sfmc-proxy login` (then paste this page's address into it). Start again at {LOGIN_PATH}?tenant=NAME.",
            LOGIN_WAIT.as_secs() / 60
        ),
    )
}

#[derive(Default)]
struct Fields {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    description: Option<String>,
}
