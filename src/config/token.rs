//! `[token]`: when tokens are refreshed, how much of a body is held for a
//! replay, the rate limit of token requests to SFMC, how long one token
//! request and one fetch (its retries included) may take, how many keys the
//! cache holds, whether default tokens are fetched at start (`prefetch`), and
//! where login tenants' refresh tokens are kept (`store_file`, whose default
//! is decided here, beside the setting).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::{
    DEFAULT_MAX_KEYS, DEFAULT_PREFETCH, DEFAULT_RATE_BURST, DEFAULT_RATE_INTERVAL,
    DEFAULT_REFRESH_BEFORE_EXPIRY, DEFAULT_REPLAY_BODY_LIMIT, DEFAULT_TOKEN_FETCH_DEADLINE,
    DEFAULT_TOKEN_REQUEST_TIMEOUT,
};
use super::raw::RawToken;
use super::values::{Expander, duration_or, size_or};
use super::{ConfigError, invalid};

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub refresh_before_expiry: Duration,
    pub replay_body_limit: usize,
    /// Refresh tokens of authorization-code tenants (see `token::store`).
    pub store_file: Option<PathBuf>,
    /// Token requests a tenant may send to SFMC at once (a token bucket's size).
    pub rate_burst: u32,
    /// One token request is regained per interval.
    pub rate_interval: Duration,
    /// (tenant, business unit, scope) keys the token cache holds at most.
    pub max_keys: usize,
    /// Fetch each client-credentials tenant's default token at start.
    pub prefetch: bool,
    /// One `/v2/token` call is cut after this long.
    pub request_timeout: Duration,
    /// One fetch, its retries included, gives up after this long.
    pub fetch_deadline: Duration,
}

pub(super) fn validate(raw: RawToken, ex: &Expander<'_>) -> Result<TokenSettings, ConfigError> {
    let refresh_before_expiry = duration_or(
        "token.refresh_before_expiry",
        raw.refresh_before_expiry.as_deref(),
        DEFAULT_REFRESH_BEFORE_EXPIRY,
    )?;
    let replay_body_limit = size_or(
        "token.replay_body_limit",
        raw.replay_body_limit.as_deref(),
        DEFAULT_REPLAY_BODY_LIMIT,
    )?;
    let rate_burst = raw.rate_burst.unwrap_or(DEFAULT_RATE_BURST);
    if rate_burst == 0 {
        return Err(invalid(
            "token.rate_burst",
            "must be at least 1 (0 would never let a token request through)",
        ));
    }
    let rate_interval = duration_or(
        "token.rate_interval",
        raw.rate_interval.as_deref(),
        DEFAULT_RATE_INTERVAL,
    )?;
    if rate_interval.is_zero() {
        return Err(invalid(
            "token.rate_interval",
            "must be longer than 0s (it is the time one token request is regained in)",
        ));
    }
    let max_keys = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        return Err(invalid("token.max_keys", "must be at least 1"));
    }
    let request_timeout = duration_or(
        "token.request_timeout",
        raw.request_timeout.as_deref(),
        DEFAULT_TOKEN_REQUEST_TIMEOUT,
    )?;
    // Below a second a healthy SFMC under load would be cut too.
    if request_timeout < Duration::from_secs(1) {
        return Err(invalid("token.request_timeout", "must be at least 1s"));
    }
    let fetch_deadline = duration_or(
        "token.fetch_deadline",
        raw.fetch_deadline.as_deref(),
        DEFAULT_TOKEN_FETCH_DEADLINE,
    )?;
    if fetch_deadline < request_timeout {
        return Err(invalid(
            "token.fetch_deadline",
            format!(
                "must be at least token.request_timeout ({}): it is the budget for all attempts of one fetch",
                humantime::format_duration(request_timeout)
            ),
        ));
    }
    Ok(TokenSettings {
        refresh_before_expiry,
        replay_body_limit,
        store_file: store_file(raw.store_file.as_deref(), ex)?,
        rate_burst,
        rate_interval,
        max_keys,
        prefetch: raw.prefetch.unwrap_or(DEFAULT_PREFETCH),
        request_timeout,
        fetch_deadline,
    })
}

/// `token.store_file`: as configured (relative to the config file), else
/// `$XDG_STATE_HOME/sfmc-proxy/tokens.json`, else
/// `~/.local/state/sfmc-proxy/tokens.json`; `None` when none can be had.
fn store_file(configured: Option<&str>, ex: &Expander<'_>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = configured {
        return ex.path("token.store_file", path).map(Some);
    }
    let state = ex.var("XDG_STATE_HOME").map(PathBuf::from).or_else(|| {
        ex.var("HOME")
            .map(|home| Path::new(&home).join(".local/state"))
    });
    Ok(state.map(|dir| dir.join("sfmc-proxy").join("tokens.json")))
}
