//! The authorization-code side of the `/v2/token` client: exchanging a login's
//! code, and refreshing. SFMC refresh tokens are single-use — each refresh
//! returns a new pair — so a refresh holds the store's lock from reading the
//! refresh token to persisting its successor, and the successor is on disk
//! before the new access token is used. A refusal means the login is over
//! (revoked, expired, logged out without `offline`): `LoginRequired`.

use serde::Serialize;

use super::sfmc::{Granted, SfmcTokenClient};
use super::store::{ChainError, ChainStore, Locked, StoreError};
use super::{FetchedToken, TokenError, TokenKey};
use crate::config::{Grant, Secret, Tenant};

#[derive(Serialize)]
struct RefreshRequest<'a> {
    grant_type: &'static str,
    refresh_token: &'a str,
    client_id: &'a str,
    /// Web apps only: a public app has no secret and sends none.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

#[derive(Serialize)]
struct CodeRequest<'a> {
    grant_type: &'static str,
    code: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    /// Plain, exactly as registered and as sent to `/v2/authorize`.
    redirect_uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    /// PKCE: the verifier of the challenge the login sent to `/v2/authorize`.
    #[serde(skip_serializing_if = "Option::is_none")]
    code_verifier: Option<&'a str>,
}

impl SfmcTokenClient {
    pub(super) async fn refresh(
        &self,
        tenant: &Tenant,
        key: &TokenKey,
    ) -> Result<FetchedToken, TokenError> {
        if let Some(chains) = self.chains.clone() {
            return self.refresh_shared(&*chains, tenant, key).await;
        }
        let locked = self.lock_store().await?;
        let account_id = key.account_id.as_deref();
        let refresh_token = locked
            .refresh_token(&tenant.name, account_id)
            .map_err(store_error)?
            .ok_or_else(|| login_required(tenant, account_id, "no login stored yet"))?;
        let body = RefreshRequest {
            grant_type: "refresh_token",
            refresh_token: refresh_token.expose(),
            client_id: &tenant.client_id,
            client_secret: tenant.client_secret.as_ref().map(Secret::expose),
            scope: key.scope.as_deref(),
            account_id,
        };
        let granted = self.post_refresh(tenant, account_id, &body).await?;
        persist(&locked, tenant, account_id, &granted)?;
        Ok(granted.token)
    }

    /// A refresh request; SFMC's refusal means the login is over.
    async fn post_refresh(
        &self,
        tenant: &Tenant,
        account_id: Option<&str>,
        body: &RefreshRequest<'_>,
    ) -> Result<Granted, TokenError> {
        match self.post(tenant, account_id, body).await {
            Ok(granted) => Ok(granted),
            Err(TokenError::Rejected {
                error, description, ..
            }) => {
                let why = description.unwrap_or(error);
                Err(login_required(
                    tenant,
                    account_id,
                    &format!("SFMC refused the refresh: {why}"),
                ))
            }
            Err(other) => Err(other),
        }
    }

    /// A refresh with the fleet's chain: its link, SFMC's successor stored
    /// as the next version before the access token is used.
    async fn refresh_shared(
        &self,
        chains: &dyn ChainStore,
        tenant: &Tenant,
        key: &TokenKey,
    ) -> Result<FetchedToken, TokenError> {
        let account_id = key.account_id.as_deref();
        let link = chains
            .load(&tenant.name, account_id)
            .await
            .map_err(chain_error)?
            .ok_or_else(|| login_required(tenant, account_id, "no login stored in Redis yet"))?;
        let body = RefreshRequest {
            grant_type: "refresh_token",
            refresh_token: link.refresh_token.expose(),
            client_id: &tenant.client_id,
            client_secret: tenant.client_secret.as_ref().map(Secret::expose),
            scope: key.scope.as_deref(),
            account_id,
        };
        let granted = self.post_refresh(tenant, account_id, &body).await?;
        let refresh_token = successor(&granted)?;
        match chains
            .save(&tenant.name, account_id, refresh_token, Some(link.version))
            .await
        {
            Ok(()) => Ok(granted.token),
            // Another replica stored a successor first (this one's lease ran
            // out): its link is the chain's; this access token is still good.
            Err(ChainError::Conflict) => {
                tracing::warn!(
                    tenant = %tenant.name,
                    "another replica stored a newer refresh token while this one refreshed; keeping its link"
                );
                Ok(granted.token)
            }
            Err(error) => Err(chain_error(error)),
        }
    }

