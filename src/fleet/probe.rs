//! A replica's own look at Redis: a `PING` every [`PROBE_EVERY`], from
//! start-up on, so that `sfmc_proxy_redis_up`, the down/back log lines and
//! readiness's `degraded` follow Redis within seconds — not only when a
//! token is looked up or refreshed, which a warm cache does about once per
//! token lifetime.

use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::client::Redis;

/// How often a replica pings Redis.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The pinging task of one configuration generation; it stops when the
/// generation is dropped (a reload made a new one, with its own).
pub struct Probe(AbortHandle);

impl Probe {
    /// Starts pinging `redis` (the first at once); `None` outside a tokio
    /// runtime (nothing to run it on).
    pub fn start(redis: Redis) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let task = runtime.spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // Recorded by the client, as every operation is.
                let _ = redis.ping().await;
            }
        });
        Some(Self(task.abort_handle()))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.abort();
    }
}
