//! Whether Redis answers, as every operation finds it: `sfmc_proxy_redis_up`
//! (1 after an operation succeeded, 0 after one could not reach Redis or
//! got no answer in time), `sfmc_proxy_redis_errors_total{op}`, one log
//! line per change (down with why, back), and the reason readiness shows
//! while it is down (`degraded`: the replica serves, each fetching alone).
//!
//! One `Health` for the process: it outlives configuration generations, as
//! the metrics do.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::client::RedisError;

/// The operation a Redis error happened in (the `op` label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

/// Redis' state, for metrics, logs and readiness.
#[derive(Debug, Default)]
pub struct Health {
    /// 1 while Redis answers (also before the first operation).
    pub up: Gauge,
    pub errors: Family<OpLabels, Counter>,
    /// Why Redis is down, while it is; `None` while it answers.
    down: Mutex<Option<String>>,
}

impl Health {
    pub fn new() -> Self {
        let health = Self::default();
        health.up.set(1);
        health
    }

    /// An operation `op` ended with `result`.
    pub fn record<T>(&self, op: &'static str, result: &Result<T, RedisError>) {
        let error = match result {
            Ok(_) => {
                let was = crate::sync::lock(&self.down).take();
                if let Some(reason) = was {
                    self.up.set(1);
                    tracing::info!(was = %reason, "Redis answers again; tokens are shared by the fleet again");
                }
                return;
            }
            Err(error) => error,
        };
        self.errors.get_or_create(&OpLabels { op }).inc();
        // A refusal (an ACL, a read-only replica) is Redis answering: counted,
        // and logged where it happens, but Redis is up.
        if matches!(error, RedisError::Refused { .. } | RedisError::LockHeld(_)) {
            return;
        }
        let mut down = crate::sync::lock(&self.down);
        if down.is_none() {
            self.up.set(0);
            tracing::warn!(
                error = %error,
                "Redis is down; each replica fetches its own tokens until it answers again"
            );
        }
        *down = Some(error.to_string());
    }

    /// Why Redis is down, while it is.
    pub fn down(&self) -> Option<String> {
        crate::sync::lock(&self.down).clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn unreachable() -> Result<(), RedisError> {
        Err(RedisError::Unreachable {
            url: "redis://r/0".into(),
            reason: "connection refused".into(),
        })
    }

    #[test]
    fn down_on_no_answer_up_on_the_next_success_counting_each_error() {
        let health = Health::new();
        assert_eq!((health.up.get(), health.down()), (1, None));
        health.record("get", &unreachable());
        health.record(
            "lock",
            &Err::<(), _>(RedisError::Slow {
                url: "redis://r/0".into(),
                timeout: Duration::from_millis(250),
            }),
        );
        assert_eq!(health.up.get(), 0);
        let down = health.down().unwrap_or_default();
        assert!(down.contains("did not answer within"), "{down}");
        assert_eq!(
            health.errors.get_or_create(&OpLabels { op: "get" }).get(),
            1
        );
        assert_eq!(
            health.errors.get_or_create(&OpLabels { op: "lock" }).get(),
            1
        );
        health.record("get", &Ok(()));
        assert_eq!((health.up.get(), health.down()), (1, None));
    }

    #[test]
    fn a_refusal_is_counted_but_redis_is_up() {
        let health = Health::new();
        health.record(
            "set",
            &Err::<(), _>(RedisError::Refused {
                url: "redis://r/0".into(),
                reason: "NOPERM".into(),
            }),
        );
        assert_eq!((health.up.get(), health.down()), (1, None));
        assert_eq!(
            health.errors.get_or_create(&OpLabels { op: "set" }).get(),
            1
        );
    }
}
