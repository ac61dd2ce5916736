//! `Series`: a metric family with a fast way in for the series a request
//! records into.
//!
//! `prometheus-client`'s `Family` hashes a label set with SipHash on every
//! lookup; a request records into seven series, and those lookups were some
//! 3,000 instructions of each request's 50,000. Here each series, once
//! created in the family (so the exposition is unchanged: a series appears
//! with its first use), is also kept under an FxHash of its labels. FxHash
//! gives no protection against chosen collisions, and needs none: label
//! values are configured names, fixed words and status codes, none of which
//! a caller can choose (see `labels`).
//!
//! The cache holds clones of the family's metrics, so a series must never
//! be removed from the family (its counts would go on into the clone, and
//! vanish from the exposition): the family is not handed out.

use std::hash::Hash;
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use rustc_hash::FxHashMap;

pub struct Series<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    /// Clones of the family's metrics: a clone shares its counts.
    known: RwLock<FxHashMap<S, M>>,
}

impl<S, M, C> Series<S, M, C>
where
    S: Clone + Hash + Eq + EncodeLabelSet,
    M: Clone,
    C: MetricConstructor<M>,
{
    pub fn new(family: Family<S, M, C>) -> Self {
        Self {
            family,
            known: RwLock::default(),
        }
    }

    /// The series of `labels`, if it was recorded into (for reading it).
    pub fn get(&self, labels: &S) -> Option<M> {
        self.family.get(labels).map(|metric| metric.clone())
    }

    /// Records into the series of `labels`, created on first use.
    pub fn with<R>(&self, labels: &S, record: impl FnOnce(&M) -> R) -> R {
        if let Some(metric) = crate::sync::read(&self.known).get(labels) {
            return record(metric);
        }
        let metric = self.family.get_or_create_owned(labels);
        let recorded = record(&metric);
        crate::sync::write(&self.known)
            .entry(labels.clone())
            .or_insert(metric);
        recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_series_counts_in_its_family_and_appears_with_its_first_use() {
        let series = Series::new(Family::<Vec<(String, String)>, Counter>::default());
        let labels = vec![("tenant".to_owned(), "acme".to_owned())];
        assert!(
            series.get(&labels).is_none(),
            "no series before its first use"
        );
        series.with(&labels, |counter| counter.inc());
        series.with(&labels, |counter| counter.inc_by(2));
        let other = vec![("tenant".to_owned(), "other".to_owned())];
        series.with(&other, |counter| counter.inc());
        let count = |labels| series.get(labels).map(|c| c.get());
        assert_eq!(count(&labels), Some(3), "both records are the family's");
        assert_eq!(count(&other), Some(1));
    }
}
