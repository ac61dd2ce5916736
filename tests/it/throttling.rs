//! SFMC's throttling and a tenant's own limit, end to end against the fake:
//! a 429 (or SOAP `Rate Limited`) reaches the client untouched and counted;
//! with `retry_throttled` a held request is sent again after `Retry-After`
//! (at most twice, never past `upstream.max_retry_wait`), logged; and
//! `max_concurrent_requests` queues a tenant's requests, then answers
//! `503 upstream_busy`.

use std::time::Duration;

use crate::metrics::{sample, scrape};
use crate::support::soap::{assert_answered, envelope, soap};
use crate::support::*;

/// `acme` with `retry_throttled` on (from `[upstream]`).
async fn retrying() -> Setup {
    Setup::builder()
        .proxy(|p| p.retry_throttled(true))
        .start()
        .await
}

/// A counter of the proxy's for tenant `acme`'s REST or SOAP calls, 0 when absent.
async fn counted(s: &Setup, name: &str, api: &str) -> f64 {
    let text = scrape(&s.client, &s.proxy, &[]).await.text();
    let series = format!(r#"sfmc_proxy_{name}_total{{tenant="acme",api="{api}"}}"#);
    sample(&text, &series).unwrap_or(0.0)
}

#[tokio::test]
async fn by_default_sfmc_s_429_reaches_the_client_untouched_and_counted() {
    let s = setup().await;
    s.fake.throttle_rest(1, Some("1"));
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!((reply.status, reply.proxy_error()), (429, None));
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.json()["errorcode"], 50100, "SFMC's own body");
    assert_eq!(s.fake.rest_requests(), 1, "not sent again");
    assert_eq!(counted(&s, "upstream_throttled", "rest").await, 1.0);
    assert_eq!(counted(&s, "upstream_throttle_retries", "rest").await, 0.0);
}

#[tokio::test]
async fn a_held_request_is_sent_again_after_retry_after_with_the_same_token_and_bytes() {
    let s = retrying().await;
    s.fake.throttle_rest(2, Some("0"));
    let body = r#"{"items":[{"key":"a"}]}"#;
    let reply = s
        .client
        .post(
            &s.proxy,
            "/hub/v1/dataevents/key:x/rowset?a=1&b=%20",
            &[],
            body,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["query"], "a=1&b=%20");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(
        echo["token_number"], 1,
        "the same token: throttling is not a refusal"
    );
    assert_eq!((s.fake.rest_requests(), s.fake.token_requests()), (3, 1));
    assert_eq!(counted(&s, "upstream_throttled", "rest").await, 2.0);
    assert_eq!(counted(&s, "upstream_throttle_retries", "rest").await, 2.0);
}

#[tokio::test]
async fn the_proxy_waits_at_least_what_retry_after_asks() {
    let s = retrying().await;
    s.fake.throttle_rest(1, Some("1"));
    let started = std::time::Instant::now();
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200);
    // A lower bound only: how much longer depends on the machine.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.fake.rest_requests(), 2);
}

#[tokio::test]
async fn a_503_is_sent_again_only_for_an_idempotent_method() {
    let s = retrying().await;
    let unavailable = "/fake/respond?status=503&header=Retry-After:0";
    let post = s.client.post(&s.proxy, unavailable, &[], "{}").await;
    assert_eq!((post.status, post.proxy_error()), (503, None));
    assert_eq!(s.fake.rest_requests(), 1, "a POST may have been acted on");
    let get = s.client.get(&s.proxy, unavailable, &[]).await;
    assert_eq!(get.status, 503, "SFMC's 503 each time");
    assert_eq!(
        s.fake.rest_requests(),
        4,
        "a GET: the first send and two retries"
    );
    assert_eq!(counted(&s, "upstream_throttled", "rest").await, 4.0);
}

#[tokio::test]
async fn a_third_429_in_a_row_reaches_the_client() {
    let s = retrying().await;
    s.fake.throttle_rest(3, Some("0"));
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!((reply.status, reply.proxy_error()), (429, None));
    assert_eq!(reply.headers["retry-after"], "0");
    assert_eq!(s.fake.rest_requests(), 3, "the first send and two retries");
    assert_eq!(counted(&s, "upstream_throttled", "rest").await, 3.0);
    assert_eq!(counted(&s, "upstream_throttle_retries", "rest").await, 2.0);
}

