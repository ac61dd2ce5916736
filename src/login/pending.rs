//! Logins started from a browser (`/_proxy/login`), each waiting in the
//! background for its redirect on the tenant's `redirect_uri`. One login per
//! redirect URI at a time (its listener holds the port): a reload or second
//! click joins the waiting login; another tenant's is refused until it ends.
//! A config reload that removes a tenant or changes its credentials cancels
//! its waiting login ([`PendingLogins::cancel`]): the code would be exchanged
//! with the old credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Tenant;
use crate::error::ProxyError;
use crate::sync::lock;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{TokenCache, TokenKey};

use super::{LOGIN_WAIT, bind_callback, exchanger, start};

/// Logins waiting for their browser redirect, by redirect URI.
#[derive(Clone, Default)]
pub struct PendingLogins(Arc<Mutex<HashMap<String, Waiting>>>);

/// A login waiting on its redirect URI: for which tenant, and where its
/// browser was sent (a second click is sent there again).
#[derive(Clone)]
struct Waiting {
    tenant: Arc<str>,
    authorize_url: String,
    /// The task that waits for the redirect (and holds its listener).
    task: Option<tokio::task::AbortHandle>,
}

impl PendingLogins {
    /// Starts (or joins) `tenant`'s login for `key` and returns the authorize
    /// URL to send the browser to. The code is exchanged by a listener on the
    /// redirect URI, the refresh token stored, and the first access token
    /// put in `tokens`.
    pub async fn begin(
        &self,
        tenant: &Tenant,
        key: TokenKey,
        client: Arc<SfmcTokenClient>,
        tokens: TokenCache,
    ) -> Result<String, ProxyError> {
        let start = start(tenant).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        let waiting = lock(&self.0).get(&start.redirect_uri).cloned();
        match waiting {
            Some(login) if login.tenant == tenant.name => return Ok(login.authorize_url),
            Some(login) => {
                return Err(ProxyError::BadRequest(format!(
                    "a login for tenant `{}` is waiting on {}; finish it first (it is given up after {} minutes)",
                    login.tenant,
                    start.redirect_uri,
                    LOGIN_WAIT.as_secs() / 60
                )));
            }
            None => {}
        }
        let listener = bind_callback(&start.redirect_uri).await.map_err(|e| {
            ProxyError::BadRequest(format!(
                "{e} (is another login waiting?); or run `sfmc-proxy login --tenant {}`",
                tenant.name
            ))
        })?;
        let exchange = exchanger(
            client,
            tenant.name.clone(),
            key.account_id.clone(),
            start.code_verifier.clone(),
            move |token, sent_at| {
                if let Err(error) = tokens.put(&key, token, sent_at) {
                    tracing::warn!(%error, "the login's first token could not be cached");
                }
            },
        );
        let tenant_name = tenant.name.clone();
        let redirect_uri = start.redirect_uri.clone();
        lock(&self.0).insert(
            redirect_uri.clone(),
            Waiting {
                tenant: tenant_name.clone(),
                authorize_url: start.authorize_url.clone(),
                task: None,
            },
        );
        let authorize_url = start.authorize_url.clone();
        let pending = self.clone();
        let key_uri = redirect_uri.clone();
        let task = tokio::spawn(async move {
            match tokio::time::timeout(LOGIN_WAIT, listener.complete(&start.state, exchange)).await
            {
                Ok(Ok(())) => {
                    tracing::info!(tenant = %tenant_name, "logged in; refresh token stored")
                }
                Ok(Err(error)) => {
                    tracing::warn!(tenant = %tenant_name, %error, "browser login failed")
                }
                Err(_) => {
                    tracing::warn!(tenant = %tenant_name, "browser login not completed in time")
                }
            }
            lock(&pending.0).remove(&redirect_uri);
        });
        // The task may have ended already (it is then no longer listed).
        if let Some(waiting) = lock(&self.0).get_mut(&key_uri) {
            waiting.task = Some(task.abort_handle());
        }
        Ok(authorize_url)
    }

    /// Cancels the waiting logins of the tenants `cancel` picks (their
    /// listeners close); returns how many there were.
    pub fn cancel(&self, cancel: impl Fn(&str) -> bool) -> usize {
        let mut waiting = lock(&self.0);
        let before = waiting.len();
        waiting.retain(|_, login| {
            let keep = !cancel(&login.tenant);
            if !keep && let Some(task) = &login.task {
                task.abort();
            }
            keep
        });
        before - waiting.len()
    }
}
