//! `TokenCache`: one valid SFMC access token per (tenant, business unit, scope).
//!
//! - A cached token is returned with one short read lock and no allocation.
//! - Concurrent misses for one key share one fetch (single-flight): the first
//!   caller fetches while the others wait on the key's fetch lock, then read the
//!   result. No dashmap guard is ever held across an `.await`.
//! - A token is refreshed in the background `refresh_before_expiry` ahead of its
//!   expiry, counted from when its request was *sent*; callers keep using the
//!   still-valid token meanwhile. There is no timer to miss: each use checks
//!   the token on tokio's clock and on the wall clock ([`WallClock`]), and a
//!   token is fresh only if both say so — tokio's stops while the machine is
//!   suspended, so after a laptop wakes the first use refreshes (or, past
//!   expiry, fetches anew) instead of sending an expired token.
//! - A rejected token request opens a backoff window during which callers get the
//!   same error without a new request (SFMC throttles token creation); the window
//!   grows on repeated failures and resets on success. A refusal of the package
//!   itself (`invalid_client`) backs off the whole tenant; one about a business
//!   unit or scope, only that key. Transient failures are retried a few times
//!   with jittered backoff first, each attempt cut at `token.request_timeout`
//!   and all of them within `token.fetch_deadline`, so a hung auth host
//!   answers callers with a 503 that says what was tried, in bounded time.
//! - Every request to SFMC, refreshes and retries included, first takes a
//!   token from the tenant's bucket (`token.rate_burst`, `token.rate_interval`):
//!   whatever keys callers make up, SFMC sees a bounded rate (see `limits`).
//!   [`TokenCache::rate_wait`] says how long until the bucket lets one more
//!   through, for a caller that would rather wait than be held back (`check`).
//! - At most `token.max_keys` keys are held; when full, the least recently
//!   used idle key (no fetch in flight, nobody holding it) makes room.
//! - `invalidate` drops a token only if it is still the one that failed, so a
//!   late 401 never throws away a token another request just fetched.
//! - `try_get` (see `attempt`) is `get` for readiness probes and the start-up
//!   prefetch: it never waits on another caller's fetch, and says so instead.
//! - Each key keeps its last success and last error (see `ledger`), which
//!   [`TokenCache::keys`] shows without a token value. (What is sent to
//!   `/v2/token` is told to [`TokenEvents`] by the client, `sfmc`, the one
//!   place that sends.)
//!
//! This module knows nothing of HTTP serving; `sfmc` is the `/v2/token` client.

mod attempt;
mod key;
mod ledger;
mod limits;
mod reconfigure;
mod refresh;
pub mod sfmc;
pub mod store;
mod types;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::time::Instant;

pub use attempt::{Attempt, Fetch};
pub use key::{KeyRefused, TokenKey, checked_scope};
pub use ledger::{KeyView, NoEvents, Sent, TokenEvents, TokenView};
pub use limits::Limits;
pub use refresh::names_pkce;
pub use types::{
    FetchFuture, FetchedToken, FindFuture, Lease, Outcome, Token, TokenError, TokenFailure,
    TokenSource,
};

use crate::config::TokenSettings;
use limits::{Failure, TenantGuard};

#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    slots: DashMap<TokenKey, Arc<Slot>>,
    /// One per tenant (a handful, from the config): bucket and tenant-wide backoff.
    tenants: DashMap<Arc<str>, Arc<TenantGuard>>,
    /// Where tokens come from and the `[token]` bounds: replaced whole by a
    /// config reload (see `reconfigure`), read once per fetch, never on a hit.
    tuning: ArcSwap<Tuning>,
    /// Origin of the slots' `last_used` clock.
    epoch: Instant,
    /// The clock token expiry is also judged by (see `Token::wall_expires_at`).
    wall: WallClock,
}

/// The wall clock: `SystemTime::now`, but injectable so a test can jump it
/// while tokio's clock stands still, as a suspend does.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What a reload may change about the cache.
struct Tuning {
    source: Arc<dyn TokenSource>,
    refresh_before: Duration,
    limits: Limits,
}