#[tokio::test]
async fn a_wait_too_long_or_not_said_and_a_streamed_body_are_the_client_s_to_handle() {
    let s = Setup::builder()
        .proxy(|p| {
            p.retry_throttled(true)
                .max_retry_wait(Duration::from_secs(5))
                .replay_body_limit(1024)
        })
        .start()
        .await;
    s.fake.throttle_rest(1, Some("6"));
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(
        (reply.status, reply.headers["retry-after"].as_bytes()),
        (429, &b"6"[..])
    );
    s.fake.throttle_rest(1, None);
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 429);
    assert!(reply.headers.get("retry-after").is_none());
    // Over token.replay_body_limit: streamed to SFMC, and gone.
    s.fake.throttle_rest(1, Some("0"));
    let big = "x".repeat(4096);
    let reply = s.client.post(&s.proxy, "/hub/v1/x", &[], big).await;
    assert_eq!(reply.status, 429);
    assert_eq!(s.fake.rest_requests(), 3, "none was sent again");
    assert_eq!(counted(&s, "upstream_throttle_retries", "rest").await, 0.0);
}

#[tokio::test]
async fn a_tenant_s_own_key_turns_the_retry_off_or_on() {
    let s = Setup::builder()
        .proxy(|p| p.retry_throttled(true))
        .tenant(|t| t.retry_throttled(false))
        .start()
        .await;
    s.fake.throttle_rest(1, Some("0"));
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 429);

    let s = Setup::builder()
        .tenant(|t| t.retry_throttled(true))
        .start()
        .await;
    s.fake.throttle_rest(1, Some("0"));
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(s.fake.rest_requests(), 2);
}

#[tokio::test]
async fn a_soap_rate_limited_fault_is_sent_again_after_a_second() {
    let s = retrying().await;
    s.fake.rate_limit_soap(1);
    let started = std::time::Instant::now();
    let reply = soap(&s, "/Service.asmx", envelope("")).await;
    assert_answered(&reply, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((s.fake.soap_requests(), s.fake.token_requests()), (2, 1));
    assert_eq!(counted(&s, "upstream_throttled", "soap").await, 1.0);
    assert_eq!(counted(&s, "upstream_throttle_retries", "soap").await, 1.0);
}

#[tokio::test]
async fn each_retry_is_logged_and_the_access_event_counts_them() {
    let fake = start_fake().await;
    let builder = TestProxy::builder()
        .retry_throttled(true)
        .tenant(Tenant::new("acme", &fake).max_concurrent_requests(4));
    let mut proxy = Binary::start("throttle-log", builder, "info").await;
    fake.throttle_rest(1, Some("0"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let reply = client
        .get(proxy.url("/hub/v1/x"))
        .header("x-request-id", "throttled-1")
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 200);
    let retry = proxy
        .next_event(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("sending the request again"))
        })
        .await;
    assert_eq!(retry["level"], "INFO");
    assert_eq!(retry["request_id"], "throttled-1");
    assert_eq!(retry["tenant"], "acme");
    assert_eq!(retry["status"], 429);
    assert_eq!(retry["wait"], "0s");
    assert_eq!((&retry["retry"], &retry["of"]), (&1.into(), &2.into()));
    let access = proxy.access(1).await;
    assert_eq!(access[0]["throttle_retries"], 1);
    assert_eq!(access[0]["status"], 200);
    // The waits are in the event: Retry-After's (0 s plus its jitter, at
    // most 100 ms) and the queue's (a free slot: none to speak of).
    let waited = access[0]["throttle_wait_us"]
        .as_u64()
        .expect("throttle_wait_us");
    assert!(waited <= 100_000, "{}", access[0]);
    assert!(access[0]["queued_us"].is_u64(), "{}", access[0]);
}

#[tokio::test]
async fn a_tenant_s_requests_beyond_its_limit_wait_then_get_upstream_busy() {
    let s = Setup::builder()
        .tenant(|t| {
            t.max_concurrent_requests(1)
                .queue_timeout(Duration::from_millis(200))
        })
        .start()
        .await;
    // One request at SFMC, its response streaming: the tenant's one slot.
    let gated = hold_a_slot(&s).await;

    let busy = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(
        (busy.status, busy.proxy_error()),
        (503, Some("upstream_busy"))
    );
    assert_eq!(busy.headers["retry-after"], "1");
    let message = busy.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("tenants.acme.max_concurrent_requests (1)"),
        "{message}"
    );
    assert!(message.contains("200ms"), "{message}");
    assert_eq!(busy.json()["max_concurrent_requests"], 1);
    assert_eq!(
        s.fake.rest_requests(),
        1,
        "the refused request never reached SFMC"
    );

    // The slot frees when the streaming response ends.
    s.fake.release_gate();
    assert_eq!(rest_of(gated).await, "second\n");
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    let text = scrape(&s.client, &s.proxy, &[]).await.text();
    let series = r#"sfmc_proxy_upstream_queue_timeouts_total{tenant="acme"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_queued_request_goes_out_when_a_slot_frees() {
    let s = Setup::builder()
        .tenant(|t| t.max_concurrent_requests(1))
        .start()
        .await;
    let gated = hold_a_slot(&s).await;

    let client = s.client.clone();
    let queued_request = request("GET", &s.proxy, "/hub/v1/queued", &[], empty());
    let queued = tokio::spawn(async move { client.fetch(queued_request).await });
    // Seen waiting in the queue gauge, not yet at SFMC.
    let series = r#"sfmc_proxy_upstream_queued{tenant="acme"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&s.client, &s.proxy, &[]).await.text();
        if sample(&text, series) == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never queued: {text}");
        tokio::task::yield_now().await;
    }
    assert_eq!(s.fake.rest_requests(), 1);

    s.fake.release_gate();
    assert_eq!(rest_of(gated).await, "second\n");
    let reply = queued.await.expect("task");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/hub/v1/queued");
    let text = scrape(&s.client, &s.proxy, &[]).await.text();
    assert_eq!(sample(&text, series), Some(0.0), "{text}");
}

