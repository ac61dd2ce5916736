//! `TokenCache`: one valid SFMC access token per (tenant, business unit, scope).
//!
//! - A cached token is returned with one short read lock and no allocation.
//! - Concurrent misses for one key share one fetch (single-flight): the first
//!   caller fetches while the others wait on the key's fetch lock, then read the
//!   result. No dashmap guard is ever held across an `.await`.
//! - A token is refreshed in the background `refresh_before_expiry` ahead of its
//!   expiry, counted from when its request was *sent*; callers keep using the
//!   still-valid token meanwhile.
//! - A rejected token request opens a backoff window during which callers get the
//!   same error without a new request (SFMC throttles token creation); the window
//!   grows on repeated failures and resets on success. Transient failures are
//!   retried a few times with jittered backoff first.
//! - `invalidate` drops a token only if it is still the one that failed, so a
//!   late 401 never throws away a token another request just fetched.
//!
//! This module knows nothing of HTTP serving; `sfmc` is the `/v2/token` client.

mod instance;
mod refresh;
pub mod sfmc;
pub mod store;
mod types;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

pub use instance::InstanceBase;
pub use types::{Token, TokenError, TokenFailure};

/// What a token is for: one tenant, one business unit, one scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub tenant: Arc<str>,
    /// `None`: the business unit that owns the package.
    pub account_id: Option<Arc<str>>,
    /// `None`: every scope the package has.
    pub scope: Option<Arc<str>>,
}

/// What a token source returns; the cache adds the timing.
pub struct FetchedToken {
    pub access_token: String,
    pub expires_in: Duration,
    pub scope: Option<String>,
    pub rest_instance: InstanceBase,
    pub soap_instance: Option<InstanceBase>,
}

type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<FetchedToken, TokenError>> + Send + 'a>>;

/// Where tokens come from: SFMC's `/v2/token` in production, a script in tests.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> FetchFuture<'a>;
}

/// How a request got its token, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache.
    Hit,
    /// Waited for a fetch (its own or a concurrent caller's).
    Fetch,
    /// Served a still-valid token and started its background refresh.
    Refresh,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Fetch => "fetch",
            Self::Refresh => "refresh",
        }
    }
}

#[derive(Debug)]
pub struct Lease {
    pub token: Arc<Token>,
    pub outcome: Outcome,
}

#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    slots: DashMap<TokenKey, Arc<Slot>>,
    source: Arc<dyn TokenSource>,
    refresh_before: Duration,
}

#[derive(Default)]
struct Slot {
    /// Held only to read or swap a pointer: never across an await.
    state: RwLock<SlotState>,
    /// Serialises fetches for this key (single-flight).
    fetch_lock: tokio::sync::Mutex<()>,
    /// Set while a background refresh task exists, so only one is spawned.
    refreshing: AtomicBool,
}

#[derive(Default)]
struct SlotState {
    token: Option<Arc<Token>>,
    failure: Option<Failure>,
    /// When SFMC last refused this key's token (a 401) and the proxy dropped it.
    last_rejection: Option<Instant>,
}

struct Failure {
    error: TokenError,
    until: Instant,
    /// The window just applied; the next failure doubles it.
    window: Duration,
}

enum Check {
    Fresh(Arc<Token>),
    Stale(Arc<Token>),
    Failed(TokenFailure),
    Missing,
}

impl Slot {
    fn check(&self, now: Instant) -> Check {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = &state.token {
            if now < token.refresh_at {
                return Check::Fresh(token.clone());
            }
            if now < token.expires_at {
                return Check::Stale(token.clone());
            }
        }
        match &state.failure {
            Some(failure) if now < failure.until => Check::Failed(TokenFailure {
                error: failure.error.clone(),
                retry_in: failure.until - now,
            }),
            _ => Check::Missing,
        }
    }

    fn in_backoff(&self, now: Instant) -> bool {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.failure.as_ref().is_some_and(|f| now < f.until)
    }

    fn store(&self, token: Arc<Token>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.token = Some(token);
        state.failure = None;
    }

    fn record_failure(&self, error: TokenError, now: Instant) -> TokenFailure {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let (first, cap) = error.backoff_schedule();
        let window = match &state.failure {
            Some(previous) => (previous.window * 2).min(cap),
            None => first,
        };
        state.failure = Some(Failure {
            error: error.clone(),
            until: now + window,
            window,
        });
        TokenFailure {
            error,
            retry_in: window,
        }
    }
}

/// At most one 401-triggered token drop per key in this time.
const REJECTION_INTERVAL: Duration = Duration::from_secs(30);

