//! The exposition: names, units, bounded labels, and nothing secret.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::token::{FetchedToken, TokenError, TokenKey, TokenSource};
use crate::upstream::InstanceBase;

fn settings() -> Settings {
    let toml = r#"
[tenants.acme]
auth_url = "https://mc123.auth.marketingcloudapis.com/"
client_id = "id"
client_secret = "very-secret"
account_id = "100"
account_ids = ["100", "200"]
"#;
    Settings::from_toml(toml, |_| None, std::path::Path::new(".")).expect("settings")
}

/// A source that is never asked: these tests put tokens in themselves.
struct Unused;

impl TokenSource for Unused {
    fn fetch<'a>(&'a self, _key: &'a TokenKey) -> crate::token::FetchFuture<'a> {
        Box::pin(async {
            Err(TokenError::Unavailable {
                reason: "unused".into(),
                retryable: false,
            })
        })
    }
}

fn metrics() -> (Arc<Metrics>, TokenCache) {
    let tokens = TokenCache::new(Arc::new(Unused), Duration::from_secs(120));
    let metrics = Metrics::new(&settings(), tokens.clone(), || 3, None);
    (metrics, tokens)
}

fn key(mid: Option<&str>) -> TokenKey {
    TokenKey {
        tenant: Arc::from("acme"),
        account_id: mid.map(Arc::from),
        scope: None,
    }
}

fn done<'a>(tenant: &'a Arc<str>, mid: &'a Arc<str>, method: &'a Method) -> RequestDone<'a> {
    RequestDone {
        tenant: Some(tenant),
        account_id: Some(mid),
        api: Some(Api::Rest),
        method,
        status: Some(StatusCode::OK),
        upstream_status: Some(StatusCode::OK),
        duration: Duration::from_millis(30),
        upstream: Some(Duration::from_millis(20)),
        bytes_in: 10,
        bytes_out: 2000,
        token: Some(Outcome::Hit),
        replayed: true,
        // A 429 retried twice, then answered.
        throttled: 2,
        throttle_retries: 2,
    }
}

/// A token for the BU `100`'s key, as SFMC would hand it out.
fn fetched(token: &str, lifetime_s: u64) -> FetchedToken {
    FetchedToken {
        access_token: token.into(),
        expires_in: Duration::from_secs(lifetime_s),
        scope: None,
        rest_instance: InstanceBase::parse(
            "https://mc123.rest.marketingcloudapis.com/",
            &[".marketingcloudapis.com".to_owned()],
        )
        .expect("instance"),
        soap_instance: None,
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn line<'t>(text: &'t str, start: &str) -> Option<&'t str> {
    text.lines().find(|l| l.starts_with(start))
}

#[test]
fn a_request_is_counted_with_bounded_labels() {
    let (metrics, _) = metrics();
    let tenant: Arc<str> = Arc::from("acme");
    let odd_mid: Arc<str> = Arc::from("999");
    let odd_method = Method::from_bytes(b"PROPFIND").expect("method");
    metrics.request_started();
    metrics.request_done(&done(&tenant, &odd_mid, &odd_method));
    let stranger: Arc<str> = Arc::from("nosuch");
    metrics.request_started();
    metrics.request_done(&done(&stranger, &odd_mid, &Method::GET));
    let text = metrics.encode();
    for expected in [
        r#"sfmc_proxy_requests_total{tenant="acme",api="rest",method="other",code="200"} 1"#,
        r#"sfmc_proxy_requests_total{tenant="unknown",api="rest",method="GET",code="200"} 1"#,
        r#"sfmc_proxy_business_unit_requests_total{tenant="acme",mid="other",outcome="ok"} 1"#,
        r#"sfmc_proxy_replays_total{tenant="acme",api="rest"} 1"#,
        r#"sfmc_proxy_upstream_throttled_total{tenant="acme",api="rest"} 2"#,
        r#"sfmc_proxy_upstream_throttle_retries_total{tenant="acme",api="rest"} 2"#,
        r#"sfmc_proxy_token_lookups_total{tenant="acme",result="hit"} 1"#,
        r#"sfmc_proxy_request_body_bytes_total{tenant="acme",api="rest"} 10"#,
        r#"sfmc_proxy_response_body_bytes_total{tenant="acme",api="rest"} 2000"#,
        r#"sfmc_proxy_request_duration_seconds_count{tenant="acme",api="rest"} 1"#,
        r#"sfmc_proxy_upstream_duration_seconds_bucket{le="0.025",tenant="acme",api="rest"} 1"#,
        "sfmc_proxy_requests_in_flight 0",
        r#"sfmc_proxy_build_info{version=""#,
        "sfmc_proxy_broker_local_tokens 3",
        "# TYPE sfmc_proxy_log_lines_dropped counter",
        "sfmc_proxy_log_lines_dropped_total 0",
        "# EOF",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("nosuch") && !text.contains("999"), "{text}");
    assert_eq!(
        metrics.business_unit_counts(&tenant, Some(&Arc::from("200"))),
        (0, 0)
    );
    assert_eq!(
        metrics.business_unit_counts(&tenant, Some(&odd_mid)),
        (1, 0)
    );
}

