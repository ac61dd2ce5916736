//! The metrics behind `/_proxy/metrics`: one `prometheus-client` registry,
//! written in the OpenMetrics text format, every name `sfmc_proxy_*` in base
//! units. What is counted as it happens is recorded here (requests when their
//! response ends, token requests as they are sent, reloads); what is a state
//! (token expiry, last success and error per key, connections, broker tokens)
//! is read when Prometheus scrapes.
//!
//! Labels are bounded by the configuration, never by callers: a tenant is a
//! configured name or `unknown`, a MID a configured `account_ids` entry or
//! default MID (`default` for the package's own BU) or `other`, a method one
//! of the standard ones or `other`. A path, token or client address is never
//! a label.

mod labels;
mod recorded;
mod state;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::config::Settings;
use crate::fleet::Health;
use crate::route::Api;
use crate::token::{Outcome, Sent, TokenCache, TokenEvents};
pub use labels::Label;
use labels::{
    ApiLabels, BusinessUnitLabels, LookupLabels, Names, RequestLabels, ResultLabels, TenantLabels,
    TokenRequestLabels, method_label,
};
use recorded::{ByRequest, RecordKey, Recorded};
use state::StateCollector;

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the duration histograms: a cached-token REST
/// call's overhead is well under a millisecond; SFMC answers in tens to
/// hundreds of milliseconds; an export may stream for minutes.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// What one finished request tells the metrics.
pub struct RequestDone<'a> {
    pub tenant: Option<&'a Arc<str>>,
    pub account_id: Option<&'a Arc<str>>,
    pub api: Option<Api>,
    pub method: &'a Method,
    pub status: Option<StatusCode>,
    pub upstream_status: Option<StatusCode>,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub token: Option<Outcome>,
    pub replayed: bool,
    /// SFMC's answers that said it was throttling (REST 429 or 503, SOAP
    /// `Rate Limited`), retried ones included.
    pub throttled: u32,
    /// Times the request was sent again after throttling.
    pub throttle_retries: u32,
}

/// One tenant's request queue, as the metrics see it.
#[derive(Debug, Clone, Default)]
pub struct QueueMetrics {
    /// Requests waiting for a slot now.
    pub waiting: Gauge,
    /// Requests that waited `queue_timeout` in vain.
    pub timeouts: Counter,
}

