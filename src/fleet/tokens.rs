//! One access token per (tenant, business unit, scope) for the whole fleet:
//! [`SharedTokens`] is the token source the cache asks on a miss or a
//! refresh when `[redis]` is set. It stands in front of SFMC's `/v2/token`
//! client:
//!
//! 1. A sealed entry in Redis that is still fresh (outside the refresh
//!    window) is the token: no request to SFMC, and (asked through
//!    `TokenSource::find`) nothing taken from the tenant's rate limit.
//! 2. Else the replica takes the key's lock (`SET NX PX`, a random owner,
//!    `redis.lock_timeout`, renewed while the request runs), reads the entry
//!    once more (another replica may have just written it), asks SFMC, writes
//!    the token sealed with a time to live of its lifetime, and releases the
//!    lock. Replicas that did not win wait (polling every 25–100 ms,
//!    jittered) for the winner's token — or for the lock to free, when the
//!    winner died — while the cache in front of them goes on serving the
//!    current token where it is still valid.
//!    Before asking SFMC, the winner takes one of the tenant's token
//!    requests from the fleet's bucket (`token.rate_burst` per
//!    `token.rate_interval` for all replicas together); an empty bucket
//!    answers `token_unavailable` without a request.
//!    SFMC's refusal of that request (a rejected package, a login that is
//!    over) is shared for a few seconds too, so the waiting replicas answer
//!    with it instead of asking again.
//! 3. A token SFMC refused (a 401 or `Token Expired` on this replica) is
//!    deleted from Redis only while the entry still holds it
//!    (compare-and-delete) before the next read, so a revocation costs the
//!    fleet one new token.
//!
//! Redis that cannot be reached sends the replica to SFMC on its own (the
//! cache's single flight and the tenant's rate limit still bound it) —
//! except for a login tenant (authorization code), whose refresh-token
//! chain is the fleet's (`chains`): it does not refresh alone, and serves
//! its current token until that expires. Redis that is only slow makes a
//! waiter read again, a few times.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::client::{Redis, RedisError};
use super::seal::Sealer;
use crate::config::{Grant, Settings, Tenant};
use crate::token::{FetchFuture, FetchedToken, FindFuture, TokenError, TokenKey, TokenSource};
use crate::upstream::InstanceBase;

/// A waiter's pause between two reads, at least and at most (jittered, so
/// replicas do not read in step).
const POLL_MIN: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(100);

/// How long the canary lives (each generation's first fetch looks at it;
/// one that expired is written again).
const CANARY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long SFMC's refusal is shared: the first window of the cache's own
/// backoff after a refusal.
const FAILURE_TTL: Duration = Duration::from_secs(5);

/// SFMC's refusal of a fetch, as shared (sealed: its words may name the
/// package).
#[derive(Serialize, Deserialize)]
enum Refusal {
    Rejected {
        status: u16,
        error: String,
        description: Option<String>,
        url: String,
    },
    LoginRequired {
        reason: String,
        command: String,
    },
}

/// What is sealed under a token's name (its expiry is the entry's TTL).
#[derive(Serialize, Deserialize)]
struct Entry {
    access_token: String,
    scope: Option<String>,
    rest_instance: String,
    soap_instance: Option<String>,
}

/// The fleet's token source (see the module's docs).
pub struct SharedTokens {
    sfmc: Arc<dyn TokenSource>,
    redis: Redis,
    sealer: Arc<Sealer>,
    settings: Arc<Settings>,
    lock_timeout: Duration,
    /// A token entry this replica read or wrote, by key: the sealed bytes,
    /// and the token in them, so that a refusal can delete exactly it.
    seen: DashMap<TokenKey, Seen>,
    /// Whether the canary was looked at (`check_canary`).
    canary: tokio::sync::OnceCell<()>,
}

/// Where one key's fleet state lives in Redis.
struct Names {
    entry: String,
    /// The entry as `redis.previous_encryption_key` named it, if set.
    previous: Option<String>,
    lock: String,
    /// The tenant's token bucket, shared by all its keys.
    budget: String,
    /// SFMC's refusal of the last fetch, for a few seconds.
    failure: String,
}