#[test]
fn token_requests_carry_sfmc_code_only_when_it_is_a_known_one() {
    let (metrics, _) = metrics();
    let acme: Arc<str> = Arc::from("acme");
    metrics.sent(&acme, Some("200"), Sent::Rejected("invalid_client"));
    metrics.sent(&acme, Some("200"), Sent::Rejected("<script>made-up"));
    metrics.sent(&acme, None, Sent::Ok);
    metrics.sent(&acme, Some("100"), Sent::Unavailable);
    let text = metrics.encode();
    for expected in [
        r#"sfmc_proxy_token_requests_total{tenant="acme",mid="200",result="rejected",error="invalid_client"} 1"#,
        r#"sfmc_proxy_token_requests_total{tenant="acme",mid="200",result="rejected",error="other"} 1"#,
        r#"sfmc_proxy_token_requests_total{tenant="acme",mid="default",result="ok",error=""} 1"#,
        r#"sfmc_proxy_token_requests_total{tenant="acme",mid="100",result="unavailable",error=""} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("script"));
}

#[tokio::test]
async fn token_state_is_read_at_scrape_time_in_unix_seconds_without_the_token() {
    let (metrics, tokens) = metrics();
    assert!(
        line(
            &metrics.encode(),
            "sfmc_proxy_token_expiry_timestamp_seconds{"
        )
        .is_none()
    );
    tokens
        .put(
            &key(Some("100")),
            fetched("the-access-token", 1080),
            Instant::now(),
        )
        .expect("put");
    let text = metrics.encode();
    let now = unix_now();
    let value = |name: &str| -> f64 {
        let prefix = format!(r#"sfmc_proxy_{name}_seconds{{tenant="acme",mid="100"}} "#);
        line(&text, &prefix)
            .and_then(|l| l[prefix.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let expiry = value("token_expiry_timestamp");
    assert!((expiry - (now + 1080.0)).abs() < 5.0, "{expiry} vs {now}");
    assert!((value("token_last_success_timestamp") - now).abs() < 5.0);
    assert!(line(&text, "sfmc_proxy_token_last_error_timestamp_seconds{").is_none());
    assert!(text.contains("# UNIT sfmc_proxy_token_expiry_timestamp_seconds seconds"));
    assert!(!text.contains("the-access-token") && !text.contains("very-secret"));
}

#[test]
fn reloads_are_counted_by_result() {
    let (metrics, _) = metrics();
    metrics.config_reloaded(false);
    metrics.config_reloaded(true);
    metrics.config_reloaded(true);
    let text = metrics.encode();
    assert!(text.contains(r#"sfmc_proxy_config_reloads_total{result="failure"} 1"#));
    assert!(text.contains(r#"sfmc_proxy_config_reloads_total{result="success"} 2"#));
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_keeps_its_expiry_in_the_past_so_alerts_stay_true() {
    let (metrics, tokens) = metrics();
    tokens
        .put(
            &key(Some("100")),
            fetched("short-lived", 10),
            Instant::now(),
        )
        .expect("put");
    tokio::time::advance(Duration::from_secs(70)).await;
    let text = metrics.encode();
    let prefix = r#"sfmc_proxy_token_expiry_timestamp_seconds{tenant="acme",mid="100"} "#;
    let expiry: f64 = line(&text, prefix)
        .and_then(|l| l[prefix.len()..].parse().ok())
        .unwrap_or_else(|| panic!("the series is gone:\n{text}"));
    let now = unix_now();
    assert!(
        expiry < now - 55.0,
        "{expiry} is a minute in the past of {now}"
    );
}

#[test]
fn requests_recorded_together_count_in_each_family_and_appear_with_first_use() {
    let (metrics, _) = metrics();
    let tenant: Arc<str> = Arc::from("acme");
    let mid: Arc<str> = Arc::from("200");
    // Refused before SFMC was asked: no token, no upstream duration.
    let refused = RequestDone {
        status: Some(StatusCode::FORBIDDEN),
        upstream_status: None,
        upstream: None,
        token: None,
        replayed: false,
        throttled: 0,
        throttle_retries: 0,
        ..done(&tenant, &mid, &Method::POST)
    };
    for _ in 0..2 {
        metrics.request_started();
        metrics.request_done(&refused);
    }
    let text = metrics.encode();
    assert!(
        !text.contains("sfmc_proxy_upstream_duration_seconds_count{"),
        "no upstream duration before SFMC is asked:\n{text}"
    );
    assert!(!text.contains("sfmc_proxy_token_lookups_total{"), "{text}");
    let answered = RequestDone {
        replayed: false,
        throttled: 0,
        throttle_retries: 0,
        ..done(&tenant, &mid, &Method::POST)
    };
    for _ in 0..3 {
        metrics.request_started();
        metrics.request_done(&answered);
    }
    let text = metrics.encode();
    for expected in [
        r#"sfmc_proxy_requests_total{tenant="acme",api="rest",method="POST",code="403"} 2"#,
        r#"sfmc_proxy_requests_total{tenant="acme",api="rest",method="POST",code="200"} 3"#,
        r#"sfmc_proxy_request_duration_seconds_count{tenant="acme",api="rest"} 5"#,
        r#"sfmc_proxy_upstream_duration_seconds_count{tenant="acme",api="rest"} 3"#,
        r#"sfmc_proxy_request_body_bytes_total{tenant="acme",api="rest"} 50"#,
        r#"sfmc_proxy_response_body_bytes_total{tenant="acme",api="rest"} 10000"#,
        r#"sfmc_proxy_token_lookups_total{tenant="acme",result="hit"} 3"#,
        r#"sfmc_proxy_business_unit_requests_total{tenant="acme",mid="200",outcome="error"} 2"#,
        r#"sfmc_proxy_business_unit_requests_total{tenant="acme",mid="200",outcome="ok"} 3"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("sfmc_proxy_replays_total{"), "{text}");
    assert_eq!(metrics.by_request.kept(), 2, "one combination each");
}

#[test]
fn past_the_combinations_kept_requests_still_count() {
    let (metrics, _) = metrics();
    let tenant: Arc<str> = Arc::from("acme");
    let mid: Arc<str> = Arc::from("100");
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    // 5 methods x 900 codes: more combinations than are kept.
    for round in 0..2 {
        for method in &methods {
            for code in 100..1000 {
                let answered = RequestDone {
                    status: Some(StatusCode::from_u16(code).expect("code")),
                    ..done(&tenant, &mid, method)
                };
                metrics.request_started();
                metrics.request_done(&answered);
            }
        }
        assert_eq!(metrics.by_request.kept(), 4096, "round {round}");
    }
    let text = metrics.encode();
    for expected in [
        r#"sfmc_proxy_requests_total{tenant="acme",api="rest",method="GET",code="100"} 2"#,
        r#"sfmc_proxy_requests_total{tenant="acme",api="rest",method="DELETE",code="999"} 2"#,
        r#"sfmc_proxy_request_duration_seconds_count{tenant="acme",api="rest"} 9000"#,
        r#"sfmc_proxy_token_lookups_total{tenant="acme",result="hit"} 9000"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    metrics.configure(&settings());
    assert_eq!(metrics.by_request.kept(), 0, "a reload forgets them");
}