#[derive(Default)]
struct Slot {
    /// Held only to read or swap a pointer: never across an await.
    state: RwLock<SlotState>,
    /// Serialises fetches for this key (single-flight). In an `Arc` so that
    /// `try_get` can take it before the task that fetches exists.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    /// Set while a background refresh task exists, so only one is spawned.
    refreshing: AtomicBool,
    /// Milliseconds since `Inner::epoch` of the last use, for eviction.
    last_used: AtomicU64,
}

#[derive(Default)]
struct SlotState {
    token: Option<Arc<Token>>,
    failure: Option<Failure>,
    /// When SFMC last refused this key's token (a 401) and the proxy dropped it.
    last_rejection: Option<Instant>,
    /// When a token was last had for this key; survives a later failure.
    last_success: Option<Instant>,
    /// The last failure and when; survives a later success (the status page
    /// shows both).
    last_error: Option<(Instant, TokenError)>,
}

enum Check {
    Fresh(Arc<Token>),
    Stale(Arc<Token>),
    Failed(TokenFailure),
    Missing,
}

impl Slot {
    /// `now` and `wall`: the time on tokio's clock and on the wall clock.
    fn check(&self, now: Instant, wall: SystemTime) -> Check {
        let state = crate::sync::read(&self.state);
        if let Some(token) = &state.token {
            if now < token.refresh_at && wall < token.wall_refresh_at {
                return Check::Fresh(token.clone());
            }
            if now < token.expires_at && wall < token.wall_expires_at {
                return Check::Stale(token.clone());
            }
        }
        match state.failure.as_ref().and_then(|f| f.active(now)) {
            Some(failure) => Check::Failed(failure),
            None => Check::Missing,
        }
    }

    /// The last refusal recorded for this key, even once its window is over.
    fn last_failure(&self, now: Instant) -> Option<TokenFailure> {
        let state = crate::sync::read(&self.state);
        state.failure.as_ref().map(|f| f.as_failure(now))
    }

    fn in_backoff(&self, now: Instant) -> bool {
        let state = crate::sync::read(&self.state);
        state
            .failure
            .as_ref()
            .is_some_and(|f| f.active(now).is_some())
    }

    /// Marks the slot used at `tick`; a read first, so a hot key's cache
    /// line is written at most once a millisecond, not once a request.
    fn touch(&self, tick: u64) {
        if self.last_used.load(Ordering::Relaxed) != tick {
            self.last_used.store(tick, Ordering::Relaxed);
        }
    }

    fn store(&self, token: Arc<Token>) {
        let mut state = crate::sync::write(&self.state);
        state.token = Some(token);
        state.failure = None;
        state.last_success = Some(Instant::now());
    }

    /// Notes a failure for the ledger only (a tenant-wide refusal is
    /// recorded on the tenant, but each key shows it too).
    fn note_error(&self, error: &TokenError, now: Instant) {
        crate::sync::write(&self.state).last_error = Some((now, error.clone()));
    }

    /// Whether a token was ever had for this key.
    fn succeeded_before(&self) -> bool {
        crate::sync::read(&self.state).last_success.is_some()
    }

    fn view(&self, key: &TokenKey, now: Instant) -> KeyView {
        let state = crate::sync::read(&self.state);
        KeyView {
            key: key.clone(),
            token: state.token.as_ref().map(|token| TokenView {
                sent_at: token.sent_at,
                expires_at: token.expires_at,
                refresh_at: token.refresh_at,
                scope: token.scope.clone(),
                rest_host: token.rest_instance.host().to_owned(),
            }),
            last_success: state.last_success,
            last_error: state.last_error.clone(),
            backoff_until: state
                .failure
                .as_ref()
                .filter(|f| f.active(now).is_some())
                .map(limits::Failure::until),
        }
    }