/// A request to `/fake/gated` whose response has begun streaming: it holds
/// one of the tenant's slots until its body is read to the end.
async fn hold_a_slot(s: &Setup) -> hyper::body::Incoming {
    let gated = s
        .client
        .send(request("GET", &s.proxy, "/fake/gated", &[], empty()))
        .await;
    let mut body = gated.into_body();
    assert_eq!(next_data(&mut body).await, "first\n");
    body
}

/// The next data frame of a streaming body, as text.
async fn next_data(body: &mut hyper::body::Incoming) -> String {
    use http_body_util::BodyExt;
    loop {
        let frame = body.frame().await.expect("a frame").expect("readable");
        if let Ok(data) = frame.into_data() {
            return String::from_utf8_lossy(&data).into_owned();
        }
    }
}

/// The rest of a streaming body, as text.
async fn rest_of(body: hyper::body::Incoming) -> String {
    use http_body_util::BodyExt;
    let bytes = body.collect().await.expect("readable").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn check_says_how_each_tenant_meets_throttling() {
    let fake = start_fake().await;
    let config = TestProxy::builder()
        .retry_throttled(true)
        .max_retry_wait(Duration::from_secs(4))
        .tenant(Tenant::new("acme", &fake).max_concurrent_requests(8))
        .tenant(Tenant::new("beta", &fake).retry_throttled(false));
    let path = config_file("check-throttling", &config.render());
    let printed = succeeded(&run_binary(&["check", "--offline"], &path, &[]).await);
    let said = "  throttling: 429/503 and Rate Limited sent again (Retry-After up to 4s, at most twice); at most 8 requests at SFMC at once, others wait up to 30s";
    assert!(printed.contains(said), "{printed}");
    let said =
        "  throttling: 429/503 and Rate Limited passed to the client; no limit on requests at once";
    assert!(printed.contains(said), "{printed}");

    let output = run_binary(&["check", "--offline", "--json"], &path, &[]).await;
    let report: serde_json::Value = serde_json::from_str(&succeeded(&output)).expect("JSON");
    let (acme, beta) = (&report["tenants"][0], &report["tenants"][1]);
    assert_eq!(acme["name"], "acme");
    assert_eq!(
        (
            &acme["retry_throttled"],
            &acme["max_concurrent_requests"],
            &acme["queue_timeout"]
        ),
        (&true.into(), &8.into(), &30.0.into())
    );
    assert_eq!(
        (
            &beta["retry_throttled"],
            &beta["max_concurrent_requests"],
            &beta["queue_timeout"]
        ),
        (
            &false.into(),
            &serde_json::Value::Null,
            &serde_json::Value::Null
        )
    );
}

#[tokio::test]
async fn a_client_that_leaves_during_the_retry_wait_frees_its_slot() {
    let s = Setup::builder()
        .proxy(|p| p.retry_throttled(true))
        .tenant(|t| {
            // Shorter than the Retry-After: a slot still held by the one
            // that left would make the next request's wait end in a 503.
            t.max_concurrent_requests(1)
                .queue_timeout(Duration::from_secs(4))
        })
        .start()
        .await;
    s.fake.throttle_rest(1, Some("8"));
    // It holds the one slot while it waits out the 8 s; then it goes away.
    let client = s.client.clone();
    let leaving = request("GET", &s.proxy, "/hub/v1/leaving", &[], empty());
    let waiting = tokio::spawn(async move { client.fetch(leaving).await });
    while s.fake.rest_requests() == 0 {
        tokio::task::yield_now().await;
    }
    waiting.abort();
    let _ = waiting.await;
    // The next request gets the slot, not upstream_busy.
    let next = s.client.get(&s.proxy, "/hub/v1/next", &[]).await;
    assert_eq!(
        (next.status, next.proxy_error()),
        (200, None),
        "{}",
        next.text()
    );
}
