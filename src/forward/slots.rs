//! Each tenant's `max_concurrent_requests`: the slot a request to SFMC takes
//! before its first send and holds until SFMC's response has ended (its
//! retries and replay included: it is one request to SFMC's limits), and
//! the wait for one — at most the tenant's `queue_timeout`, first come
//! first served — after which the request gets `503 upstream_busy`. A
//! tenant without the key takes no slot and waits for nothing.
//!
//! Built anew for each generation of the configuration from the one
//! before: a tenant whose limit did not change keeps its count, so requests
//! still running under the older generation hold their slots in it. A
//! changed limit starts a new count (requests already at SFMC finish
//! outside it).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ConcurrencyLimit, Settings, Tenant};
use crate::error::ProxyError;
use crate::telemetry::metrics::QueueMetrics;

/// The request slots of every tenant that has a limit.
#[derive(Default)]
pub struct Slots {
    by_tenant: HashMap<Arc<str>, Arc<TenantSlots>>,
}

/// One tenant's slots and the metrics of its queue.
struct TenantSlots {
    limit: ConcurrencyLimit,
    free: Arc<Semaphore>,
    metrics: QueueMetrics,
}

/// A slot held: dropping it (with the response body it rides in) frees it.
pub type Slot = OwnedSemaphorePermit;

/// A slot taken, and how long the request waited for it (zero, and no
/// clock read, when one was free at once).
#[derive(Debug)]
pub struct Taken {
    pub slot: Slot,
    pub waited: std::time::Duration,
}

impl Slots {
    /// The slots for `settings`' tenants, keeping `previous`' count for
    /// each tenant whose limit is unchanged; `queue` gives a tenant's
    /// queue metrics.
    pub fn new(
        settings: &Settings,
        previous: Option<&Slots>,
        queue: impl Fn(&Arc<str>) -> QueueMetrics,
    ) -> Self {
        let mut by_tenant = HashMap::new();
        for tenant in &settings.tenants {
            let Some(limit) = tenant.concurrency else {
                continue;
            };
            let kept = previous
                .and_then(|previous| previous.by_tenant.get(&tenant.name))
                .filter(|slots| slots.limit.max == limit.max);
            let slots = TenantSlots {
                limit,
                free: match kept {
                    Some(kept) => kept.free.clone(),
                    None => Arc::new(Semaphore::new(limit.max)),
                },
                metrics: queue(&tenant.name),
            };
            by_tenant.insert(tenant.name.clone(), Arc::new(slots));
        }
        Self { by_tenant }
    }

    /// A slot of `tenant`'s, waited for up to its `queue_timeout`; `None`
    /// when the tenant has no limit (then nothing is looked up when no
    /// tenant has one).
    pub async fn take(&self, tenant: &Tenant) -> Result<Option<Taken>, ProxyError> {
        if self.by_tenant.is_empty() {
            return Ok(None);
        }
        let Some(slots) = self.by_tenant.get(&tenant.name) else {
            return Ok(None);
        };
        if let Ok(slot) = slots.free.clone().try_acquire_owned() {
            let waited = std::time::Duration::ZERO;
            return Ok(Some(Taken { slot, waited }));
        }
        let started = tokio::time::Instant::now();
        let waiting = Waiting::new(&slots.metrics);
        let wait = slots.free.clone().acquire_owned();
        let taken = tokio::time::timeout(slots.limit.queue_timeout, wait).await;
        drop(waiting);
        match taken {
            Ok(Ok(slot)) => Ok(Some(Taken {
                slot,
                waited: started.elapsed(),
            })),
            // The semaphore is never closed; a closed one would mean no slots.
            Ok(Err(_)) | Err(_) => {
                slots.metrics.timeouts.inc();
                Err(ProxyError::UpstreamBusy {
                    tenant: tenant.name.to_string(),
                    limit: slots.limit.max,
                    waited: slots.limit.queue_timeout,
                })
            }
        }
    }
}

/// A request counted in its tenant's queue gauge while it waits, however
/// the wait ends (a client that goes away included).
struct Waiting<'a>(&'a QueueMetrics);

