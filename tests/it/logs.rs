//! Logs as an operator sees them: one JSON event per request, written when
//! its response ends, with the fields that matter — and never a token, a
//! secret or a query string. Each test runs the real binary and reads its
//! stderr.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn acme(fake: &FakeTenant) -> ProxyBuilder {
    TestProxy::builder().tenant(Tenant::new("acme", fake).account_ids(&["100", "200"]))
}

#[tokio::test]
async fn json_access_log_has_one_event_per_request_and_no_secrets() {
    let fake = start_fake().await;
    let mut proxy = Binary::start("logs", acme(&fake), "debug").await;
    let client = client();
    let secret_query =
        "/hub/v1/dataevents/key:DE/rowset?$filter=Email%20eq%20%27secret-customer@example.com%27";
    for (path, mid) in [
        (secret_query, None),
        ("/fake/respond?status=404", Some("200")),
        ("/hub/v1/x", Some("999")),
        ("/_proxy/health", None),
    ] {
        let mut request = client
            .get(proxy.url(path))
            .header("authorization", "Bearer client-side-placeholder")
            .header("user-agent", "logs-test/1.0");
        if let Some(mid) = mid {
            request = request.header("x-sfmc-account-id", mid);
        }
        let reply = request.send().await.expect("request");
        reply.bytes().await.expect("body");
    }
    let access = proxy.access(4).await;
    let first = &access[0];
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/hub/v1/dataevents/key:DE/rowset");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["api"], "rest");
    assert_eq!(first["token"], "fetch");
    assert_eq!(first["replayed"], false);
    assert_eq!(first["completed"], true);
    assert_eq!(first["bytes_in"], 0);
    assert_eq!(first["user_agent"], "logs-test/1.0");
    let client_addr = first["client"].as_str().unwrap_or_default();
    assert!(client_addr.starts_with("127.0.0.1:"), "{first}");
    // Whole microseconds, and SFMC's share inside the total.
    let (total, upstream) = (&first["duration_us"], &first["upstream_us"]);
    assert!(total.is_u64() && upstream.is_u64(), "{first}");
    assert!(upstream.as_u64() <= total.as_u64(), "{first}");
    let bytes_out = first["bytes_out"].as_u64().unwrap_or_default();
    assert!(bytes_out > 0, "{first}");
    // An SFMC 4xx and the proxy's own after routing both name tenant and MID.
    assert_eq!(access[1]["status"], 404);
    assert_eq!(access[1]["upstream_status"], 404);
    assert_eq!(access[1]["tenant"], "acme");
    assert_eq!(access[1]["account_id"], "200");
    assert_eq!(access[2]["status"], 403);
    assert_eq!(access[2]["error"], "account_not_allowed");
    assert_eq!(access[2]["tenant"], "acme");
    assert_eq!(access[2]["account_id"], "999");
    assert!(access[2].get("upstream_status").is_none(), "{}", access[2]);
    // A probe, at debug.
    assert_eq!(access[3]["path"], "/_proxy/health");
    assert_eq!(access[3]["level"], "DEBUG");
    let whole = proxy.stop().await;
    for secret in [
        CLIENT_SECRET,
        "fake-1-",
        "fake-2-",
        "secret-customer",
        "client-side-placeholder",
        "$filter",
    ] {
        assert!(
            !whole.contains(secret),
            "`{secret}` leaked into the log:\n{whole}"
        );
    }
}

