//! What the cache can tell about each key without a token value: the
//! token's timing and scope, the last success and the last error (SFMC's
//! words), for the status page, readiness and the metrics' gauges; and
//! [`TokenEvents`], the hook the `/v2/token` client tells of every request it
//! actually sends, so a counter of them equals what SFMC saw.

use std::sync::Arc;

use tokio::time::Instant;

use super::{TokenError, TokenKey};

/// One key as the cache holds it now. Never carries a token value.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub key: TokenKey,
    pub token: Option<TokenView>,
    /// When a token was last had for this key.
    pub last_success: Option<Instant>,
    /// The last failure (not cleared by a later success) and when it was.
    pub last_error: Option<(Instant, TokenError)>,
    /// When the proxy will ask SFMC again, if a refusal holds it back now.
    pub backoff_until: Option<Instant>,
}

/// The cached token's public facts.
#[derive(Debug, Clone)]
pub struct TokenView {
    /// When its request was sent (its age counts from there).
    pub sent_at: Instant,
    pub expires_at: Instant,
    /// When the proxy refreshes it (on use), ahead of expiry.
    pub refresh_at: Instant,
    /// The scope SFMC granted.
    pub scope: Option<String>,
    /// The REST instance's host.
    pub rest_host: String,
}

/// How one request to `/v2/token` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent<'a> {
    Ok,
    /// SFMC refused, with its `error` code (`invalid_client`, …).
    Rejected(&'a str),
    /// No usable answer: unreachable, timed out, 5xx, 429, or a 200 that is
    /// not a token.
    Unavailable,
}

impl<'a> Sent<'a> {
    pub fn of<T>(result: &'a Result<T, TokenError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(error) => Self::failed(error),
        }
    }

    pub fn failed(error: &'a TokenError) -> Self {
        match error {
            TokenError::Rejected { error, .. } => Self::Rejected(error),
            _ => Self::Unavailable,
        }
    }
}

/// Told of every request the proxy sends to SFMC's `/v2/token` (fetches,
/// refreshes, retries, login code exchanges), for `tenant` and the MID the
/// request asked for; never of one held back by the proxy's own rate limit
/// or backoff, nor of a refresh that had no stored login to send.
pub trait TokenEvents: Send + Sync + 'static {
    fn sent(&self, tenant: &Arc<str>, account_id: Option<&str>, outcome: Sent<'_>);
}

/// Events go nowhere (tests, `check`, the CLI's one-off token).
pub struct NoEvents;

impl TokenEvents for NoEvents {
    fn sent(&self, _tenant: &Arc<str>, _account_id: Option<&str>, _outcome: Sent<'_>) {}
}

pub(super) fn no_events() -> Arc<dyn TokenEvents> {
    Arc::new(NoEvents)
}
