//! What keeps SFMC's token endpoint from being hammered, whatever the keys:
//!
//! - [`Failure`]: a backoff window after a refusal, growing on repeats. It is
//!   kept per key for errors about one business unit or scope, and per tenant
//!   for errors about the package itself ([`TokenError::is_tenant_wide`]): a
//!   wrong secret is wrong for every MID, so 80 MIDs must not cost 80 requests.
//! - [`Bucket`]: a token bucket per tenant (`token.rate_burst` requests at
//!   once, one more every `token.rate_interval`), checked before every request
//!   to SFMC, background refreshes and retries included.
//! - [`evict_idle`]: room in a full key map (`token.max_keys`).
//! - [`Limits::request_timeout`] and [`Limits::fetch_deadline`]: how long one
//!   token request, and one fetch with its retries, may keep a caller waiting
//!   (applied by the cache's fetch loop).
//!
//! Both use tokio's clock, so tests run them under paused time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{Slot, TokenError, TokenFailure, TokenKey};
use crate::config::TokenSettings;
use crate::config::{DEFAULT_TOKEN_FETCH_DEADLINE, DEFAULT_TOKEN_REQUEST_TIMEOUT};

/// The bounds a [`super::TokenCache`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Token requests a tenant may send at once (the bucket's size).
    pub rate_burst: u32,
    /// One request is regained per interval.
    pub rate_interval: Duration,
    /// (tenant, MID, scope) keys held at most.
    pub max_keys: usize,
    /// One token request is cut after this long.
    pub request_timeout: Duration,
    /// One fetch, its retries included, gives up after this long.
    pub fetch_deadline: Duration,
}

impl Default for Limits {
    /// Four requests at once and one every 5 s: far above what a proxy needs
    /// (one token per key per ~16 minutes), far below hammering.
    fn default() -> Self {
        Self {
            rate_burst: 4,
            rate_interval: Duration::from_secs(5),
            max_keys: 1024,
            request_timeout: DEFAULT_TOKEN_REQUEST_TIMEOUT,
            fetch_deadline: DEFAULT_TOKEN_FETCH_DEADLINE,
        }
    }
}

impl From<&TokenSettings> for Limits {
    fn from(settings: &TokenSettings) -> Self {
        Self {
            rate_burst: settings.rate_burst,
            rate_interval: settings.rate_interval,
            max_keys: settings.max_keys,
            request_timeout: settings.request_timeout,
            fetch_deadline: settings.fetch_deadline,
        }
    }
}

/// A backoff window opened by a refusal.
pub(super) struct Failure {
    error: TokenError,
    until: Instant,
    /// The window just applied; the next failure doubles it.
    window: Duration,
}

impl Failure {
    /// The failure after `previous` (or the first one): the window doubles up
    /// to the error's cap.
    pub(super) fn next(previous: Option<&Failure>, error: TokenError, now: Instant) -> Self {
        let (first, cap) = error.backoff_schedule();
        let window = match previous {
            Some(previous) => (previous.window * 2).min(cap),
            None => first,
        };
        Self {
            error,
            until: now + window,
            window,
        }
    }

    /// The caller's error while the window is open.
    pub(super) fn active(&self, now: Instant) -> Option<TokenFailure> {
        (now < self.until).then(|| self.as_failure(now))
    }

    /// When the window ends.
    pub(super) fn until(&self) -> Instant {
        self.until
    }

    pub(super) fn as_failure(&self, now: Instant) -> TokenFailure {
        TokenFailure {
            error: self.error.clone(),
            retry_in: self.until.saturating_duration_since(now),
        }
    }
}

/// A token bucket: `burst` requests at once, one regained per `interval`.
struct Bucket {
    available: u32,
    /// When `available` was last brought up to date.
    refilled_at: Instant,
}

impl Bucket {
    /// Takes one request, or says how long until one is regained.
    fn take(&mut self, limits: &Limits, now: Instant) -> Result<(), Duration> {
        let interval = limits.rate_interval.max(Duration::from_nanos(1));
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let gained = elapsed.as_nanos() / interval.as_nanos();
        let missing = u128::from(limits.rate_burst.saturating_sub(self.available));
        if gained >= missing {
            // Full: the next regained request is counted from now, not from
            // a moment long ago (a full bucket does not save up more).
            self.available = limits.rate_burst;
            self.refilled_at = now;
        } else if let Ok(gained) = u32::try_from(gained) {
            // `gained < missing <= u32::MAX`: cannot fail.
            self.available += gained;
            self.refilled_at += interval * gained;
        }
        if self.available == 0 {
            let since = now.saturating_duration_since(self.refilled_at);
            return Err(interval.saturating_sub(since));
        }
        self.available -= 1;
        Ok(())
    }

    /// How long until [`Bucket::take`] would succeed; `None`: now. Takes
    /// nothing.
    fn wait(&self, limits: &Limits, now: Instant) -> Option<Duration> {
        if self.available > 0 {
            return None;
        }
        let interval = limits.rate_interval.max(Duration::from_nanos(1));
        let since = now.saturating_duration_since(self.refilled_at);
        (since < interval).then(|| interval - since)
    }
}

/// One tenant's bucket and its tenant-wide backoff.
pub(super) struct TenantGuard {
    state: Mutex<GuardState>,
}

struct GuardState {
    bucket: Bucket,
    failure: Option<Failure>,
}

impl TenantGuard {
    pub(super) fn new(limits: &Limits, now: Instant) -> Self {
        Self {
            state: Mutex::new(GuardState {
                bucket: Bucket {
                    available: limits.rate_burst,
                    refilled_at: now,
                },
                failure: None,
            }),
        }
    }

