//! Cache behaviour under paused tokio time with a scripted token source.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::SystemTime;

use super::*;
use crate::upstream::InstanceBase;

/// Hands out `token-1`, `token-2`, … after `latency`, or the scripted errors
/// first; keys whose MID is in `refused` always get that error.
struct ScriptedSource {
    calls: AtomicUsize,
    latency: Duration,
    expires_in: Duration,
    errors: Mutex<VecDeque<TokenError>>,
    refused: Mutex<Vec<(String, TokenError)>>,
}

impl ScriptedSource {
    fn new(latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            latency,
            expires_in: Duration::from_secs(1080),
            errors: Mutex::new(VecDeque::new()),
            refused: Mutex::new(Vec::new()),
        })
    }
    fn refuse_mid(&self, mid: &str, error: TokenError) {
        let mut refused = crate::sync::lock(&self.refused);
        refused.push((mid.to_owned(), error));
    }
    fn fail_next(&self, error: TokenError, times: usize) {
        let mut errors = crate::sync::lock(&self.errors);
        errors.extend(std::iter::repeat_n(error, times));
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenSource for ScriptedSource {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> FetchFuture<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.latency).await;
            let refused = crate::sync::lock(&self.refused)
                .iter()
                .find(|(mid, _)| key.account_id.as_deref() == Some(mid.as_str()))
                .map(|(_, error)| error.clone());
            if let Some(error) = refused {
                return Err(error);
            }
            if let Some(error) = crate::sync::lock(&self.errors).pop_front() {
                return Err(error);
            }
            Ok(FetchedToken {
                access_token: format!("token-{n}"),
                expires_in: self.expires_in,
                scope: None,
                rest_instance: InstanceBase::parse("http://127.0.0.1:1/", &[]).map_err(
                    |reason| TokenError::InstanceNotAllowed {
                        url: "http://127.0.0.1:1/".into(),
                        reason,
                    },
                )?,
                soap_instance: None,
            })
        })
    }

    fn target(&self, _key: &TokenKey) -> String {
        "POST http://127.0.0.1:1/v2/token".to_owned()
    }
}

fn key(mid: Option<&str>) -> TokenKey {
    TokenKey {
        tenant: Arc::from("acme"),
        account_id: mid.map(Arc::from),
        scope: None,
    }
}

fn rejected() -> TokenError {
    TokenError::Rejected {
        status: 401,
        error: "invalid_client".into(),
        description: Some("bad secret".into()),
        url: "http://127.0.0.1:1/v2/token".into(),
    }
}

/// Limits high enough that only the behaviour under test shows.
fn unlimited() -> Limits {
    Limits {
        rate_burst: 1_000_000,
        rate_interval: Duration::from_millis(1),
        max_keys: 1_000_000,
        ..Limits::default()
    }
}

fn cache(source: &Arc<ScriptedSource>) -> TokenCache {
    TokenCache::with_limits(source.clone(), Duration::from_secs(120), unlimited())
}

fn limited(source: &Arc<ScriptedSource>, limits: Limits) -> TokenCache {
    TokenCache::with_limits(source.clone(), Duration::from_secs(120), limits)
}

fn key_with(mid: &str, scope: &str) -> TokenKey {
    TokenKey {
        tenant: Arc::from("acme"),
        account_id: Some(Arc::from(mid)),
        scope: Some(Arc::from(scope)),
    }
}

fn refused(error: &str, description: &str) -> TokenError {
    TokenError::Rejected {
        status: 401,
        error: error.into(),
        description: Some(description.into()),
        url: "http://127.0.0.1:1/v2/token".into(),
    }
}

async fn token_of(cache: &TokenCache, key: &TokenKey) -> String {
    match cache.get(key).await {
        Ok(lease) => lease.token.access_token().to_owned(),
        Err(failure) => format!("error: {:?}", failure.error),
    }
}

#[tokio::test(start_paused = true)]
async fn sequential_requests_reuse_one_token() {
    let source = ScriptedSource::new(Duration::from_millis(50));
    let cache = cache(&source);
    for _ in 0..20 {
        assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    }
    assert_eq!(source.calls(), 1);
    let lease = cache.get(&key(None)).await.ok().map(|l| l.outcome);
    assert_eq!(lease, Some(Outcome::Hit));
}

