//! `Raised`: a gauge kept one higher for as long as something lives — an
//! open connection, a parked one — however its holder ends (returned, cut
//! short, or its task dropped), so the gauge cannot drift.

use prometheus_client::metrics::gauge::Gauge;

pub(crate) struct Raised(Gauge);

impl Raised {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_is_one_higher_while_it_lives() {
        let gauge = Gauge::default();
        let held = Raised::new(&gauge);
        let task = async move {
            let _held = held;
            std::future::pending::<()>().await;
        };
        assert_eq!(gauge.get(), 1);
        // A task dropped before its end (a shutdown) lowers it too.
        drop(task);
        assert_eq!(gauge.get(), 0);
    }
}