    fn record_failure(&self, error: TokenError, now: Instant) -> TokenFailure {
        let mut state = crate::sync::write(&self.state);
        let failure = Failure::next(state.failure.as_ref(), error, now);
        let reported = failure.as_failure(now);
        state.failure = Some(failure);
        reported
    }
}

/// At most one 401-triggered token drop per key in this time.
const REJECTION_INTERVAL: Duration = Duration::from_secs(30);

/// Attempts for a transient failure at most (fewer when `token.fetch_deadline`
/// leaves no room), and the first delay: three stay within the default rate
/// bucket, so a retry is never held back by the proxy's own limit.
const FETCH_ATTEMPTS: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

impl TokenCache {
    /// A cache with the default [`Limits`].
    pub fn new(source: Arc<dyn TokenSource>, refresh_before: Duration) -> Self {
        Self::with_limits(source, refresh_before, Limits::default())
    }

    /// A cache as `[token]` configures it.
    pub fn configured(source: Arc<dyn TokenSource>, settings: &TokenSettings) -> Self {
        Self::with_limits(
            source,
            settings.refresh_before_expiry,
            Limits::from(settings),
        )
    }

    pub fn with_limits(
        source: Arc<dyn TokenSource>,
        refresh_before: Duration,
        limits: Limits,
    ) -> Self {
        Self::with_wall_clock(source, refresh_before, limits, Arc::new(SystemTime::now))
    }