#[tokio::test]
async fn the_request_id_goes_to_sfmc_and_back_and_an_odd_one_is_replaced() {
    let fake = start_fake().await;
    let mut proxy = Binary::start("logs-request-id", acme(&fake), "info").await;
    let client = client();
    let odd = "x".repeat(200);
    let mut seen = Vec::new();
    let quoted = r#"say "hi" \ twice"#;
    for id in [Some("client-id-42"), Some(odd.as_str()), Some(quoted), None] {
        let mut request = client.post(proxy.url("/hub/v1/echo")).body(vec![7u8; 1000]);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let reply = request.send().await.expect("request");
        let returned = reply.headers().get("x-request-id").cloned();
        let echo: Value = reply.json().await.expect("echo");
        let returned = returned.and_then(|v| v.to_str().ok().map(str::to_owned));
        let returned = returned.expect("the response carries x-request-id");
        assert_eq!(
            echo["headers"]["x-request-id"], returned,
            "SFMC saw the same id"
        );
        seen.push(returned);
    }
    let access = proxy.access(4).await;
    assert_eq!(seen[0], "client-id-42", "the client's id is kept");
    for (id, event) in seen.iter().zip(&access) {
        assert_eq!(event["request_id"], id.as_str(), "{event}");
        assert_eq!(event["bytes_in"], 1000, "{event}");
    }
    for made in &seen[1..] {
        assert_eq!(made.len(), 32, "a made id: {made}");
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    }
    assert_ne!(seen[1], seen[2]);
    assert_ne!(seen[2], seen[3]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_download_is_logged_when_its_body_ends_and_a_cut_one_says_so() {
    let fake = start_fake().await;
    let mut proxy = Binary::start("logs-download", acme(&fake), "info").await;
    let client = client();
    // Far more than socket buffers hold: the proxy cannot finish sending
    // until the client has read it.
    let size: u64 = 32 * 1024 * 1024;
    let url = proxy.url(&format!("/fake/download?bytes={size}"));
    let reply = client.get(&url).send().await.expect("download starts");
    let pause = Duration::from_millis(600);
    tokio::time::sleep(pause).await;
    let body = reply.bytes().await.expect("download ends");
    assert_eq!(body.len() as u64, size);
    let event = &proxy.access(1).await[0];
    assert_eq!(event["bytes_out"], size, "{event}");
    assert_eq!(event["completed"], true, "{event}");
    assert_eq!(event["path"], "/fake/download");
    let total = event["duration_us"].as_u64().unwrap_or_default();
    let upstream = event["upstream_us"].as_u64().unwrap_or(u64::MAX);
    assert!(
        total >= pause.as_micros() as u64,
        "timed to the body's end, not the head: {event}"
    );
    assert!(upstream < total, "{event}");
    // A client that goes away mid-body: one event, cut short.
    let mut reply = client.get(&url).send().await.expect("download starts");
    let chunk = reply.chunk().await.expect("a chunk");
    assert!(chunk.is_some_and(|c| !c.is_empty()));
    drop(reply);
    let event = &proxy.access(1).await[0];
    assert_eq!(event["completed"], false, "{event}");
    assert_eq!(event["status"], 200, "{event}");
    let sent = event["bytes_out"].as_u64().unwrap_or(u64::MAX);
    assert!(sent < size, "{event}");
    // The same over HTTP/2, and a HEAD, whose empty body is never polled.
    let h2 = TestClient::http2();
    let small = 1024 * 1024;
    let url = proxy.url(&format!("/fake/download?bytes={small}"));
    let request = http::Request::get(url).body(empty()).expect("request");
    assert_eq!(h2.fetch(request).await.body.len(), small);
    let request = http::Request::head(proxy.url("/hub/v1/x")).body(empty());
    let reply = TestClient::new().fetch(request.expect("request")).await;
    assert_eq!((reply.status, reply.body.len()), (200, 0));
    let events = proxy.access(2).await;
    assert_eq!(events[0]["bytes_out"], small, "{}", events[0]);
    assert_eq!(events[0]["completed"], true, "{}", events[0]);
    assert_eq!(events[1]["method"], "HEAD");
    assert_eq!(events[1]["bytes_out"], 0, "{}", events[1]);
    assert_eq!(events[1]["completed"], true, "{}", events[1]);
    let whole = proxy.stop().await;
    let events = whole.lines().filter(|l| l.contains(ACCESS)).count();
    assert_eq!(events, 4, "one event per request:\n{whole}");
}

#[tokio::test]
async fn log_paths_false_drops_paths_and_probes_stay_below_info() {
    let fake = start_fake().await;
    let builder = acme(&fake).log_paths(false);
    let mut proxy = Binary::start("logs-no-paths", builder, "info").await;
    let client = client();
    for path in [
        "/_proxy/health",
        "/_proxy/ready",
        "/_proxy/metrics",
        "/data/v1/customobjectdata/key/Customer-Jane-Doe/rowset",
    ] {
        let reply = client.get(proxy.url(path)).send().await.expect("request");
        reply.bytes().await.expect("body");
    }
    // The probes' answers stay below info: the request is the first event.
    let events = proxy.access(1).await;
    let event = &events[0];
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["method"], "GET");
    assert!(event.get("path").is_none(), "{event}");
    let whole = proxy.stop().await;
    assert!(!whole.contains("Jane-Doe"), "{whole}");
    assert!(!whole.contains("/_proxy/"), "{whole}");
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_answer_is_logged_once() {
    let hole = black_hole().await;
    let auth_url = static_auth_server(serde_json::json!({
        "access_token": "t", "token_type": "Bearer", "expires_in": 1080,
        "rest_instance_url": format!("http://{hole}/")
    }))
    .await;
    // SFMC never answers; the client gives up long before the proxy would.
    let builder = TestProxy::builder()
        .response_timeout(Duration::from_secs(60))
        .tenant(Tenant::at("acme", &auth_url));
    let mut proxy = Binary::start("logs-hang-up", builder, "info").await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let gave_up = impatient.get(proxy.url("/hub/v1/slow")).send().await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    let event = &proxy.access(1).await[0];
    assert_eq!(event["completed"], false, "{event}");
    // The time it waited for SFMC, though no answer came.
    let waited = event["upstream_us"].as_u64().unwrap_or_default();
    assert!(waited > 0, "{event}");
    assert_eq!(event["tenant"], "acme", "{event}");
    assert!(
        event.get("status").is_none(),
        "no response was sent: {event}"
    );
    let whole = proxy.stop().await;
    let events = whole.lines().filter(|l| l.contains(ACCESS)).count();
    assert_eq!(events, 1, "one event:\n{whole}");
}

/// SIGTERM loses no line: 500 requests while nobody reads the proxy's
/// stderr (its pipe holds some 150 lines, the rest wait in the proxy), then
/// SIGTERM, then every access line is there. A reader that does not keep up
/// does not hold requests up either (a synchronous writer would stall once
/// the pipe is full).
#[tokio::test]
async fn sigterm_loses_no_log_line_and_a_slow_reader_holds_no_request() {
    const N: usize = 500;
    let fake = start_fake().await;
    let proxy = Binary::start("logs-sigterm", acme(&fake), "info").await;
    let client = client();
    let send_all = async {
        for i in 0..N {
            let reply = client
                .get(proxy.url("/hub/v1/x"))
                .header("x-request-id", format!("term-{i}"))
                .send()
                .await
                .expect("request");
            assert_eq!(reply.status(), 200);
            reply.bytes().await.expect("body");
        }
        let metrics = client.get(proxy.url("/_proxy/metrics")).send().await;
        metrics.expect("metrics").text().await.expect("body")
    };
    let metrics = tokio::time::timeout(Duration::from_secs(60), send_all)
        .await
        .expect("requests go on while nobody reads the log");
    assert!(
        metrics.contains("sfmc_proxy_log_lines_dropped_total 0"),
        "{metrics}"
    );
    proxy.signal("TERM");
    let (status, log) = proxy.exit().await;
    assert!(status.success(), "{status}\n{log}");
    let mut ids = std::collections::BTreeSet::new();
    for line in log.lines() {
        let event: Value = serde_json::from_str(line).unwrap_or_default();
        if event["target"] == ACCESS {
            ids.insert(event["request_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    let missing: Vec<usize> = (0..N)
        .filter(|i| !ids.contains(&format!("term-{i}")))
        .collect();
    assert!(missing.is_empty(), "no access line for {missing:?}");
    // Logged after the graceful shutdown, just before the process exits.
    assert!(log.contains("shut down cleanly"), "{log}");
}