#[tokio::test(start_paused = true)]
async fn five_hundred_concurrent_cold_requests_make_one_fetch() {
    let source = ScriptedSource::new(Duration::from_millis(300));
    let cache = cache(&source);
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { token_of(&cache, &key(None)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.ok().as_deref(), Some("token-1"));
    }
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn each_business_unit_has_its_own_token() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    assert_eq!(token_of(&cache, &key(Some("1"))).await, "token-1");
    assert_eq!(token_of(&cache, &key(Some("2"))).await, "token-2");
    assert_eq!(token_of(&cache, &key(Some("1"))).await, "token-1");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn expiry_is_counted_from_when_the_request_was_sent() {
    // Slow, but within token.request_timeout (10 s).
    let source = ScriptedSource::new(Duration::from_secs(9));
    let cache = cache(&source);
    let start = Instant::now();
    let lease = cache.get(&key(None)).await.expect("token");
    assert_eq!(lease.token.sent_at, start);
    assert_eq!(lease.token.expires_at, start + Duration::from_secs(1080));
}

#[tokio::test(start_paused = true)]
async fn token_is_refreshed_ahead_of_expiry_in_the_background() {
    let source = ScriptedSource::new(Duration::from_millis(10));
    let cache = cache(&source);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    // 1080 s lifetime, 120 s margin: fresh until 960 s after sending.
    tokio::time::advance(Duration::from_secs(950)).await;
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    assert_eq!(source.calls(), 1);
    tokio::time::advance(Duration::from_secs(15)).await;
    let stale = cache.get(&key(None)).await.expect("still valid");
    assert_eq!(stale.outcome, Outcome::Refresh);
    assert_eq!(
        stale.token.access_token(),
        "token-1",
        "the valid token is served meanwhile"
    );
    // Many callers in the refresh window start only one refresh.
    for _ in 0..10 {
        let _ = cache.get(&key(None)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(source.calls(), 2);
    assert_eq!(token_of(&cache, &key(None)).await, "token-2");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_never_served() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    source.fail_next(rejected(), 1);
    // Past the refresh point the background refresh fails; the old token stays usable.
    tokio::time::advance(Duration::from_secs(1000)).await;
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    // Paused clock: this sleep returns only once the refresh task is idle.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 2);
    // Once it expires the backoff window has passed; a fresh one is fetched.
    tokio::time::advance(Duration::from_secs(81)).await;
    assert_eq!(token_of(&cache, &key(None)).await, "token-3");
}

#[tokio::test(start_paused = true)]
async fn rejection_opens_a_growing_backoff_window_that_resets_on_success() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    source.fail_next(rejected(), 2);
    let first = cache.get(&key(None)).await.expect_err("rejected");
    assert_eq!(first.error, rejected());
    assert_eq!(first.retry_in, Duration::from_secs(5));
    // Within the window: same error, no new request.
    for _ in 0..10 {
        assert!(cache.get(&key(None)).await.is_err());
    }
    assert_eq!(source.calls(), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    let second = cache.get(&key(None)).await.expect_err("rejected again");
    assert_eq!(second.retry_in, Duration::from_secs(10), "window doubles");
    assert_eq!(source.calls(), 2);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(cache.get(&key(None)).await.is_err());
    assert_eq!(source.calls(), 2);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(token_of(&cache, &key(None)).await, "token-3");
    // Success resets: the next rejection starts again at the first window.
    let fresh = cache.get(&key(None)).await.expect("cached");
    cache.invalidate(&key(None), &fresh.token);
    source.fail_next(rejected(), 1);
    let again = cache.get(&key(None)).await.expect_err("rejected");
    assert_eq!(again.retry_in, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_then_reported_unavailable() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    let down = TokenError::Unavailable {
        reason: "connection refused".into(),
        retryable: true,
    };
    source.fail_next(down.clone(), 3);
    let failure = cache.get(&key(None)).await.expect_err("unavailable");
    assert_eq!(source.calls(), FETCH_ATTEMPTS as usize);
    let TokenError::Unavailable { reason, retryable } = &failure.error else {
        panic!("unavailable: {:?}", failure.error);
    };
    assert!(retryable);
    // The last error's words, and what was tried: 3 attempts, with jittered
    // pauses of 0.1–0.3 s and 0.2–0.6 s between them.
    assert!(
        reason.starts_with("connection refused (3 attempts in "),
        "{reason}"
    );
    assert!(reason.ends_with("ms)"), "{reason}");
    // A blip shorter than the retries is invisible to the caller.
    tokio::time::advance(Duration::from_secs(2)).await;
    source.fail_next(down, 1);
    assert_eq!(token_of(&cache, &key(None)).await, "token-5");
}

#[tokio::test(start_paused = true)]
async fn a_hung_auth_host_costs_a_caller_at_most_the_fetch_deadline() {
    // (fetch_deadline, how long the caller waits, attempts, what the 503 says)
    let cases = [
        (
            20,
            20,
            2,
            "within token.fetch_deadline (20s): 2 attempts, each cut",
        ),
        // A third attempt would end at 30 s, past the deadline: not sent.
        (
            25,
            20,
            2,
            "within token.fetch_deadline (25s): 2 attempts, each cut",
        ),
        (
            10,
            10,
            1,
            "within token.fetch_deadline (10s): 1 attempt, cut",
        ),
        // FETCH_ATTEMPTS bounds the attempts before the deadline does.
        (60, 30, 3, "in 30s: 3 attempts, each cut"),
    ];
    for (deadline, waited, attempts, said) in cases {
        let source = ScriptedSource::new(Duration::from_secs(3600));
        let limits = Limits {
            request_timeout: Duration::from_secs(10),
            fetch_deadline: Duration::from_secs(deadline),
            ..unlimited()
        };
        let cache = limited(&source, limits);
        let start = Instant::now();
        let failure = cache.get(&key(None)).await.expect_err("no answer");
        assert_eq!(start.elapsed(), Duration::from_secs(waited), "{deadline}s");
        assert_eq!(source.calls(), attempts, "{deadline}s");
        let TokenError::Unavailable { reason, retryable } = failure.error else {
            panic!("a hung host is unavailable: {:?}", failure.error);
        };
        assert!(retryable);
        assert!(
            reason.starts_with("no answer from POST http://127.0.0.1:1/v2/token "),
            "{reason}"
        );
        assert!(reason.contains(said), "{reason}");
        assert!(
            reason.ends_with("at token.request_timeout (10s)"),
            "{reason}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_within_the_request_timeout_is_taken() {
    let source = ScriptedSource::new(Duration::from_millis(9_999));
    let limits = Limits {
        request_timeout: Duration::from_secs(10),
        fetch_deadline: Duration::from_secs(10),
        ..unlimited()
    };
    let cache = limited(&source, limits);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_quick_failure_is_retried_only_if_the_retry_can_finish_in_time() {
    let down = TokenError::Unavailable {
        reason: "connection refused".into(),
        retryable: true,
    };
    // 10 s per attempt, 10 s in all: a retry after the backoff pause could
    // not finish in time, so the first error is the answer, at once.
    let source = ScriptedSource::new(Duration::ZERO);
    let limits = Limits {
        request_timeout: Duration::from_secs(10),
        fetch_deadline: Duration::from_secs(10),
        ..unlimited()
    };
    let cache = limited(&source, limits);
    source.fail_next(down.clone(), 1);
    let start = Instant::now();
    let failure = cache.get(&key(None)).await.expect_err("down");
    assert_eq!(failure.error, down, "not a cut: SFMC's own failure is told");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(source.calls(), 1);
}

/// A wall clock that moves only when told: a suspend is tokio's clock
/// standing still while this one jumps.
struct Wall(Mutex<SystemTime>);

impl Wall {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30),
        )))
    }
    fn jump(&self, by: Duration) {
        *crate::sync::lock(&self.0) += by;
    }
    fn clock(self: &Arc<Self>) -> WallClock {
        let wall = self.clone();
        Arc::new(move || *crate::sync::lock(&wall.0))
    }
}

fn waking(source: &Arc<ScriptedSource>, wall: &Arc<Wall>) -> TokenCache {
    TokenCache::with_wall_clock(
        source.clone(),
        Duration::from_secs(120),
        unlimited(),
        wall.clock(),
    )
}

#[tokio::test(start_paused = true)]
async fn after_a_suspend_past_expiry_the_next_get_fetches_a_new_token() {
    let source = ScriptedSource::new(Duration::ZERO);
    let wall = Wall::new();
    let cache = waking(&source, &wall);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    // The laptop sleeps 30 minutes: tokio's clock did not move, the wall
    // clock did, and the 18-minute token is dead at SFMC.
    wall.jump(Duration::from_secs(30 * 60));
    let lease = cache.get(&key(None)).await.expect("token");
    assert_eq!(lease.token.access_token(), "token-2", "not the stale one");
    assert_eq!(lease.outcome, Outcome::Fetch);
    assert_eq!(source.calls(), 2);
    // The new token is judged from its own send time: fresh again.
    let again = cache.get(&key(None)).await.expect("token");
    assert_eq!(again.outcome, Outcome::Hit);
}

#[tokio::test(start_paused = true)]
async fn after_a_suspend_into_the_refresh_window_the_next_get_refreshes() {
    let source = ScriptedSource::new(Duration::ZERO);
    let wall = Wall::new();
    let cache = waking(&source, &wall);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    // 1080 s lifetime, 120 s margin: 1000 s on is in the refresh window.
    wall.jump(Duration::from_secs(1000));
    let stale = cache.get(&key(None)).await.expect("still valid");
    assert_eq!(stale.outcome, Outcome::Refresh);
    assert_eq!(stale.token.access_token(), "token-1");
    // Paused clock: this sleep returns only once the refresh task is idle.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 2, "the background refresh saw it too");
    assert_eq!(token_of(&cache, &key(None)).await, "token-2");
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_set_back_does_not_keep_a_token_past_expiry() {
    let source = ScriptedSource::new(Duration::ZERO);
    let wall = Wall::new();
    let cache = waking(&source, &wall);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    // No jump at all on the wall clock (set back by as much as time
    // passed): tokio's clock alone still retires the token.
    tokio::time::advance(Duration::from_secs(1081)).await;
    assert_eq!(token_of(&cache, &key(None)).await, "token-2");
}

#[tokio::test(start_paused = true)]
async fn invalidate_drops_only_the_token_that_failed() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    let first = cache.get(&key(None)).await.expect("token").token;
    cache.invalidate(&key(None), &first);
    let second = cache.get(&key(None)).await.expect("token").token;
    assert_eq!(second.access_token(), "token-2");
    // A late 401 for the first token must not throw away the second.
    cache.invalidate(&key(None), &first);
    assert_eq!(token_of(&cache, &key(None)).await, "token-2");
    assert_eq!(source.calls(), 2);
}

#[test]
fn token_debug_output_hides_the_token() {
    let fetched = FetchedToken {
        access_token: "very-secret-token".into(),
        expires_in: Duration::from_secs(1080),
        scope: None,
        rest_instance: InstanceBase::parse("http://127.0.0.1:1/", &[]).expect("loopback"),
        soap_instance: None,
    };
    let now = Instant::now();
    let token =
        Token::new(fetched, now, SystemTime::now(), Duration::from_secs(120)).expect("valid");
    let debug = format!("{token:?}");
    assert!(!debug.contains("very-secret-token"), "{debug}");
    assert!(token.bearer().is_sensitive());
}

#[test]
fn an_absurd_lifetime_is_an_invalid_response_not_a_panic() {
    let fetched = FetchedToken {
        access_token: "t".into(),
        expires_in: Duration::from_secs(u64::MAX),
        scope: None,
        rest_instance: InstanceBase::parse("http://127.0.0.1:1/", &[]).expect("loopback"),
        soap_instance: None,
    };
    let made = Token::new(
        fetched,
        Instant::now(),
        SystemTime::now(),
        Duration::from_secs(120),
    );
    assert!(matches!(made, Err(TokenError::InvalidResponse(_))));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_does_not_cancel_the_fetch() {
    // A refresh whose caller disconnects must still finish and be stored:
    // SFMC rotates refresh tokens, so a half-done refresh loses the login.
    let source = ScriptedSource::new(Duration::from_secs(2));
    let cache = cache(&source);
    let gone = tokio::time::timeout(Duration::from_secs(1), cache.get(&key(None))).await;
    assert!(gone.is_err(), "the caller gave up before the fetch ended");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lease = cache.get(&key(None)).await.expect("token");
    assert_eq!(
        lease.outcome,
        Outcome::Hit,
        "the abandoned fetch was stored"
    );
    assert_eq!(lease.token.access_token(), "token-1");
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_secret_backs_off_every_key_of_the_tenant() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    source.fail_next(rejected(), 1000);
    for i in 0..80 {
        let failure = cache
            .get(&key_with(&format!("{i}"), &format!("scope_{i}")))
            .await
            .expect_err("rejected");
        assert_eq!(failure.error, rejected());
    }
    assert_eq!(source.calls(), 1, "one request for 80 keys");
    // Another tenant is not held back.
    let other = TokenKey {
        tenant: Arc::from("other"),
        account_id: None,
        scope: None,
    };
    assert!(cache.get(&other).await.is_err());
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_business_unit_backs_off_alone() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    let no_access = refused(
        "unauthorized_client",
        "Client does not have access to the requested account_id.",
    );
    source.refuse_mid("1", no_access.clone());
    source.refuse_mid("2", refused("invalid_client", "no access to account_id"));
    source.refuse_mid("3", refused("invalid_scope", "bad scope"));
    for mid in ["1", "2", "3"] {
        assert!(cache.get(&key(Some(mid))).await.is_err(), "{mid}");
        assert!(cache.get(&key(Some(mid))).await.is_err(), "{mid} backs off");
    }
    assert_eq!(source.calls(), 3, "each refused key asked once");
    assert_eq!(token_of(&cache, &key(Some("4"))).await, "token-4");
}

#[tokio::test(start_paused = true)]
async fn a_success_for_any_key_clears_the_tenant_wide_backoff() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = cache(&source);
    source.fail_next(rejected(), 2);
    let first = cache.get(&key(Some("1"))).await.expect_err("rejected");
    assert_eq!(first.retry_in, Duration::from_secs(5));
    assert!(cache.get(&key(Some("2"))).await.is_err(), "held back");
    tokio::time::advance(Duration::from_secs(5)).await;
    let second = cache.get(&key(Some("2"))).await.expect_err("again");
    assert_eq!(second.retry_in, Duration::from_secs(10), "the window grows");
    assert_eq!(source.calls(), 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(token_of(&cache, &key(Some("3"))).await, "token-3");
    // Cleared: key 1 asks at once, and a new refusal starts at 5 s again.
    source.fail_next(rejected(), 1);
    let again = cache.get(&key(Some("1"))).await.expect_err("rejected");
    assert_eq!(again.retry_in, Duration::from_secs(5));
    assert!(token_of(&cache, &key(Some("4"))).await.starts_with("error"));
    assert_eq!(source.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn token_requests_are_rate_limited_per_tenant_whatever_the_keys() {
    let source = ScriptedSource::new(Duration::ZERO);
    let cache = limited(&source, Limits::default());
    for mid in 1..=4 {
        assert_eq!(
            token_of(&cache, &key(Some(&mid.to_string()))).await,
            format!("token-{mid}")
        );
    }
    let held = cache.get(&key(Some("5"))).await.expect_err("held back");
    assert_eq!(source.calls(), 4, "SFMC was not asked");
    assert_eq!(held.retry_in, Duration::from_secs(5));
    let TokenError::Unavailable {
        reason: message, ..
    } = held.error
    else {
        panic!("held back is unavailable: {:?}", held.error);
    };
    assert!(
        message.contains("rate limit") && message.contains("token.rate_burst"),
        "{message}"
    );
    assert!(message.contains("token.rate_interval"), "{message}");
    // Not a backoff: the key asks as soon as the bucket has a token again.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(token_of(&cache, &key(Some("5"))).await, "token-5");
    assert!(cache.get(&key(Some("6"))).await.is_err());
    // The cached ones keep being served.
    assert_eq!(token_of(&cache, &key(Some("1"))).await, "token-1");
}

#[tokio::test(start_paused = true)]
async fn background_refreshes_respect_the_rate_limit_and_keep_serving() {
    let source = ScriptedSource::new(Duration::ZERO);
    let limits = Limits {
        rate_burst: 2,
        rate_interval: Duration::from_secs(600),
        ..Limits::default()
    };
    let cache = limited(&source, limits);
    let (a, b) = (key(Some("1")), key(Some("2")));
    assert_eq!(token_of(&cache, &a).await, "token-1");
    assert_eq!(token_of(&cache, &b).await, "token-2");
    // Both stale; one request regained since: A's refresh takes it.
    tokio::time::advance(Duration::from_secs(961)).await;
    assert_eq!(token_of(&cache, &a).await, "token-1");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 3);
    assert_eq!(token_of(&cache, &a).await, "token-3");
    // B's refresh is held back; its still-valid token keeps being served.
    let stale = cache.get(&b).await.expect("still valid");
    assert_eq!(stale.outcome, Outcome::Refresh);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 3, "the refresh was held back");
    assert_eq!(token_of(&cache, &b).await, "token-2");
    // The next request is regained at t = 1200 s (600 s after the one regained
    // at 600 s); B's token has expired by then and is fetched anew.
    tokio::time::advance(Duration::from_secs(238)).await;
    assert!(cache.get(&b).await.is_err(), "expired, and still held back");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(token_of(&cache, &b).await, "token-4");
}

#[tokio::test(start_paused = true)]
async fn the_key_map_is_bounded_and_evicts_the_least_recently_used_idle_key() {
    let source = ScriptedSource::new(Duration::ZERO);
    let limits = Limits {
        max_keys: 3,
        ..unlimited()
    };
    let cache = limited(&source, limits);
    for mid in ["1", "2", "3"] {
        assert!(cache.get(&key(Some(mid))).await.is_ok());
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    // 1 is used again, so 2 is the least recently used.
    assert_eq!(token_of(&cache, &key(Some("1"))).await, "token-1");
    tokio::time::advance(Duration::from_millis(10)).await;
    assert_eq!(token_of(&cache, &key(Some("4"))).await, "token-4");
    assert_eq!(cache.inner.slots.len(), 3);
    assert!(!cache.inner.slots.contains_key(&key(Some("2"))));
    assert_eq!(token_of(&cache, &key(Some("1"))).await, "token-1", "kept");
    assert_eq!(token_of(&cache, &key(Some("3"))).await, "token-3", "kept");
}

#[tokio::test(start_paused = true)]
async fn a_full_key_map_with_every_key_fetching_refuses_naming_max_keys() {
    let source = ScriptedSource::new(Duration::from_secs(10));
    let limits = Limits {
        max_keys: 2,
        ..unlimited()
    };
    let cache = limited(&source, limits);
    let busy: Vec<_> = ["1", "2"]
        .into_iter()
        .map(|mid| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&key(Some(mid))).await.is_ok() })
        })
        .collect();
    // Until both fetches are in flight (the source counts them on entry).
    while source.calls() < 2 {
        tokio::task::yield_now().await;
    }
    let full = cache.get(&key(Some("3"))).await.expect_err("full");
    let TokenError::Unavailable { reason, .. } = full.error else {
        panic!("a full cache is unavailable: {:?}", full.error);
    };
    assert!(reason.contains("token.max_keys"), "{reason}");
    for task in busy {
        assert!(task.await.unwrap_or(false));
    }
    // Idle again: room is made.
    assert!(cache.get(&key(Some("3"))).await.is_ok());
    assert_eq!(cache.inner.slots.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn try_get_never_joins_a_fetch_in_flight_and_sends_nothing_in_backoff() {
    let source = ScriptedSource::new(Duration::from_secs(3));
    let cache = cache(&source);
    // The first call starts the fetch, holding its lock before it returns.
    let Attempt::Started(fetch) = cache.try_get(&key(None)) else {
        panic!("nothing cached, nothing in flight: a fetch starts");
    };
    // Later callers are told a fetch is in flight, with no failure yet.
    assert!(matches!(
        cache.try_get(&key(None)),
        Attempt::Busy { last: None, .. }
    ));
    assert_eq!(fetch.finish().await.expect("token").outcome, Outcome::Fetch);
    assert_eq!(source.calls(), 1);
    let Attempt::Done(Ok(lease)) = cache.try_get(&key(None)) else {
        panic!("a cached token is answered at once");
    };
    assert_eq!(lease.outcome, Outcome::Hit);

    // A refusal: answered from the backoff window, nothing sent.
    source.fail_next(rejected(), 2);
    let Attempt::Started(fetch) = cache.try_get(&key(Some("200"))) else {
        panic!("a new key is fetched");
    };
    assert!(fetch.finish().await.is_err());
    for _ in 0..5 {
        assert!(matches!(
            cache.try_get(&key(Some("200"))),
            Attempt::Done(Err(_))
        ));
    }
    assert_eq!(source.calls(), 2);
    // Once the window is over, a fetch in flight reports the last refusal.
    tokio::time::advance(Duration::from_secs(5)).await;
    let Attempt::Started(again) = cache.try_get(&key(Some("200"))) else {
        panic!("the window is over: fetched again");
    };
    let Attempt::Busy {
        last: Some(last), ..
    } = cache.try_get(&key(Some("200")))
    else {
        panic!("busy, with the last refusal");
    };
    assert_eq!(last.error, rejected());
    assert!(again.finish().await.is_err());
    assert_eq!(source.calls(), 3);
}

mod ledger;