#[derive(Clone)]
struct Seen {
    sealed: Arc<Vec<u8>>,
    access_token: Arc<str>,
    /// SFMC refused this token: the next fetch deletes the entry if it
    /// still holds it, and does not serve it.
    refused: bool,
}

impl SharedTokens {
    pub fn new(
        sfmc: Arc<dyn TokenSource>,
        redis: Redis,
        sealer: Arc<Sealer>,
        settings: Arc<Settings>,
    ) -> Self {
        let lock_timeout = settings
            .redis
            .as_ref()
            .map_or(Duration::from_secs(10), |redis| redis.lock_timeout);
        Self {
            sfmc,
            redis,
            sealer,
            lock_timeout,
            settings,
            seen: DashMap::new(),
            canary: tokio::sync::OnceCell::new(),
        }
    }

    /// The Redis names of `key`'s token and lock, bound to the package
    /// (auth URL, client id) as well as the key.
    fn names(&self, tenant: &Tenant, key: &TokenKey) -> Names {
        let parts = [
            &*key.tenant,
            tenant.token_url.as_str(),
            tenant.client_id.as_str(),
            key.account_id.as_deref().unwrap_or(""),
            key.scope.as_deref().unwrap_or(""),
        ];
        Names {
            entry: self.sealer.name("token", &parts),
            previous: self.sealer.previous_name("token", &parts),
            lock: self.sealer.name("lock", &parts),
            failure: self.sealer.name("failure", &parts),
            budget: self.sealer.name("budget", &parts[..3]),
        }
    }

    /// The fleet's fresh token for `key`, if Redis has one (one read).
    async fn find_shared(&self, key: &TokenKey) -> Option<FetchedToken> {
        let tenant = self.settings.tenant(&key.tenant)?;
        self.read(&self.names(tenant, key), key)
            .await
            .ok()
            .flatten()
    }

    /// Once per generation, at its first fetch: the canary under the
    /// prefix, written if missing; one sealed with another key means
    /// replicas that do not share (a warning says what to fix).
    async fn check_canary(&self) {
        self.canary
            .get_or_init(|| async {
                let name = self.sealer.canary_name();
                let mine = self.sealer.seal(&name, b"sfmc-proxy fleet");
                let theirs = match self.redis.get(&name).await {
                    Ok(Some((value, _))) => value,
                    Ok(None) => {
                        let _ = self.redis.set_new(&name, &mine, CANARY_TTL).await;
                        return;
                    }
                    Err(_) => return,
                };
                if self.sealer.opens_with_current(&name, &theirs) {
                    return;
                }
                if self.sealer.open(&name, &theirs).is_some() {
                    // Sealed with redis.previous_encryption_key: a rotation;
                    // the canary moves to the new key.
                    let _ = self.redis.set(&name, &mine, CANARY_TTL).await;
                    return;
                }
                tracing::warn!(
                    prefix = %self.settings.redis.as_ref().map_or("", |r| r.key_prefix.as_str()),
                    "another replica shares this Redis and redis.key_prefix with a different redis.encryption_key: the two do not share tokens, and SDK tools' local tokens from one are refused by the other; give every replica the same key (or another key_prefix)"
                );
            })
            .await;
    }

    async fn fetch_shared(&self, key: &TokenKey) -> Result<FetchedToken, TokenError> {
        self.check_canary().await;
        let Some(tenant) = self.settings.tenant(&key.tenant).cloned() else {
            return self.sfmc.fetch(key).await;
        };
        match self.through_redis(&tenant, key).await {
            Ok(answer) => answer,
            // A login's chain is the fleet's: refreshing it alone would
            // redeem a refresh token Redis holds. The cache serves the
            // current token until it expires.
            Err(error) if tenant.grant != Grant::ClientCredentials => {
                Err(TokenError::Unavailable {
                    reason: format!(
                        "{error}; tenant `{}`'s login (its refresh token) is kept in Redis, so this replica does not refresh it alone",
                        tenant.name
                    ),
                    retryable: false,
                })
            }
            Err(error) => {
                tracing::warn!(
                    tenant = %key.tenant,
                    error = %error,
                    "fetching this token without the fleet"
                );
                self.sfmc.fetch(key).await
            }
        }
    }

