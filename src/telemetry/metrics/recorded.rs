//! The series one finished request records into, found with one lookup.
//!
//! A request counts into up to seven series (requests, both durations, both
//! byte counts, its token lookup, its business unit), each in its own family
//! under its own label set; looked up one by one they were some 1,400
//! instructions of every request. The label values they are made of (tenant,
//! api, method, status code, token outcome, business unit, whether SFMC was
//! asked) are few and repeat, so the seven are kept together under all of
//! them at once, as clones of the families' own metrics: a series still
//! appears in the exposition with its first use, and counts the same.
//!
//! The values are bounded labels (see `labels`), not what a caller sent, so
//! FxHash (no defence against chosen collisions) is safe here; and the
//! combinations kept are capped at [`MAX_KEPT`], past which a request's
//! series are looked up in their families one by one (nothing is lost, it
//! is only slower). The clones share their counts with the families, so a
//! series must never be removed from its family: its counts would go on in
//! the clone, unseen by the exposition.

use std::sync::RwLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rustc_hash::FxHashMap;

use super::labels::Label;

/// Combinations kept: a few tenants' usual traffic needs tens.
const MAX_KEPT: usize = 4096;

/// The label values a finished request's series are made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub tenant: Label,
    pub api: &'static str,
    pub method: &'static str,
    pub code: u16,
    /// How the request got its token, if it needed one.
    pub token: Option<&'static str>,
    /// The business unit and `ok` or `error`, for a routed API request.
    pub business_unit: Option<(Label, &'static str)>,
    /// Whether SFMC was asked (an upstream duration to record).
    pub upstream: bool,
}

/// A request's series; `None` where its key says it records nothing there.
#[derive(Clone)]
pub struct Recorded {
    pub requests: Counter,
    pub request_duration: Histogram,
    pub upstream_duration: Option<Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub token_lookups: Option<Counter>,
    pub business_unit: Option<Counter>,
}

/// The series of the combinations seen so far.
#[derive(Default)]
pub struct ByRequest(RwLock<FxHashMap<RecordKey, Recorded>>);

impl ByRequest {
    /// Records into the series of `key`, made by `create` (from the
    /// families) the first time.
    pub fn with(
        &self,
        key: &RecordKey,
        create: impl FnOnce() -> Recorded,
        record: impl FnOnce(&Recorded),
    ) {
        let full = {
            let kept = crate::sync::read(&self.0);
            if let Some(series) = kept.get(key) {
                return record(series);
            }
            kept.len() >= MAX_KEPT
        };
        let series = create();
        record(&series);
        // Full: not even asked for the write lock, which would hold up every
        // request's lookup for nothing.
        if !full {
            let mut kept = crate::sync::write(&self.0);
            if kept.len() < MAX_KEPT {
                kept.entry(key.clone()).or_insert(series);
            }
        }
    }

    /// Combinations kept now.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        crate::sync::read(&self.0).len()
    }

    /// Forgets every combination: the label values a name maps to changed.
    pub fn clear(&self) {
        crate::sync::write(&self.0).clear();
    }
}
