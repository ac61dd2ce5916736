//! The start-up prefetch (`token.prefetch`, on by default): each
//! client-credentials tenant's default token is fetched in the background as
//! the server starts, and one line per tenant says how it went — the instance,
//! expiry and granted scope, or SFMC's refusal and what to change — so a wrong
//! secret shows at start, not at the first request.
//!
//! Authorization-code tenants are not prefetched: their refresh tokens are
//! single-use (each refresh rotates them), so a start-up refresh would spend
//! one for a token nobody may ask for, and race a `sfmc-proxy token` run on
//! the same store. Their stored refresh token is used at the first request or
//! readiness probe; until a person logs in they are `login_required`.
//!
//! The fetch of every key is begun (its single-flight lock taken) before
//! [`start`] returns, so the first readiness probe already sees the tenant
//! `starting` and never sends a request of its own.

use std::time::SystemTime;

use tokio::time::Instant;

use crate::config::{Grant, Settings, Tenant};
use crate::error::ProxyError;
use crate::failures::token_failure;
use crate::token::{Attempt, Lease, TokenCache, TokenFailure, TokenKey};

/// Begins the prefetch of every client-credentials tenant's default token;
/// the fetches and their log lines run in background tasks.
pub fn start(settings: &Settings, tokens: &TokenCache) {
    start_some(settings, tokens, |_| true);
}

/// [`start`] for the tenants `pick` chooses (a reload: those added or with
/// new credentials; the others' tokens are kept).
pub fn start_some(settings: &Settings, tokens: &TokenCache, pick: impl Fn(&Tenant) -> bool) {
    let tenants = settings
        .tenants
        .iter()
        .filter(|t| t.grant == Grant::ClientCredentials && pick(t));
    for tenant in tenants {
        let key = match TokenKey::for_tenant(tenant, None, None) {
            Ok(key) => key,
            Err(refused) => {
                log_failure(tenant, &ProxyError::from(refused));
                continue;
            }
        };
        let attempt = tokens.try_get(&key);
        let (tenant, tokens) = (tenant.clone(), tokens.clone());
        tokio::spawn(async move {
            let result = match attempt {
                Attempt::Done(result) => result,
                Attempt::Started(fetch) => fetch.finish().await,
                // Someone else is already fetching: wait for theirs.
                Attempt::Busy { .. } => tokens.get(&key).await,
            };
            log(&tenant, result);
        });
    }
}

fn log(tenant: &Tenant, result: Result<Lease, TokenFailure>) {
    match result {
        Ok(lease) => log_ok(tenant, &lease),
        Err(failure) => log_failure(tenant, &token_failure(failure, &tenant.name)),
    }
}

fn log_ok(tenant: &Tenant, lease: &Lease) {
    let token = &lease.token;
    let left = token.expires_at.saturating_duration_since(Instant::now());
    let expires_at = humantime::format_rfc3339_seconds(SystemTime::now() + left);
    let scope = token.scope.as_deref().unwrap_or("(not reported)");
    tracing::info!(
        tenant = %tenant.name,
        instance = %token.rest_instance.authority(),
        expires_in_s = left.as_secs(),
        %expires_at,
        scope,
        "prefetch: tenant `{}` got a token (instance {}, expires {expires_at}, scope {scope})",
        tenant.name,
        token.rest_instance.authority(),
    );
}

fn log_failure(tenant: &Tenant, error: &ProxyError) {
    let body = error.json_body();
    let sfmc_error = body["sfmc_error"].as_str();
    let sfmc_error_description = body["sfmc_error_description"].as_str();
    let said = match (sfmc_error, sfmc_error_description) {
        (Some(code), Some(description)) => format!(" SFMC said: {code}: {description}."),
        (Some(code), None) => format!(" SFMC said: {code}."),
        _ => String::new(),
    };
    // The error's message names the tenant and what to check.
    tracing::warn!(
        tenant = %tenant.name,
        error = error.code(),
        sfmc_error,
        sfmc_error_description,
        "prefetch: {error}.{said} Requests for tenant `{}` fail until this is fixed (the proxy asks again after its backoff); `sfmc-proxy check` tries at once, and /_proxy/ready?tenant={} shows when it works",
        tenant.name,
        tenant.name,
    );
}