    /// The tenant-wide refusal in force, if any.
    pub(super) fn failed(&self, now: Instant) -> Option<TokenFailure> {
        let state = crate::sync::lock(&self.state);
        state.failure.as_ref().and_then(|f| f.active(now))
    }

    /// When the tenant-wide refusal in force ends, if one is.
    pub(super) fn backoff_until(&self, now: Instant) -> Option<Instant> {
        let state = crate::sync::lock(&self.state);
        state
            .failure
            .as_ref()
            .filter(|f| f.active(now).is_some())
            .map(Failure::until)
    }

    /// The last tenant-wide refusal, even once its window is over (cleared
    /// by a success).
    pub(super) fn last_failure(&self, now: Instant) -> Option<TokenFailure> {
        let state = crate::sync::lock(&self.state);
        state.failure.as_ref().map(|f| f.as_failure(now))
    }

    pub(super) fn record_failure(&self, error: TokenError, now: Instant) -> TokenFailure {
        let mut state = crate::sync::lock(&self.state);
        let failure = Failure::next(state.failure.as_ref(), error, now);
        let reported = failure.as_failure(now);
        state.failure = Some(failure);
        reported
    }

    /// A token was had for some key: the package's credentials work again.
    pub(super) fn succeeded(&self) {
        let mut state = crate::sync::lock(&self.state);
        state.failure = None;
    }

    /// How long until the bucket lets a request through; `None`: now.
    pub(super) fn wait(&self, limits: &Limits, now: Instant) -> Option<Duration> {
        crate::sync::lock(&self.state).bucket.wait(limits, now)
    }

    /// Permission to send one request to SFMC now, or the caller's error.
    pub(super) fn admit(&self, limits: &Limits, now: Instant) -> Result<(), TokenFailure> {
        let mut state = crate::sync::lock(&self.state);
        state
            .bucket
            .take(limits, now)
            .map_err(|wait| rate_limited(limits, wait))
    }
}

fn rate_limited(limits: &Limits, wait: Duration) -> TokenFailure {
    TokenFailure {
        error: TokenError::Unavailable {
            reason: format!(
                "the proxy's own rate limit for token requests held this one back, without asking SFMC (token.rate_burst = {} at once, one more every token.rate_interval = {})",
                limits.rate_burst,
                humantime::format_duration(limits.rate_interval)
            ),
            retryable: false,
        },
        // At least a second: Retry-After counts whole seconds.
        retry_in: wait.max(Duration::from_secs(1)),
    }
}

/// Drops an idle slot: first one that holds no live token (a key that was
/// refused, rate-limited or has expired — what made-up keys leave behind),
/// then the least recently used. Idle: only the map holds it (no caller, no
/// fetch or refresh task), so nothing is lost but a token that can be fetched
/// again. Checked again under the shard's write lock, where no one can take a
/// new hold on it. Keying the choice on live tokens first means a flood of
/// junk keys cannot push out the tokens real callers use.
pub(super) fn evict_idle(
    slots: &DashMap<TokenKey, Arc<Slot>>,
    limits: &Limits,
    now: Instant,
) -> Result<(), TokenFailure> {
    let idle =
        |slot: &Arc<Slot>| Arc::strong_count(slot) == 1 && !slot.refreshing.load(Ordering::Acquire);
    let holds_live_token = |slot: &Arc<Slot>| {
        let state = crate::sync::read(&slot.state);
        state
            .token
            .as_ref()
            .is_some_and(|token| now < token.expires_at)
    };
    for _ in 0..3 {
        let victim = slots
            .iter()
            .filter(|entry| idle(entry.value()))
            .min_by_key(|entry| {
                let slot = entry.value();
                (
                    holds_live_token(slot),
                    slot.last_used.load(Ordering::Relaxed),
                )
            })
            .map(|entry| entry.key().clone());
        let Some(victim) = victim else { break };
        if slots.remove_if(&victim, |_, slot| idle(slot)).is_some() {
            return Ok(());
        }
    }
    Err(keys_full(limits))
}

/// Every key is busy: nothing could be evicted to make room.
fn keys_full(limits: &Limits) -> TokenFailure {
    TokenFailure {
        error: TokenError::Unavailable {
            reason: format!(
                "the token cache is full: token.max_keys = {} (tenant, business unit, scope) keys, all fetching a token right now; raise token.max_keys or use fewer distinct X-SFMC-Account-Id / X-SFMC-Scope values",
                limits.max_keys
            ),
            retryable: false,
        },
        retry_in: Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_one_per_interval() {
        let limits = Limits::default();
        let guard = TenantGuard::new(&limits, Instant::now());
        for _ in 0..4 {
            assert!(guard.admit(&limits, Instant::now()).is_ok());
        }
        let held = guard.admit(&limits, Instant::now()).expect_err("empty");
        assert_eq!(held.retry_in, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(3)).await;
        let held = guard
            .admit(&limits, Instant::now())
            .expect_err("still empty");
        assert_eq!(held.retry_in, Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(guard.admit(&limits, Instant::now()).is_ok(), "one regained");
        assert!(guard.admit(&limits, Instant::now()).is_err());
        // What `wait` says is what `admit` does, and asking takes nothing.
        assert_eq!(
            guard.wait(&limits, Instant::now()),
            Some(Duration::from_secs(5))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(guard.wait(&limits, Instant::now()), None);
        assert_eq!(guard.wait(&limits, Instant::now()), None);
        assert!(guard.admit(&limits, Instant::now()).is_ok());
        assert!(guard.wait(&limits, Instant::now()).is_some());
        // A long quiet time refills to the burst, not beyond.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..4 {
            assert!(guard.admit(&limits, Instant::now()).is_ok());
        }
        assert!(guard.admit(&limits, Instant::now()).is_err());
    }
}