    /// Steps 1 and 2 of the module's docs: the fleet's token, or SFMC's
    /// answer to this replica's request for it. `Err` only when Redis
    /// cannot be reached (or refuses), so that the replica goes on alone.
    async fn through_redis(
        &self,
        tenant: &Tenant,
        key: &TokenKey,
    ) -> Result<Result<FetchedToken, TokenError>, RedisError> {
        let names = self.names(tenant, key);
        let owner = owner();
        let mut patience = Patience::new(self.lock_timeout);
        loop {
            match self.read(&names, key).await {
                Ok(Some(fetched)) => return Ok(Ok(fetched)),
                // The replica that just asked SFMC was refused: the same
                // answer, without asking again.
                Ok(None) => {
                    if let Some(refused) = self.read_failure(&names.failure).await {
                        return Ok(Err(refused));
                    }
                }
                Err(error) => {
                    patience.slow(error)?;
                    continue;
                }
            }
            match self
                .redis
                .lock(&names.lock, &owner, self.lock_timeout)
                .await
            {
                Ok(true) => return Ok(self.fetch_holding(&names, &owner, key).await),
                Ok(false) => patience.held()?,
                Err(error) => patience.slow(error)?,
            }
            pause().await;
        }
    }

    /// With the lock won: read once more, else ask SFMC (renewing the lock
    /// meanwhile), store what it gave, release. SFMC's refusal is the
    /// answer for the fleet too: passed on (the cache backs off), not stored.
    async fn fetch_holding(
        &self,
        names: &Names,
        owner: &str,
        key: &TokenKey,
    ) -> Result<FetchedToken, TokenError> {
        let lock = names.lock.as_str();
        // Released however this ends, a cancelled fetch (the cache's
        // timeout, a client gone) included: others must not wait out the lease.
        let mut held = Held {
            redis: &self.redis,
            lock,
            owner,
            released: false,
        };
        if let Ok(Some(fetched)) = self.read(names, key).await {
            held.release().await;
            return Ok(fetched);
        }
        if let Err(held_back) = self.admit(&names.budget).await {
            held.release().await;
            return Err(held_back);
        }
        let fetch = self.sfmc.fetch(key);
        tokio::pin!(fetch);
        let mut renewal = tokio::time::interval(self.lock_timeout / 3);
        renewal.tick().await; // the first tick is at once: the lock is new
        let fetched = loop {
            tokio::select! {
                fetched = &mut fetch => break fetched,
                _ = renewal.tick() => {
                    let _ = self.redis.renew(lock, owner, self.lock_timeout).await;
                }
            }
        };
        match &fetched {
            Ok(fetched) => self.write(&names.entry, key, fetched).await,
            Err(error) => self.write_failure(&names.failure, error).await,
        }
        held.release().await;
        fetched
    }

    /// One of the tenant's token requests from the fleet's bucket
    /// (`token.rate_burst`, one regained per `token.rate_interval`, counted
    /// in Redis for every replica together). A Redis that does not answer
    /// holds nothing back: each replica's own bucket still applies.
    async fn admit(&self, budget: &str) -> Result<(), TokenError> {
        let token = &self.settings.token;
        match self
            .redis
            .admit(budget, token.rate_burst, token.rate_interval)
            .await
        {
            Ok(Some(wait)) => Err(TokenError::Unavailable {
                reason: format!(
                    "held back by the fleet's token rate limit (token.rate_burst = {} per token.rate_interval = {}, counted over every replica); one more may be sent in {}",
                    token.rate_burst,
                    humantime::format_duration(token.rate_interval),
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                ),
                retryable: false,
            }),
            Ok(None) | Err(_) => Ok(()),
        }
    }