impl<'a> Waiting<'a> {
    fn new(metrics: &'a QueueMetrics) -> Self {
        metrics.waiting.inc();
        Self(metrics)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(limit: &str) -> Settings {
        let text = format!(
            r#"
            [tenants.acme]
            auth_url = "https://example.auth.marketingcloudapis.com/"
            client_id = "id"
            client_secret = "secret"
            {limit}
            "#
        );
        Settings::from_toml(&text, |_| None, std::path::Path::new(".")).expect("settings")
    }

    /// The slots for `settings` (after `previous`), all sharing `queue`.
    fn slots(settings: &Settings, previous: Option<&Slots>, queue: &QueueMetrics) -> Slots {
        Slots::new(settings, previous, |_| queue.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_a_free_slot_then_is_refused_at_the_queue_timeout() {
        let settings = settings("max_concurrent_requests = 1\nqueue_timeout = \"5s\"");
        let queue = QueueMetrics::default();
        let slots = slots(&settings, None, &queue);
        let tenant = &settings.tenants[0];
        let first = slots.take(tenant).await.expect("free").expect("limited");
        assert_eq!(first.waited, Duration::ZERO);

        // A second waits; the slot frees after 2 s, within the 5 s.
        let freed = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(first);
        };
        let started = tokio::time::Instant::now();
        let (second, ()) = tokio::join!(slots.take(tenant), freed);
        let second = second.expect("a slot came free").expect("limited");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(second.waited, Duration::from_secs(2));

        // A third finds none free for 5 s: refused, counted, not left queued.
        let started = tokio::time::Instant::now();
        let refused = slots.take(tenant).await.expect_err("busy");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(refused.code(), "upstream_busy");
        assert_eq!(refused.status(), 503);
        let message = refused.to_string();
        assert!(
            message.contains("tenants.acme.max_concurrent_requests (1)"),
            "{message}"
        );
        assert!(message.contains("within 5s"), "{message}");
        assert_eq!((queue.timeouts.get(), queue.waiting.get()), (1, 0));
        drop(second);
        assert!(slots.take(tenant).await.expect("free").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_is_in_the_queue_gauge_until_it_goes_away() {
        let settings = settings("max_concurrent_requests = 1");
        let queue = QueueMetrics::default();
        let slots = slots(&settings, None, &queue);
        let tenant = &settings.tenants[0];
        let _held = slots.take(tenant).await.expect("free");
        let mut waiting = Box::pin(slots.take(tenant));
        tokio::select! {
            biased;
            _ = &mut waiting => panic!("no slot is free"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(queue.waiting.get(), 1);
        // The client went away while it waited: neither queued nor timed out.
        drop(waiting);
        assert_eq!((queue.waiting.get(), queue.timeouts.get()), (0, 0));
    }

    #[tokio::test]
    async fn a_tenant_without_a_limit_takes_no_slot() {
        let settings = settings("");
        let queue = QueueMetrics::default();
        let slots = slots(&settings, None, &queue);
        assert!(
            slots
                .take(&settings.tenants[0])
                .await
                .expect("ok")
                .is_none()
        );
        assert_eq!(queue.waiting.get(), 0);
    }

    #[tokio::test]
    async fn a_reload_keeps_the_count_of_an_unchanged_limit_and_restarts_a_changed_one() {
        let queue = QueueMetrics::default();
        let before = settings("max_concurrent_requests = 1");
        let old = slots(&before, None, &queue);
        let _held = old.take(&before.tenants[0]).await.expect("free");

        // Only queue_timeout changed: the held slot still counts.
        let same = settings("max_concurrent_requests = 1\nqueue_timeout = \"0s\"");
        let kept = slots(&same, Some(&old), &queue);
        let refused = kept.take(&same.tenants[0]).await.expect_err("still held");
        assert_eq!(refused.code(), "upstream_busy");

        let raised = settings("max_concurrent_requests = 2\nqueue_timeout = \"0s\"");
        let fresh = slots(&raised, Some(&old), &queue);
        let tenant = &raised.tenants[0];
        let (a, b) = (fresh.take(tenant).await, fresh.take(tenant).await);
        assert!(a.is_ok() && b.is_ok(), "a new count of two");
        assert!(fresh.take(tenant).await.is_err(), "both taken");
    }
}
