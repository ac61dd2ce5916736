//! The gauges read at scrape time: per tenant and business unit, when its
//! token expires and when a token was last had or last failed (wall-clock
//! Unix seconds, so `time() - x` works in PromQL); the broker's live local
//! tokens; and the log lines the log writer dropped (it counts them itself).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use tokio::time::Instant;

use super::labels::{KeyLabels, Names};
use crate::token::TokenCache;

pub struct StateCollector {
    pub tokens: TokenCache,
    pub names: Arc<Names>,
    pub broker_tokens: Box<dyn Fn() -> usize + Send + Sync>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

/// Per tenant and MID, the latest of each time over its keys (scopes).
#[derive(Default)]
struct KeyTimes {
    expiry: Option<f64>,
    last_success: Option<f64>,
    last_error: Option<f64>,
}

/// One of [`KeyTimes`]' times, for the gauge of that name.
type Pick = fn(&KeyTimes) -> Option<f64>;

fn later(slot: &mut Option<f64>, value: Option<f64>) {
    if let Some(value) = value {
        *slot = Some(slot.map_or(value, |old| old.max(value)));
    }
}

/// `at` (the cache's clock) as Unix seconds: the cache's clock is tokio's
/// (paused in tests), so the wall clock is taken now and moved by the
/// difference.
fn unix_seconds(at: Instant, now: Instant, wall: f64) -> f64 {
    if at >= now {
        wall + (at - now).as_secs_f64()
    } else {
        wall - (now - at).as_secs_f64()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let at = |instant: Instant| unix_seconds(instant, now, wall);
        let mut keys: BTreeMap<(String, String), (KeyLabels, KeyTimes)> = BTreeMap::new();
        for view in self.tokens.keys() {
            let tenant = self.names.tenant(Some(&view.key.tenant));
            let mid = self.names.mid(&tenant, view.key.account_id.as_deref());
            let id = (tenant.as_str().to_owned(), mid.as_str().to_owned());
            let (_, times) = keys
                .entry(id)
                .or_insert_with(|| (KeyLabels { tenant, mid }, KeyTimes::default()));
            // Also once it has expired: the series stays (in the past), so
            // `expiry - time() < 60` stays true instead of vanishing.
            later(
                &mut times.expiry,
                view.token.as_ref().map(|t| at(t.expires_at)),
            );
            later(&mut times.last_success, view.last_success.map(at));
            later(
                &mut times.last_error,
                view.last_error.map(|(when, _)| at(when)),
            );
        }
        let gauges: [(&str, &str, Pick); 3] = [
            (
                "token_expiry_timestamp",
                "When the newest cached token of this tenant and business unit expires (Unix time)",
                |t| t.expiry,
            ),
            (
                "token_last_success_timestamp",
                "When a token was last obtained for this tenant and business unit (Unix time)",
                |t| t.last_success,
            ),
            (
                "token_last_error_timestamp",
                "When a token request for this tenant and business unit last failed (Unix time)",
                |t| t.last_error,
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                ConstGauge::<f64>::TYPE,
            )?;
            for (labels, times) in keys.values() {
                if let Some(value) = value(times) {
                    ConstGauge::new(value).encode(metric.encode_family(labels)?)?;
                }
            }
        }
        let broker = ConstGauge::new(i64::try_from((self.broker_tokens)()).unwrap_or(i64::MAX));
        broker.encode(encoder.encode_descriptor(
            "broker_local_tokens",
            "Local tokens the broker has issued that are still valid",
            None,
            broker.metric_type(),
        )?)?;
        let dropped = ConstCounter::new(crate::telemetry::dropped_lines());
        dropped.encode(encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the log writer fell behind (stderr read too slowly)",
            None,
            dropped.metric_type(),
        )?)?;
        Ok(())
    }
}