    /// The fleet's token for `key`: under the current key's name, else
    /// (during a rotation) under the previous key's.
    async fn read(
        &self,
        names: &Names,
        key: &TokenKey,
    ) -> Result<Option<FetchedToken>, RedisError> {
        if let Some(fetched) = self.read_one(&names.entry, key).await? {
            return Ok(Some(fetched));
        }
        match &names.previous {
            Some(previous) => self.read_one(previous, key).await,
            None => Ok(None),
        }
    }

    /// The entry `name`, if it is one of ours, holds a token this replica
    /// was not told is refused, and is outside the refresh window.
    async fn read_one(
        &self,
        name: &str,
        key: &TokenKey,
    ) -> Result<Option<FetchedToken>, RedisError> {
        let Some((sealed, remaining)) = self.redis.get(name).await? else {
            return Ok(None);
        };
        let refused = self
            .seen
            .get(key)
            .filter(|seen| seen.refused && *seen.sealed == sealed)
            .is_some();
        if refused {
            // Only while it still holds the refused token: another replica
            // may have put a new one there since.
            self.redis.delete_if(name, &sealed).await?;
            return Ok(None);
        }
        let Some(entry) = self.open(name, &sealed) else {
            return Ok(None);
        };
        // The entry's TTL is the token's lifetime, counted on Redis' clock.
        if remaining <= self.settings.token.refresh_before_expiry {
            return Ok(None);
        }
        let allowed = &self.settings.upstream.allowed_instance_hosts;
        let Ok(rest_instance) = InstanceBase::parse(&entry.rest_instance, allowed) else {
            return Ok(None);
        };
        let soap_instance = match entry.soap_instance.as_deref() {
            Some(url) => match InstanceBase::parse(url, allowed) {
                Ok(instance) => Some(instance),
                Err(_) => return Ok(None),
            },
            None => None,
        };
        self.seen.insert(
            key.clone(),
            Seen {
                sealed: Arc::new(sealed),
                access_token: Arc::from(entry.access_token.as_str()),
                refused: false,
            },
        );
        Ok(Some(FetchedToken {
            access_token: entry.access_token,
            expires_in: remaining,
            scope: entry.scope,
            rest_instance,
            soap_instance,
        }))
    }

    /// SFMC's refusal another replica met moments ago, if any.
    async fn read_failure(&self, name: &str) -> Option<TokenError> {
        let (sealed, _) = self.redis.get(name).await.ok().flatten()?;
        let plain = self.sealer.open(name, &sealed)?;
        match serde_json::from_slice::<Refusal>(&plain).ok()? {
            Refusal::Rejected {
                status,
                error,
                description,
                url,
            } => Some(TokenError::Rejected {
                status,
                error,
                description,
                url,
            }),
            Refusal::LoginRequired { reason, command } => {
                Some(TokenError::LoginRequired { reason, command })
            }
        }
    }

