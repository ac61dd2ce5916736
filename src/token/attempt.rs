//! `TokenCache::try_get`: `get` for callers that must not wait on someone
//! else's fetch — a readiness probe, the start-up prefetch. It answers from
//! the cache as `get` does (a valid token, the refusal whose backoff window is
//! open), starts the fetch itself when none is in flight, and otherwise says
//! a fetch is in flight instead of joining it. The fetch lock is taken before
//! `try_get` returns, so from then on every other caller sees the key as
//! being fetched: nothing here can make a request `get` would not make.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Lease, Outcome, Token, TokenCache, TokenError, TokenFailure, TokenKey, lease};

/// What [`TokenCache::try_get`] found.
pub enum Attempt {
    /// A token, or the refusal in force; nothing was waited for or sent.
    Done(Result<Lease, TokenFailure>),
    /// A fetch this call started (it runs whether or not it is awaited).
    Started(Fetch),
    /// Another caller's fetch is in flight. `last`: the key's (or its
    /// tenant's) last refusal, if there was one since the last success;
    /// `succeeded_before`: whether a token was ever had for the key (a
    /// refresh in flight, not a first fetch).
    Busy {
        last: Option<TokenFailure>,
        succeeded_before: bool,
    },
}

/// A fetch running in its own task.
pub struct Fetch(pub(super) JoinHandle<Result<(Arc<Token>, Outcome), TokenFailure>>);

impl Fetch {
    /// Waits for the fetch.
    pub async fn finish(self) -> Result<Lease, TokenFailure> {
        match self.0.await {
            Ok(result) => result.map(|(token, outcome)| lease(token, outcome)),
            Err(join_error) => Err(TokenFailure {
                error: TokenError::Unavailable {
                    reason: format!("the token fetch task failed: {join_error}"),
                    retryable: false,
                },
                retry_in: Duration::ZERO,
            }),
        }
    }
}

impl TokenCache {
    /// `get` without waiting for another caller's fetch (see the module).
    pub fn try_get(&self, key: &TokenKey) -> Attempt {
        let now = Instant::now();
        let slot = match self.slot(key, now) {
            Ok(slot) => slot,
            Err(failure) => return Attempt::Done(Err(failure)),
        };
        if let Some(answer) = self.without_fetch(key, &slot, now, (self.inner.wall)()) {
            return Attempt::Done(answer);
        }
        let Ok(single_flight) = slot.fetch_lock.clone().try_lock_owned() else {
            let last = self
                .inner
                .tenant(&key.tenant)
                .last_failure(now)
                .or_else(|| slot.last_failure(now));
            return Attempt::Busy {
                last,
                succeeded_before: slot.succeeded_before(),
            };
        };
        let (inner, key, slot) = (self.inner.clone(), key.clone(), slot.clone());
        Attempt::Started(Fetch(tokio::spawn(async move {
            let _single_flight = single_flight;
            inner.fetch_locked(&key, &slot).await
        })))
    }
}