/// Attempts for a transient failure before giving up, and the first delay.
const FETCH_ATTEMPTS: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, refresh_before: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: DashMap::new(),
                source,
                refresh_before,
            }),
        }
    }

    /// A valid token for `key`: cached, or fetched once for all concurrent callers.
    pub async fn get(&self, key: &TokenKey) -> Result<Lease, TokenFailure> {
        let slot = self.slot(key);
        match slot.check(Instant::now()) {
            Check::Fresh(token) => return Ok(lease(token, Outcome::Hit)),
            Check::Stale(token) => {
                self.refresh_in_background(key, &slot);
                return Ok(lease(token, Outcome::Refresh));
            }
            Check::Failed(failure) => return Err(failure),
            Check::Missing => {}
        }
        // The fetch runs in its own task: a caller that goes away (client
        // disconnect, timeout) must not cancel it half-way — a refresh token
        // SFMC has already rotated would then never be stored.
        let (inner, key, slot) = (self.inner.clone(), key.clone(), slot.clone());
        let fetch = tokio::spawn(async move {
            let _single_flight = slot.fetch_lock.lock().await;
            // Whoever held the lock before us may have fetched (or failed) already.
            match slot.check(Instant::now()) {
                Check::Fresh(token) | Check::Stale(token) => Ok(token),
                Check::Failed(failure) => Err(failure),
                Check::Missing => inner.fetch_into(&key, &slot).await,
            }
        });
        match fetch.await {
            Ok(result) => result.map(|token| lease(token, Outcome::Fetch)),
            Err(join_error) => Err(TokenFailure {
                error: TokenError::Unavailable {
                    reason: format!("the token fetch task failed: {join_error}"),
                    retryable: false,
                },
                retry_in: Duration::ZERO,
            }),
        }
    }

    /// Caches a token obtained outside `get` (a login's code exchange), so the
    /// first request after a login needs no refresh; clears a failure window.
    pub fn put(
        &self,
        key: &TokenKey,
        fetched: FetchedToken,
        sent_at: Instant,
    ) -> Result<(), TokenError> {
        let token = Token::new(fetched, sent_at, self.inner.refresh_before)?;
        self.slot(key).store(Arc::new(token));
        Ok(())
    }

    /// SFMC refused `failed` (a 401): drops it if it is still the current token
    /// for `key`. Returns whether a retry with the then current token may help:
    /// `false` when a token was dropped for this key less than
    /// `REJECTION_INTERVAL` ago — a 401 that a fresh token does not cure
    /// (a path that always answers 401) must not cost a token request each time.
    pub fn invalidate(&self, key: &TokenKey, failed: &Arc<Token>) -> bool {
        let Some(slot) = self.inner.slots.get(key) else {
            return true;
        };
        let mut state = slot.state.write().unwrap_or_else(PoisonError::into_inner);
        if !state.token.as_ref().is_some_and(|t| Arc::ptr_eq(t, failed)) {
            return true; // already replaced by a concurrent request
        }
        let now = Instant::now();
        if state
            .last_rejection
            .is_some_and(|at| now.duration_since(at) < REJECTION_INTERVAL)
        {
            return false;
        }
        state.token = None;
        state.last_rejection = Some(now);
        true
    }

    fn slot(&self, key: &TokenKey) -> Arc<Slot> {
        if let Some(slot) = self.inner.slots.get(key) {
            return slot.clone();
        }
        self.inner.slots.entry(key.clone()).or_default().clone()
    }

    fn refresh_in_background(&self, key: &TokenKey, slot: &Arc<Slot>) {
        if slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (inner, key, slot) = (self.inner.clone(), key.clone(), slot.clone());
        tokio::spawn(async move {
            {
                let _single_flight = slot.fetch_lock.lock().await;
                let now = Instant::now();
                let needed = !matches!(slot.check(now), Check::Fresh(_)) && !slot.in_backoff(now);
                if needed {
                    // On failure the old token stays usable until it expires.
                    let _ = inner.fetch_into(&key, &slot).await;
                }
            }
            slot.refreshing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    /// Fetches (with retries for transient failures) and records the result.
    /// Call with the slot's fetch lock held.
    async fn fetch_into(&self, key: &TokenKey, slot: &Slot) -> Result<Arc<Token>, TokenFailure> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1;
        loop {
            let sent_at = Instant::now();
            let result = self
                .source
                .fetch(key)
                .await
                .and_then(|fetched| Token::new(fetched, sent_at, self.refresh_before));
            match result {
                Ok(token) => {
                    let token = Arc::new(token);
                    slot.store(token.clone());
                    return Ok(token);
                }
                Err(error) if error.retryable() && attempt < FETCH_ATTEMPTS => {
                    tracing::warn!(tenant = %key.tenant, attempt, ?error, "token request failed; retrying");
                    // Jitter (0.5×–1.5×) keeps many proxies from retrying in step.
                    tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64())).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(error) => {
                    tracing::warn!(tenant = %key.tenant, ?error, "token request failed");
                    return Err(slot.record_failure(error, Instant::now()));
                }
            }
        }
    }
}

fn lease(token: Arc<Token>, outcome: Outcome) -> Lease {
    Lease { token, outcome }
}

#[cfg(test)]
mod tests;