    /// Shares SFMC's refusal (not an outage: that one is each replica's to
    /// retry) for [`FAILURE_TTL`], so that waiting replicas do not ask again.
    async fn write_failure(&self, name: &str, error: &TokenError) {
        let refusal = match error {
            TokenError::Rejected {
                status,
                error,
                description,
                url,
            } => Refusal::Rejected {
                status: *status,
                error: error.clone(),
                description: description.clone(),
                url: url.clone(),
            },
            TokenError::LoginRequired { reason, command } => Refusal::LoginRequired {
                reason: reason.clone(),
                command: command.clone(),
            },
            _ => return,
        };
        let Ok(plain) = serde_json::to_vec(&refusal) else {
            return;
        };
        let sealed = self.sealer.seal(name, &plain);
        if !sealed.is_empty() {
            let _ = self.redis.set(name, &sealed, FAILURE_TTL).await;
        }
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Option<Entry> {
        let plain = self.sealer.open(name, sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Stores `fetched` for the fleet, for as long as it lives. A failure
    /// costs only the sharing: this replica has its token.
    async fn write(&self, name: &str, key: &TokenKey, fetched: &FetchedToken) {
        let entry = Entry {
            access_token: fetched.access_token.clone(),
            scope: fetched.scope.clone(),
            rest_instance: fetched.rest_instance.to_string(),
            soap_instance: fetched.soap_instance.as_ref().map(ToString::to_string),
        };
        let Ok(plain) = serde_json::to_vec(&entry) else {
            return;
        };
        let sealed = self.sealer.seal(name, &plain);
        if sealed.is_empty() {
            return;
        }
        match self.redis.set(name, &sealed, fetched.expires_in).await {
            Ok(()) => {
                self.seen.insert(
                    key.clone(),
                    Seen {
                        sealed: Arc::new(sealed),
                        access_token: Arc::from(fetched.access_token.as_str()),
                        refused: false,
                    },
                );
            }
            Err(error) => tracing::warn!(
                tenant = %key.tenant,
                error = %error,
                "could not share a new token through Redis; other replicas will fetch their own"
            ),
        }
    }
}

impl TokenSource for SharedTokens {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> FetchFuture<'a> {
        Box::pin(self.fetch_shared(key))
    }

    fn target(&self, key: &TokenKey) -> String {
        self.sfmc.target(key)
    }

    fn find<'a>(&'a self, key: &'a TokenKey) -> FindFuture<'a> {
        Box::pin(self.find_shared(key))
    }

    fn refused(&self, key: &TokenKey, access_token: &str) {
        if let Some(mut seen) = self.seen.get_mut(key)
            && *seen.access_token == *access_token
        {
            seen.refused = true;
        }
    }
}

/// How long a replica keeps waiting on the fleet before it goes on alone:
/// a few slow Redis answers in a row (a Redis that drops packets answers
/// none), or a lock held longer than a lease (its holder is stuck or gone
/// and its renewals keep it). An unreachable or refusing Redis: at once.
struct Patience {
    slow_in_a_row: u32,
    lease: Duration,
    until: tokio::time::Instant,
}

/// Slow Redis answers in a row taken before going on alone.
const SLOW_ANSWERS: u32 = 3;

impl Patience {
    fn new(lock_timeout: Duration) -> Self {
        Self {
            slow_in_a_row: 0,
            lease: lock_timeout,
            until: tokio::time::Instant::now() + lock_timeout,
        }
    }

    /// A Redis error: wait again (a slow answer, not too many), or give up.
    fn slow(&mut self, error: RedisError) -> Result<(), RedisError> {
        match error {
            RedisError::Slow { .. } if self.slow_in_a_row + 1 < SLOW_ANSWERS => {
                self.slow_in_a_row += 1;
                Ok(())
            }
            error => Err(error),
        }
    }

    /// The lock is someone else's: wait again, unless for longer than a lease.
    fn held(&mut self) -> Result<(), RedisError> {
        self.slow_in_a_row = 0;
        if tokio::time::Instant::now() < self.until {
            return Ok(());
        }
        Err(RedisError::LockHeld(self.lease))
    }
}

/// A lock this replica holds: released by `release`, or on drop by a task
/// of its own (Drop cannot wait).
struct Held<'a> {
    redis: &'a Redis,
    lock: &'a str,
    owner: &'a str,
    released: bool,
}

impl Held<'_> {
    async fn release(&mut self) {
        self.released = true;
        let _ = self.redis.release(self.lock, self.owner).await;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (redis, lock, owner) = (
            self.redis.clone(),
            self.lock.to_owned(),
            self.owner.to_owned(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = redis.release(&lock, &owner).await;
            });
        }
    }
}

async fn pause() {
    let span = (POLL_MAX - POLL_MIN).as_millis() as u64;
    let wait = POLL_MIN + Duration::from_millis(fastrand::u64(..=span));
    tokio::time::sleep(wait).await;
}

/// A lock owner no other replica or fetch will draw.
fn owner() -> String {
    format!("{:032x}", fastrand::u128(..))
}