/// The registry and every metric the proxy records.
pub struct Metrics {
    registry: Registry,
    names: Arc<Names>,
    // Recorded into by every request: their series are found together
    // through `by_request`, and looked up in these families only the first
    // time (so a series must never be removed from them: see `recorded`).
    by_request: ByRequest,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    request_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    upstream_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    bytes_in: Family<ApiLabels, Counter>,
    bytes_out: Family<ApiLabels, Counter>,
    business_unit_requests: Family<BusinessUnitLabels, Counter>,
    token_requests: Family<TokenRequestLabels, Counter>,
    token_lookups: Family<LookupLabels, Counter>,
    replays: Family<ApiLabels, Counter>,
    throttled: Family<ApiLabels, Counter>,
    throttle_retries: Family<ApiLabels, Counter>,
    queued: Family<TenantLabels, Gauge>,
    queue_timeouts: Family<TenantLabels, Counter>,
    client_connections: Gauge,
    client_connections_parked: Gauge,
    upstream_connections: Gauge,
    reloads: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a proxy serving `settings`, whose token state is read
    /// from `tokens` at each scrape, and whose live broker tokens
    /// `broker_tokens` counts.
    ///
    /// With `redis` (the process has a `[redis]` section), its state too:
    /// `redis_up` and `redis_errors_total{op}`.
    pub fn new(
        settings: &Settings,
        tokens: TokenCache,
        broker_tokens: impl Fn() -> usize + Send + Sync + 'static,
        redis: Option<&Health>,
    ) -> Arc<Self> {
        let names = Arc::new(Names::new(settings));
        let mut registry = Registry::with_prefix("sfmc_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by tenant, api, method and status code",
            requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests whose response has not ended",
            in_flight.clone(),
        );
        let request_duration =
            Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "request_duration",
            "From the request head to the response's last byte, proxy and SFMC together",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration =
            Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "upstream_duration",
            "Waiting for SFMC's response heads (every send: a replay, a retry after throttling)",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let bytes_in = Family::<ApiLabels, Counter>::default();
        registry.register_with_unit(
            "request_body",
            "Request body bytes read from clients",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Family::<ApiLabels, Counter>::default();
        registry.register_with_unit(
            "response_body",
            "Response body bytes written to clients",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let business_unit_requests = Family::<BusinessUnitLabels, Counter>::default();
        registry.register(
            "business_unit_requests",
            "API requests by tenant and business unit; outcome error when the status was 4xx or 5xx",
            business_unit_requests.clone(),
        );
        let token_requests = Family::<TokenRequestLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Requests sent to SFMC's /v2/token (retries, refreshes and login code exchanges included); error is SFMC's code for a rejection",
            token_requests.clone(),
        );
        let token_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "token_lookups",
            "How requests got their token: hit (cached), fetch (fetched it), coalesced (shared a concurrent fetch), refresh (cached, refresh started)",
            token_lookups.clone(),
        );
        let replays = Family::<ApiLabels, Counter>::default();
        registry.register(
            "replays",
            "Requests sent again with a new token after SFMC refused the first (REST 401, SOAP Token Expired)",
            replays.clone(),
        );
        let throttled = Family::<ApiLabels, Counter>::default();
        registry.register(
            "upstream_throttled",
            "SFMC answers saying it is throttling: HTTP 429 or 503, SOAP Rate Limited",
            throttled.clone(),
        );
        let throttle_retries = Family::<ApiLabels, Counter>::default();
        registry.register(
            "upstream_throttle_retries",
            "Requests sent again after SFMC throttled them (retry_throttled)",
            throttle_retries.clone(),
        );
        let queued = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "upstream_queued",
            "Requests waiting for one of their tenant's max_concurrent_requests slots",
            queued.clone(),
        );
        let queue_timeouts = Family::<TenantLabels, Counter>::default();
        registry.register(
            "upstream_queue_timeouts",
            "Requests answered 503 upstream_busy: no slot of their tenant's max_concurrent_requests came free within queue_timeout",
            queue_timeouts.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open",
            client_connections.clone(),
        );
        let client_connections_parked = Gauge::default();
        registry.register(
            "client_connections_parked",
            "Idle HTTP/1.1 client connections parked between requests (holding no buffers); a subset of client_connections",
            client_connections_parked.clone(),
        );
        let upstream_connections = Gauge::default();
        registry.register(
            "upstream_connections",
            "Connections to SFMC's instances open (pooled or in use)",
            upstream_connections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result",
            reloads.clone(),
        );
        if let Some(redis) = redis {
            registry.register(
                "redis_up",
                "1 while Redis answers, 0 after an operation could not reach it or timed out",
                redis.up.clone(),
            );
            registry.register(
                "redis_errors",
                "Redis operations that failed, by operation",
                redis.errors.clone(),
            );
        }
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(StateCollector {
            tokens,
            names: names.clone(),
            broker_tokens: Box::new(broker_tokens),
        }));
        let metrics = Arc::new(Self {
            registry,
            names,
            by_request: ByRequest::default(),
            requests,
            in_flight,
            request_duration,
            upstream_duration,
            bytes_in,
            bytes_out,
            business_unit_requests,
            token_requests,
            token_lookups,
            replays,
            throttled,
            throttle_retries,
            queued,
            queue_timeouts,
            client_connections,
            client_connections_parked,
            upstream_connections,
            reloads,
        });
        metrics.zero_series(settings);
        metrics
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// A request has begun (its response has not ended).
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request's response has ended (or was cut short).
    pub fn request_done(&self, done: &RequestDone<'_>) {
        self.in_flight.dec();
        let tenant = self.names.tenant(done.tenant);
        let code = done.status.map_or(0, |s| s.as_u16());
        let business_unit = (done.api.is_some() && done.tenant.is_some()).then(|| {
            let error = code >= 400 || code == 0;
            let mid = self.names.mid(&tenant, done.account_id.map(|m| &**m));
            (mid, if error { "error" } else { "ok" })
        });
        let key = RecordKey {
            tenant,
            api: labels::api(done.api),
            method: method_label(done.method),
            code,
            token: done.token.map(Outcome::as_str),
            business_unit,
            upstream: done.upstream.is_some(),
        };
        self.by_request.with(
            &key,
            || self.series_of(&key),
            |series| {
                series.requests.inc();
                let duration = done.duration.as_secs_f64();
                series.request_duration.observe(duration);
                if let (Some(histogram), Some(upstream)) =
                    (&series.upstream_duration, done.upstream)
                {
                    histogram.observe(upstream.as_secs_f64());
                }
                series.bytes_in.inc_by(done.bytes_in);
                series.bytes_out.inc_by(done.bytes_out);
                if let Some(lookups) = &series.token_lookups {
                    lookups.inc();
                }
                if let Some(requests) = &series.business_unit {
                    requests.inc();
                }
            },
        );
        // Rare: looked up when they happen.
        if done.replayed || done.throttled > 0 || done.throttle_retries > 0 {
            let by_api = ApiLabels {
                tenant: key.tenant,
                api: key.api,
            };
            if done.replayed {
                self.replays.get_or_create(&by_api).inc();
            }
            if done.throttled > 0 {
                let answers = u64::from(done.throttled);
                self.throttled.get_or_create(&by_api).inc_by(answers);
            }
            if done.throttle_retries > 0 {
                let retries = u64::from(done.throttle_retries);
                self.throttle_retries.get_or_create(&by_api).inc_by(retries);
            }
        }
    }

    /// The series a request with `key` records into, from their families
    /// (created there on first use, as the exposition shows them).
    fn series_of(&self, key: &RecordKey) -> Recorded {
        let by_api = ApiLabels {
            tenant: key.tenant.clone(),
            api: key.api,
        };
        let requests = RequestLabels {
            tenant: key.tenant.clone(),
            api: key.api,
            method: key.method,
            code: key.code,
        };
        Recorded {
            requests: self.requests.get_or_create_owned(&requests),
            request_duration: self.request_duration.get_or_create_owned(&by_api),
            upstream_duration: key
                .upstream
                .then(|| self.upstream_duration.get_or_create_owned(&by_api)),
            bytes_in: self.bytes_in.get_or_create_owned(&by_api),
            bytes_out: self.bytes_out.get_or_create_owned(&by_api),
            token_lookups: key.token.map(|result| {
                let labels = LookupLabels {
                    tenant: key.tenant.clone(),
                    result,
                };
                self.token_lookups.get_or_create_owned(&labels)
            }),
            business_unit: key.business_unit.as_ref().map(|(mid, outcome)| {
                let labels = BusinessUnitLabels {
                    tenant: key.tenant.clone(),
                    mid: mid.clone(),
                    outcome,
                };
                self.business_unit_requests.get_or_create_owned(&labels)
            }),
        }
    }

    /// Requests and errors (4xx/5xx) of one tenant and business unit, for
    /// the status page.
    pub fn business_unit_counts(&self, tenant: &Arc<str>, mid: Option<&Arc<str>>) -> (u64, u64) {
        let tenant = self.names.tenant(Some(tenant));
        let mid = self.names.mid(&tenant, mid.map(|m| &**m));
        let count = |outcome| {
            self.business_unit_requests
                .get(&BusinessUnitLabels {
                    tenant: tenant.clone(),
                    mid: mid.clone(),
                    outcome,
                })
                .map_or(0, |c| c.get())
        };
        let errors = count("error");
        (count("ok") + errors, errors)
    }

    /// The gauge of open client connections, for the accept loop.
    pub fn client_connections(&self) -> Gauge {
        self.client_connections.clone()
    }

    /// The gauge of parked idle client connections, for the connections.
    pub fn client_connections_parked(&self) -> Gauge {
        self.client_connections_parked.clone()
    }

    /// The gauge of open connections to SFMC, for the upstream pool.
    pub fn upstream_connections(&self) -> Gauge {
        self.upstream_connections.clone()
    }

    /// The waiting gauge and timeout counter of `tenant`'s request queue
    /// (`max_concurrent_requests`). `tenant` is a configured name (of the
    /// generation being built, which the label names may not know yet).
    pub fn queue(&self, tenant: &Arc<str>) -> QueueMetrics {
        let labels = TenantLabels {
            tenant: Label::Named(tenant.clone()),
        };
        QueueMetrics {
            waiting: self.queued.get_or_create(&labels).clone(),
            timeouts: self.queue_timeouts.get_or_create(&labels).clone(),
        }
    }

    /// The tenants and MIDs that may be label values from now on (a
    /// configuration reload); counts already made keep their labels.
    pub fn configure(&self, settings: &Settings) {
        self.names.configure(settings);
        // Keys are label values, so none is wrong after a reload; but a
        // removed tenant's would go on counting against the cap.
        self.by_request.clear();
        self.zero_series(settings);
    }

    /// The series alerts compare against, at 0 before anything happened:
    /// each tenant's successful token requests for its default business unit
    /// (so "no success" is a 0, not a missing series), and both reload
    /// results (so the first failure is an increase).
    fn zero_series(&self, settings: &Settings) {
        for tenant in &settings.tenants {
            let name = self.names.tenant(Some(&tenant.name));
            let _ = self.token_requests.get_or_create(&TokenRequestLabels {
                mid: self.names.mid(&name, tenant.account_id.as_deref()),
                tenant: name,
                result: "ok",
                error: Label::empty(),
            });
            if tenant.concurrency.is_some() {
                let _ = self.queue(&tenant.name);
            }
        }
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&ResultLabels { result });
        }
    }

    /// A configuration reload was applied (`true`) or refused.
    pub fn config_reloaded(&self, applied: bool) {
        let result = if applied { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

/// Token requests are counted as the `/v2/token` client sends them.
impl TokenEvents for Metrics {
    fn sent(&self, tenant: &Arc<str>, account_id: Option<&str>, outcome: Sent<'_>) {
        let tenant = self.names.tenant(Some(tenant));
        let (result, error) = match outcome {
            Sent::Ok => ("ok", Label::empty()),
            Sent::Rejected(code) => ("rejected", labels::sfmc_error(code)),
            Sent::Unavailable => ("unavailable", Label::empty()),
        };
        self.token_requests
            .get_or_create(&TokenRequestLabels {
                mid: self.names.mid(&tenant, account_id),
                tenant,
                result,
                error,
            })
            .inc();
    }
}

/// The events hook for a token client built before its metrics: forwards
/// to the metrics once they exist (the metrics read the cache, whose source
/// the client is, and the client tells the metrics: one is made first).
#[derive(Default)]
pub struct LateEvents(std::sync::OnceLock<Arc<Metrics>>);

impl LateEvents {
    pub fn connect(&self, metrics: Arc<Metrics>) {
        let _ = self.0.set(metrics);
    }
}

impl TokenEvents for LateEvents {
    fn sent(&self, tenant: &Arc<str>, account_id: Option<&str>, outcome: Sent<'_>) {
        if let Some(metrics) = self.0.get() {
            metrics.sent(tenant, account_id, outcome);
        }
    }
}

#[cfg(test)]
mod tests;
