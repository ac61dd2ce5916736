//! The proxy's Redis client: one multiplexed connection (redis-rs's
//! `ConnectionManager`, which reconnects by itself), opened on first use so
//! that a Redis down at start costs nothing but its absence, and the few
//! operations the fleet needs — read, write with a time to live, and the
//! lock (`SET NX PX` with a random owner; renew and release only by that
//! owner, in Lua, so a lock that expired and went to another replica is
//! never touched), compare-and-delete of an entry, and a token bucket on
//! Redis' clock.
//!
//! Every operation ends within `redis.operation_timeout`. An error says
//! whether Redis could not be reached (then a replica goes on alone) or
//! was only slow (then a waiter waits and reads again).

use std::time::Duration;

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, TlsCertificates};

use super::health::Health;
use crate::config::RedisSettings;

/// What went wrong with a Redis operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// No connection: refused, dropped, or not opened within the timeout.
    #[error("Redis at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    /// Connected, but no answer within `redis.operation_timeout`.
    #[error("Redis at {url} did not answer within redis.operation_timeout ({})", humantime::format_duration(*.timeout))]
    Slow { url: String, timeout: Duration },
    /// Redis answered with an error (a refused ACL, a read-only replica…).
    #[error("Redis at {url} refused: {reason}")]
    Refused { url: String, reason: String },
    /// Another replica kept a token's lock for longer than a lease.
    #[error(
        "another replica has held this token's lock in Redis for more than redis.lock_timeout ({})",
        humantime::format_duration(*.0)
    )]
    LockHeld(Duration),
}

/// Deletes a key only while it holds exactly `ARGV[1]`: a lock its owner
/// releases, an entry that still holds a refused token.
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

/// Extends a lock only while `owner` holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Takes one token from a bucket of `ARGV[1]` (burst) regaining one every
/// `ARGV[2]` ms, on Redis' own clock (the replicas' may differ): 0 when
/// taken, else the milliseconds until one is back.
const ADMIT: &str = r"
local burst, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / interval)
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait = math.ceil((1 - tokens) * interval)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * interval) + 1000)
return wait";

/// Stores a login's next link (hash fields `v`: version, `s`: sealed) only
/// while the current version is `ARGV[1]` (`""`: whatever it is): the new
/// version, or -1 when another was stored first.
const SAVE_LINK: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] ~= '' and current ~= ARGV[1] then
    return -1