    /// [`TokenCache::with_limits`] judging expiry also by `wall`.
    pub fn with_wall_clock(
        source: Arc<dyn TokenSource>,
        refresh_before: Duration,
        limits: Limits,
        wall: WallClock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: DashMap::new(),
                tenants: DashMap::new(),
                tuning: ArcSwap::from_pointee(Tuning {
                    source,
                    refresh_before,
                    limits,
                }),
                epoch: Instant::now(),
                wall,
            }),
        }
    }

    /// A valid token for `key`: cached, or fetched once for all concurrent callers.
    pub async fn get(&self, key: &TokenKey) -> Result<Lease, TokenFailure> {
        let now = Instant::now();
        let slot = self.slot(key, now)?;
        if let Some(answer) = self.without_fetch(key, &slot, now, (self.inner.wall)()) {
            return answer;
        }
        // The fetch runs in its own task: a caller that goes away (client
        // disconnect, timeout) must not cancel it half-way — a refresh token
        // SFMC has already rotated would then never be stored.
        let (inner, key, slot) = (self.inner.clone(), key.clone(), slot.clone());
        let fetch = tokio::spawn(async move {
            let _single_flight = slot.fetch_lock.lock().await;
            inner.fetch_locked(&key, &slot).await
        });
        Fetch(fetch).finish().await
    }

    /// Every key held now, with its token's facts, last success and last
    /// error; never a token value. For the status page and the metrics.
    pub fn keys(&self) -> Vec<KeyView> {
        let now = Instant::now();
        let mut views: Vec<KeyView> = self
            .inner
            .slots
            .iter()
            .map(|entry| {
                let mut view = entry.value().view(entry.key(), now);
                // A tenant-wide refusal holds this key back too.
                if view.backoff_until.is_none() {
                    view.backoff_until = self
                        .inner
                        .tenants
                        .get(&entry.key().tenant)
                        .and_then(|t| t.backoff_until(now));
                }
                view
            })
            .collect();
        views.sort_by(|a, b| {
            let order = |k: &TokenKey| (k.tenant.clone(), k.account_id.clone(), k.scope.clone());
            order(&a.key).cmp(&order(&b.key))
        });
        views
    }

    /// How long until `tenant`'s rate limit (`token.rate_burst`,
    /// `token.rate_interval`) lets one more token request through; `None`:
    /// now. Takes nothing: for callers that would rather wait than be held
    /// back (`sfmc-proxy check` with many business units).
    pub fn rate_wait(&self, tenant: &Arc<str>) -> Option<Duration> {
        let limits = self.inner.tuning.load().limits;
        self.inner.tenant(tenant).wait(&limits, Instant::now())
    }

    /// Drops the cached token of `key` (the status page's action, after a
    /// package's scopes changed): the next request fetches a new one. Its
    /// backoff window is cleared too, so that fetch is not held back.
    /// Returns whether there was a token.
    pub fn drop_token(&self, key: &TokenKey) -> bool {
        let Some(slot) = self.inner.slots.get(key) else {
            return false;
        };
        let mut state = crate::sync::write(&slot.state);
        state.failure = None;
        let Some(dropped) = state.token.take() else {
            return false;
        };
        drop(state);
        // A source that shares tokens (the fleet) drops its copy too, so
        // the next fetch gets a new one rather than the same one back.
        self.inner
            .tuning
            .load()
            .source
            .refused(key, dropped.access_token());
        true
    }

    /// What `get` answers without fetching: a valid token (a stale one's
    /// refresh started), or the refusal whose backoff window is open; `None`
    /// when a fetch is needed.
    fn without_fetch(
        &self,
        key: &TokenKey,
        slot: &Arc<Slot>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Result<Lease, TokenFailure>> {
        match slot.check(now, wall) {
            Check::Fresh(token) => return Some(Ok(lease(token, Outcome::Hit))),
            Check::Stale(token) => {
                self.refresh_in_background(key, slot);
                return Some(Ok(lease(token, Outcome::Refresh)));
            }
            Check::Failed(failure) => return Some(Err(failure)),
            Check::Missing => {}
        }
        // A refusal of the package holds back every key of the tenant.
        self.inner.tenant(&key.tenant).failed(now).map(Err)
    }

    /// Caches a token obtained outside `get` (a login's code exchange), so the
    /// first request after a login needs no refresh; clears a failure window.
    pub fn put(
        &self,
        key: &TokenKey,
        fetched: FetchedToken,
        sent_at: Instant,
    ) -> Result<(), TokenError> {
        let refresh_before = self.inner.tuning.load().refresh_before;
        // `sent_at` on the wall clock: as long ago as it is on tokio's.
        let now = (self.inner.wall)();
        let ago = Instant::now().saturating_duration_since(sent_at);
        let sent_wall = now.checked_sub(ago).unwrap_or(now);
        let token = Token::new(fetched, sent_at, sent_wall, refresh_before)?;
        let slot = self
            .slot(key, Instant::now())
            .map_err(|failure| failure.error)?;
        slot.store(Arc::new(token));
        self.inner.tenant(&key.tenant).succeeded();
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
        let mut state = crate::sync::write(&slot.state);
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
        drop(state);
        self.inner
            .tuning
            .load()
            .source
            .refused(key, failed.access_token());
        true
    }

    /// The slot for `key`, made (room made first when full) if missing.
    fn slot(&self, key: &TokenKey, now: Instant) -> Result<Arc<Slot>, TokenFailure> {
        let tick = self.inner.tick(now);
        if let Some(slot) = self.inner.slots.get(key) {
            slot.touch(tick);
            return Ok(slot.clone());
        }
        let tuning = self.inner.tuning.load();
        if self.inner.slots.len() >= tuning.limits.max_keys {
            limits::evict_idle(&self.inner.slots, &tuning.limits, now)?;
        }
        let slot = self.inner.slots.entry(key.clone()).or_default().clone();
        slot.touch(tick);
        Ok(slot)
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
                let needed = !matches!(slot.check(now, (inner.wall)()), Check::Fresh(_))
                    && !slot.in_backoff(now)
                    && inner.tenant(&key.tenant).failed(now).is_none();
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
    fn tenant(&self, name: &Arc<str>) -> Arc<TenantGuard> {
        if let Some(guard) = self.tenants.get(name) {
            return guard.clone();
        }
        let guard = TenantGuard::new(&self.tuning.load().limits, Instant::now());
        self.tenants
            .entry(name.clone())
            .or_insert_with(|| Arc::new(guard))
            .clone()
    }

    fn tick(&self, now: Instant) -> u64 {
        let millis = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(millis).unwrap_or(u64::MAX)
    }

    /// With the slot's fetch lock held: whoever held it before may have
    /// fetched (or failed) already; else fetches.
    /// `Outcome::Coalesced` when another caller's fetch already brought the
    /// token, `Outcome::Fetch` when this call fetched it.
    async fn fetch_locked(
        &self,
        key: &TokenKey,
        slot: &Slot,
    ) -> Result<(Arc<Token>, Outcome), TokenFailure> {
        let now = Instant::now();
        match slot.check(now, (self.wall)()) {
            Check::Fresh(token) | Check::Stale(token) => Ok((token, Outcome::Coalesced)),
            Check::Failed(failure) => Err(failure),
            Check::Missing => match self.tenant(&key.tenant).failed(now) {
                Some(failure) => Err(failure),
                None => Ok((self.fetch_into(key, slot).await?, Outcome::Fetch)),
            },
        }
    }

    /// Fetches (with retries for transient failures) and records the result.
    /// Call with the slot's fetch lock held.
    ///
    /// Each attempt is cut at `token.request_timeout`, and the whole fetch is
    /// bounded by `token.fetch_deadline`: a retry is sent only when it could
    /// still run its full `request_timeout` before the deadline, so a hung auth
    /// host costs a caller at most `fetch_deadline`, never attempts × timeout.
    async fn fetch_into(&self, key: &TokenKey, slot: &Slot) -> Result<Arc<Token>, TokenFailure> {
        let tenant = self.tenant(&key.tenant);
        // One generation of settings for the whole fetch, retries included.
        let tuning = self.tuning.load_full();
        let limits = tuning.limits;
        // A token another replica fetched costs SFMC nothing: taken without
        // the rate limit's admission.
        if let Some(found) = tuning.source.find(key).await {
            let token = Token::new(found, Instant::now(), (self.wall)(), tuning.refresh_before);
            if let Ok(token) = token {
                let token = Arc::new(token);
                slot.store(token.clone());
                tenant.succeeded();
                return Ok(token);
            }
        }
        let started = Instant::now();
        let deadline = started + limits.fetch_deadline;
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1;
        let mut cut = 0;
        let (error, tried) = loop {
            // The first attempt starts the deadline's clock.
            let sent_at = if attempt == 1 {
                started
            } else {
                Instant::now()
            };
            // Held back by the proxy's own rate limit: nothing was sent, so
            // nothing is recorded against the key.
            tenant.admit(&limits, sent_at)?;
            let sent_wall = (self.wall)();
            let budget = limits
                .request_timeout
                .min(deadline.saturating_duration_since(sent_at));
            let result = match tokio::time::timeout(budget, tuning.source.fetch(key)).await {
                Ok(result) => result.and_then(|fetched| {
                    Token::new(fetched, sent_at, sent_wall, tuning.refresh_before)
                }),
                Err(_elapsed) => Err(TokenError::Unavailable {
                    reason: format!(
                        "no answer from {} within token.request_timeout ({})",
                        tuning.source.target(key),
                        human(budget)
                    ),
                    retryable: true,
                }),
            };
            let error = match result {
                Ok(token) => {
                    let token = Arc::new(token);
                    slot.store(token.clone());
                    tenant.succeeded();
                    return Ok(token);
                }
                Err(error) => error,
            };
            let ended = Instant::now();
            // The HTTP client's own timeout is the same length and may fire
            // first: a retryable failure that used the whole budget was a cut
            // either way, so which timer won does not change the outcome.
            let was_cut = error.retryable() && ended.saturating_duration_since(sent_at) >= budget;
            if was_cut {
                cut += 1;
            }
            let tried = Tried {
                attempts: attempt,
                cut,
                last_cut: was_cut,
                waited: ended.saturating_duration_since(started),
                out_of_time: false,
            };
            if !error.retryable() || attempt >= FETCH_ATTEMPTS {
                break (error, tried);
            }
            // A host that let a request run out its time has had its pause;
            // a quick failure (refused, 5xx) waits, jittered (0.5×–1.5×) so
            // many proxies do not retry in step.
            let pause = if was_cut {
                Duration::ZERO
            } else {
                delay.mul_f64(0.5 + fastrand::f64())
            };
            // Counted from when a cut attempt was due to end, not from when
            // the timer got round to it: a few milliseconds of timer lag must
            // not cost the retry that `fetch_deadline` was sized for.
            let free_at = if was_cut { sent_at + budget } else { ended };
            if free_at + pause + limits.request_timeout > deadline {
                let tried = Tried {
                    out_of_time: true,
                    ..tried
                };
                break (error, tried);
            }
            tracing::warn!(tenant = %key.tenant, attempt, %error, "token request failed; retrying");
            tokio::time::sleep(pause).await;
            delay *= 2;
            attempt += 1;
        };
        let error = match error {
            _ if tried.last_cut => tried.no_answer(&tuning.source.target(key), &limits),
            // Quick failures retried: say so, the last one's words kept.
            TokenError::Unavailable {
                reason,
                retryable: true,
            } if tried.attempts > 1 => TokenError::Unavailable {
                reason: format!(
                    "{reason} ({} attempts in {})",
                    tried.attempts,
                    human(tenths(tried.waited))
                ),
                retryable: true,
            },
            error => error,
        };
        let now = Instant::now();
        match error {
            // No stored login is a state, not an event: readiness and the
            // status page say it; a probe every few seconds must not
            // write a warning each time.
            error @ TokenError::LoginRequired { .. } => {
                tracing::debug!(tenant = %key.tenant, %error, "no token: a login is needed");
                slot.note_error(&error, now);
                Err(slot.record_failure(error, now))
            }
            error => {
                tracing::warn!(
                    tenant = %key.tenant,
                    %error,
                    hint = error.hint(&key.tenant).unwrap_or_default(),
                    "token request failed"
                );
                slot.note_error(&error, now);
                Err(if error.is_tenant_wide() {
                    tenant.record_failure(error, now)
                } else {
                    slot.record_failure(error, now)
                })
            }
        }
    }
}

/// What a fetch tried, for the error it ends with when its last attempt
/// was cut: the last error alone ("timed out") would not say how long the
/// proxy waited, nor that it retried.
#[derive(Clone, Copy)]
struct Tried {
    attempts: u32,
    /// Attempts cut at `token.request_timeout`.
    cut: u32,
    last_cut: bool,
    waited: Duration,
    /// Stopped because another attempt could not finish within
    /// `token.fetch_deadline` (else: `FETCH_ATTEMPTS` were made).
    out_of_time: bool,
}

impl Tried {
    /// The 503 a client sees: how long, what was asked, how often.
    fn no_answer(&self, target: &str, limits: &Limits) -> TokenError {
        let within = if self.out_of_time {
            format!(
                "within token.fetch_deadline ({})",
                human(limits.fetch_deadline)
            )
        } else {
            format!("in {}", human(tenths(self.waited)))
        };
        let timeout = human(limits.request_timeout);
        let tried = match (self.attempts, self.cut) {
            (1, _) => format!("1 attempt, cut at token.request_timeout ({timeout})"),
            (n, c) if n == c => {
                format!("{n} attempts, each cut at token.request_timeout ({timeout})")
            }
            (n, c) => format!("{n} attempts, {c} of them cut at token.request_timeout ({timeout})"),
        };
        TokenError::Unavailable {
            reason: format!("no answer from {target} {within}: {tried}"),
            retryable: true,
        }
    }
}

/// Down to a tenth of a second: a wait measured to the nanosecond reads
/// `20s 3ms 41us 7ns`.
fn tenths(duration: Duration) -> Duration {
    let tenths = duration.as_millis() / 100;
    Duration::from_millis(u64::try_from(tenths * 100).unwrap_or(u64::MAX))
}

/// `10s`, `1m 30s`: durations as the config writes them.
fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

fn lease(token: Arc<Token>, outcome: Outcome) -> Lease {
    Lease { token, outcome }
}

#[cfg(test)]
mod tests;