    /// Exchanges a login's `code` (with the PKCE verifier of its
    /// `/v2/authorize`, if one was sent) and stores the refresh token;
    /// returns the first access token.
    pub async fn exchange_code(
        &self,
        tenant_name: &str,
        account_id: Option<&str>,
        code: &str,
        code_verifier: Option<&str>,
    ) -> Result<FetchedToken, TokenError> {
        let tenant = self.tenant(tenant_name)?.clone();
        let Grant::AuthorizationCode { redirect_uri, .. } = &tenant.grant else {
            return Err(TokenError::InvalidResponse(format!(
                "tenant `{tenant_name}` uses client credentials: there is nothing to log in to"
            )));
        };
        let body = CodeRequest {
            grant_type: "authorization_code",
            code,
            client_id: &tenant.client_id,
            client_secret: tenant.client_secret.as_ref().map(Secret::expose),
            redirect_uri: redirect_uri.as_str(),
            scope: tenant.scope.as_deref(),
            account_id,
            code_verifier,
        };
        if let Some(chains) = self.chains.clone() {
            let granted = self
                .post(&tenant, account_id, &body)
                .await
                .map_err(|error| pkce_refused(&tenant, error))?;
            let refresh_token = successor(&granted)?;
            chains
                .save(&tenant.name, account_id, refresh_token, None)
                .await
                .map_err(chain_error)?;
            return Ok(granted.token);
        }
        let locked = self.lock_store().await?;
        let granted = self
            .post(&tenant, account_id, &body)
            .await
            .map_err(|error| pkce_refused(&tenant, error))?;
        persist(&locked, &tenant, account_id, &granted)?;
        Ok(granted.token)
    }

    async fn lock_store(&self) -> Result<Locked, TokenError> {
        let store = self.store.clone().ok_or_else(|| TokenError::Unavailable {
            reason: "no token store is configured (token.store_file)".into(),
            retryable: false,
        })?;
        // Another process may hold the lock for a refresh: wait off the runtime.
        tokio::task::spawn_blocking(move || store.lock())
            .await
            .map_err(|e| TokenError::Unavailable {
                reason: format!("token store lock task failed: {e}"),
                retryable: false,
            })?
            .map_err(store_error)
    }
}

/// The new refresh token goes to disk before the access token is handed out:
/// if the process dies right after, the next start still has a usable one.
fn persist(
    locked: &Locked,
    tenant: &Tenant,
    account_id: Option<&str>,
    granted: &Granted,
) -> Result<(), TokenError> {
    locked
        .save(&tenant.name, account_id, successor(granted)?)
        .map_err(store_error)
}

/// The refresh token SFMC's answer carries: the next link of the chain.
fn successor(granted: &Granted) -> Result<&str, TokenError> {
    granted
        .refresh_token
        .as_ref()
        .map(Secret::expose)
        .ok_or_else(|| TokenError::InvalidResponse("SFMC's answer had no refresh_token".into()))
}

/// A shared chain store's failure: unavailable (the replica does not
/// refresh alone: the chain is the fleet's), or a newer link already stored.
fn chain_error(error: ChainError) -> TokenError {
    TokenError::Unavailable {
        reason: format!("the login's refresh token in Redis: {error}"),
        retryable: matches!(error, ChainError::Conflict),
    }
}

/// SFMC's docs do not list the PKCE parameters: a refusal that names them
/// says how to turn PKCE off, in words the user sees.
fn pkce_refused(tenant: &Tenant, error: TokenError) -> TokenError {
    let TokenError::Rejected {
        error: code,
        description,
        ..
    } = &error
    else {
        return error;
    };
    let said = match description {
        Some(description) => format!("{code}: {description}"),
        None => code.clone(),
    };
    if !names_pkce(&said) {
        return error;
    }
    TokenError::Unavailable {
        reason: format!(
            "SFMC refused the code exchange ({said}); this package seems not to accept PKCE: set `pkce = false` in [tenants.{}] of proxy.toml and log in again",
            tenant.name
        ),
        retryable: false,
    }
}

/// Whether SFMC's words name a PKCE parameter.
pub fn names_pkce(refusal: &str) -> bool {
    let text = refusal.to_ascii_lowercase();
    ["code_verifier", "code_challenge", "pkce"]
        .iter()
        .any(|word| text.contains(word))
}

fn login_required(tenant: &Tenant, account_id: Option<&str>, why: &str) -> TokenError {
    TokenError::LoginRequired {
        reason: why.to_owned(),
        command: tenant.login_command(account_id),
    }
}

fn store_error(error: StoreError) -> TokenError {
    TokenError::Unavailable {
        reason: error.to_string(),
        retryable: false,
    }
}