end
local version = (tonumber(current) or 0) + 1
redis.call('HSET', KEYS[1], 'v', version, 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return version";

/// A connection to the `[redis]` server, shared by every request.
#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    url: String,
    timeout: Duration,
    /// Told of every operation's outcome.
    health: Arc<Health>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The client for `settings`; connects on first use. Fails only on a
    /// URL redis-rs cannot use or an unreadable `ca_file`.
    pub fn new(settings: &RedisSettings, health: Arc<Health>) -> Result<Self, RedisError> {
        let url = settings.shown_url.clone();
        let refused = |reason: String| RedisError::Refused {
            url: url.clone(),
            reason,
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.expose())
            .map_err(|e| refused(e.to_string()))?;
        if let Some(password) = &settings.password {
            let mut redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            if let Some(user) = &settings.username {
                redis = redis.set_username(user);
            }
            info = info.set_redis_settings(redis);
        }
        let client = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    refused(format!("cannot read redis.ca_file {}: {e}", path.display()))
                })?;
                let certificates = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
            }
            None => Client::open(info),
        }
        .map_err(|e| refused(e.to_string()))?;
        let timeout = settings.operation_timeout;
        // Reconnects are tried quickly and a few times only: a request
        // never waits on them longer than the operation's timeout anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| refused(e.to_string()))?;
        Ok(Self {
            connection,
            url,
            timeout,
            health,
        })
    }

    /// The value of `name` and the time it has left, on Redis' own clock
    /// (one round trip; a replica's clock may be off).
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, Duration)>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("GET").arg(name).cmd("PTTL").arg(name);
        let mut connection = self.connection.clone();
        let query = pipe.query_async(&mut connection);
        let (value, ttl): (Option<Vec<u8>>, i64) = self.bounded("get", query).await?;
        // PTTL is -1 without a TTL and -2 when gone: neither is a live token.
        let left = u64::try_from(ttl).ok().map(Duration::from_millis);
        Ok(value.zip(left))
    }

    /// Stores `value` under `name` for `ttl` (at least a millisecond).
    pub async fn set(&self, name: &str, value: &[u8], ttl: Duration) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(name).arg(value).arg("PX").arg(millis(ttl));
        self.run::<()>("set", &cmd).await
    }

    /// Stores `value` under `name` for `ttl` unless something is there:
    /// whether it was stored.
    pub async fn set_new(
        &self,
        name: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        self.set_nx("set", name, value, ttl).await
    }

    /// Whether Redis answers (`PING`; see `probe`).
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run::<()>("ping", &redis::cmd("PING")).await
    }

    /// The value of `name`, deleted as it is read (`GETDEL`): for what is
    /// used once, such as a login waiting for its code.
    pub async fn take(&self, name: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(name);
        self.run("take", &cmd).await
    }

    /// Takes the lock `name` for `ttl` if nobody holds it: whether it was won.
    pub async fn lock(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, RedisError> {
        self.set_nx("lock", name, owner.as_bytes(), ttl).await
    }

    /// `SET name value NX PX ttl`, counted as `op`: whether it was set.
    async fn set_nx(
        &self,
        op: &'static str,
        name: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(name)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let reply: Option<String> = self.run(op, &cmd).await?;
        Ok(reply.is_some())
    }

    /// Extends the lock for `ttl` while `owner` still holds it.
    pub async fn renew(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, RedisError> {
        let script = Script::new(RENEW);
        let mut invocation = script.key(name);
        invocation.arg(owner).arg(millis(ttl));
        let renewed: i64 = self.script("renew", &invocation).await?;
        Ok(renewed == 1)
    }

    /// Releases the lock while `owner` still holds it.
    pub async fn release(&self, name: &str, owner: &str) -> Result<(), RedisError> {
        self.compare_and_delete("release", name, owner.as_bytes())
            .await
            .map(drop)
    }

    /// Deletes `name` only while it holds exactly `value`: whether it did.
    pub async fn delete_if(&self, name: &str, value: &[u8]) -> Result<bool, RedisError> {
        self.compare_and_delete("delete", name, value).await
    }

    /// [`DELETE_IF`], counted as `op`: whether `name` was deleted.
    async fn compare_and_delete(
        &self,
        op: &'static str,
        name: &str,
        value: &[u8],
    ) -> Result<bool, RedisError> {
        let script = Script::new(DELETE_IF);
        let mut invocation = script.key(name);
        invocation.arg(value);
        let deleted: i64 = self.script(op, &invocation).await?;
        Ok(deleted == 1)
    }

    /// A login's link under `name`: its version and sealed value.
    pub async fn link(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, RedisError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(name).arg("v").arg("s");
        let (version, sealed): (Option<u64>, Option<Vec<u8>>) = self.run("get", &cmd).await?;
        Ok(version.zip(sealed))
    }

    /// Stores `sealed` as the link after version `after` (`None`: after
    /// whatever is there), kept for `ttl`: the new version, or `None` when
    /// another link was stored first.
    pub async fn save_link(
        &self,
        name: &str,
        after: Option<u64>,
        sealed: &[u8],
        ttl: Duration,
    ) -> Result<Option<u64>, RedisError> {
        let script = Script::new(SAVE_LINK);
        let mut invocation = script.key(name);
        let expected = after.map(|v| v.to_string()).unwrap_or_default();
        invocation.arg(expected).arg(sealed).arg(millis(ttl));
        let version: i64 = self.script("set", &invocation).await?;
        Ok(u64::try_from(version).ok())
    }

    /// One token from the bucket `name` (`burst`, one regained per
    /// `interval`): `None` when taken, else how long until one is back.
    pub async fn admit(
        &self,
        name: &str,
        burst: u32,
        interval: Duration,
    ) -> Result<Option<Duration>, RedisError> {
        let script = Script::new(ADMIT);
        let mut invocation = script.key(name);
        invocation.arg(burst).arg(millis(interval));
        let wait: u64 = self.script("admit", &invocation).await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        let query = cmd.query_async(&mut connection);
        self.bounded(op, query).await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        let invoke = invocation.invoke_async(&mut connection);
        self.bounded(op, invoke).await
    }

    /// `operation` within the timeout, its outcome told to the health.
    async fn bounded<T>(
        &self,
        op: &'static str,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let result = match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(&error)),
            Err(_) => Err(RedisError::Slow {
                url: self.url.clone(),
                timeout: self.timeout,
            }),
        };
        self.health.record(op, &result);
        result
    }

    fn classify(&self, error: &redis::RedisError) -> RedisError {
        let url = self.url.clone();
        let reason = error.to_string();
        if error.is_timeout() {
            RedisError::Slow {
                url,
                timeout: self.timeout,
            }
        } else if error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
        {
            RedisError::Unreachable { url, reason }
        } else {
            RedisError::Refused { url, reason }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
