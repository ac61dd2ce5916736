//! REST forwarding: bytes of path, query and body pass unchanged, headers are
//! cleaned as they cross, responses pass untouched, bodies stream both ways.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::support::*;

#[tokio::test]
async fn path_and_query_reach_sfmc_byte_for_byte() {
    let s = setup().await;
    let cases = [
        ("/hub/v1/dataevents/key:MyDE/rowset", None),
        ("//hub/v1/dataevents/key:MyDE/rowset", None),
        (
            "/data/v1/customobjectdata/key/My%20DE/rowset",
            Some("$filter=Email%20eq%20'a@b.c'&$page=1"),
        ),
        (
            "/asset/v1/content/assets",
            Some("$filter=name%20like%20'x'&$orderBy=id%20desc&a=%2F%3F"),
        ),
        (
            "/messaging/v1/email/messages/a%2Fb",
            Some("q=a+b&x=%E2%82%AC"),
        ),
    ];
    for (path, query) in cases {
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let reply = s.client.get(&s.proxy, &target, &[]).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        let echo = reply.json();
        assert_eq!(echo["path"], path, "{target}");
        assert_eq!(echo["query"].as_str(), query, "{target}");
    }
}

#[tokio::test]
async fn method_and_body_pass_unchanged_with_the_tenant_token() {
    let s = setup().await;
    let body = br#"{"items":[{"Email":"a@example.com","Name":"\u00e9"}]}"#.to_vec();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let req = request(
            method,
            &s.proxy,
            "/data/v1/async/dataextensions/key:DE/rows",
            &[("content-type", "application/json")],
            full(body.clone()),
        );
        let reply = s.client.fetch(req).await;
        assert_eq!(reply.status, 200, "{method}");
        let echo = reply.json();
        assert_eq!(echo["method"], method);
        assert_eq!(
            echo["version"], "HTTP/1.1",
            "plain-http loopback instance: HTTP/1.1"
        );
        assert_eq!(echo["body_len"], body.len());
        assert_eq!(
            echo["body_sha256"],
            data_encoding::HEXLOWER.encode(&Sha256::digest(&body))
        );
        assert_eq!(echo["headers"]["content-type"], "application/json");
        let auth = echo["headers"]["authorization"]
            .as_str()
            .expect("authorization forwarded");
        // The fake names the token it accepted (it never echoes one).
        assert_eq!(auth, "Bearer <fake token #1>");
    }
}

#[tokio::test]
async fn client_credentials_control_and_hop_by_hop_headers_never_reach_sfmc() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&["inbound-key-0123456789"]))
        .start()
        .await;
    let headers = [
        ("authorization", "Bearer client-placeholder"),
        ("proxy-authorization", "Bearer inbound-key-0123456789"),
        ("x-sfmc-tenant", "acme"),
        ("x-sfmc-account-id", "123"),
        ("x-sfmc-scope", "email_read"),
        ("connection", "x-hop-named"),
        ("x-hop-named", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("x-request-id", "kept-123"),
        ("accept", "application/json"),
    ];
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["headers"].clone();
    for gone in [
        "proxy-authorization",
        "x-sfmc-tenant",
        "x-sfmc-account-id",
        "x-sfmc-scope",
        "x-hop-named",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-proxy-key",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} reached SFMC: {seen}");
    }
    assert_eq!(seen["x-request-id"], "kept-123");
    assert_eq!(seen["accept"], "application/json");
    let auth = seen["authorization"].as_str().unwrap_or_default();
    // Only the fake's own token passes its check, so the client's is gone.
    assert_eq!(auth, "Bearer <fake token #1>");
    let host = seen["host"].as_str().unwrap_or_default();
    assert_eq!(host, s.fake.addr().to_string(), "Host is the instance's");
    // A request id named in Connection still reaches SFMC: it is the id the
    // log and the client are given.
    let named = [
        ("x-proxy-key", "inbound-key-0123456789"),
        ("x-request-id", "kept-456"),
        ("connection", "x-request-id"),
    ];
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &named).await;
    assert_eq!(
        reply.json()["headers"]["x-request-id"],
        "kept-456",
        "{}",
        reply.text()
    );
    assert_eq!(
        reply.headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"kept-456"[..])
    );
    // The key's other spelling is stripped too.
    let by_header = [("x-proxy-key", "inbound-key-0123456789")];
    let reply = s.client.get(&s.proxy, "/hub/v1/x", &by_header).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["headers"].clone();
    assert!(
        seen.get("x-proxy-key").is_none(),
        "x-proxy-key reached SFMC: {seen}"
    );
}

#[tokio::test]
async fn responses_pass_through_untouched_except_hop_by_hop_headers() {
    let s = setup().await;
    let query = "status=429&header=Retry-After:30&header=Content-Encoding:gzip&header=X-Mashery-Error-Code:ERR_403&header=Connection:x-drop&header=x-drop:1&header=Keep-Alive:timeout%3D5";
    let reply = s
        .client
        .get(&s.proxy, &format!("/fake/respond?{query}"), &[])
        .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.proxy_error(), None, "SFMC's answer, not the proxy's");
    assert_eq!(reply.headers["retry-after"], "30");
    assert_eq!(reply.headers["content-encoding"], "gzip");
    assert_eq!(reply.headers["x-mashery-error-code"], "ERR_403");
    assert!(reply.headers.get("x-drop").is_none());
    assert!(reply.headers.get("keep-alive").is_none());
    assert_eq!(reply.json()["status"], 429);
}

#[tokio::test]
async fn first_response_bytes_arrive_before_sfmc_finishes() {
    let s = setup().await;
    let response = s
        .client
        .send(request("GET", &s.proxy, "/fake/gated", &[], empty()))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The fake holds back the second chunk until released: receiving the first
    // proves the proxy does not wait for the whole body.
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"first\n");
    s.fake.release_gate();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"second\n");
}

#[tokio::test]
async fn upload_streams_to_sfmc_before_the_client_finishes_sending() {
    let s = setup().await;
    let (mut tx, body) = channel_body();
    let req = request("POST", &s.proxy, "/fake/upload-gated", &[], body);
    let client = s.client.clone();
    let pending = tokio::spawn(async move { client.fetch(req).await });
    tx.send_data(Bytes::from_static(b"part one;"))
        .await
        .expect("send");
    // Only once the fake has bytes do we send the rest: a buffering proxy would hang here.
    s.fake.upload_started().await;
    tx.send_data(Bytes::from_static(b"part two"))
        .await
        .expect("send");
    drop(tx);
    let reply = pending.await.expect("task");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["body_sha256"],
        data_encoding::HEXLOWER.encode(&Sha256::digest(b"part one;part two"))
    );
}

#[tokio::test]
async fn large_bodies_stream_both_ways_intact() {
    let s = setup().await;
    let size: usize = 32 * 1024 * 1024;
    let response = s
        .client
        .send(request(
            "GET",
            &s.proxy,
            &format!("/fake/download?bytes={size}"),
            &[],
            empty(),
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        size.to_string().as_str()
    );
    let mut body = response.into_body();
    let (mut received, mut hasher) = (0usize, Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            received += data.len();
            hasher.update(&data);
        }
    }
    assert_eq!(received, size);
    let expected: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        data_encoding::HEXLOWER.encode(&hasher.finalize()),
        data_encoding::HEXLOWER.encode(&Sha256::digest(&expected))
    );

    // Upload the same bytes in chunks through a streamed (non-replayable) body.
    let (mut tx, upload) = channel_body();
    let req = request("PUT", &s.proxy, "/data/upload", &[], upload);
    let client = s.client.clone();
    let pending = tokio::spawn(async move { client.fetch(req).await });
    for chunk in expected.chunks(1 << 20) {
        tx.send_data(Bytes::copy_from_slice(chunk))
            .await
            .expect("send");
    }
    drop(tx);
    let reply = pending.await.expect("task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_len"], size);
    assert_eq!(
        reply.json()["body_sha256"],
        data_encoding::HEXLOWER.encode(&Sha256::digest(&expected))
    );
}

#[tokio::test]
async fn health_answers_and_unknown_admin_paths_are_not_forwarded() {
    let s = setup().await;
    let health = s.client.get(&s.proxy, "/_proxy/health", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let unknown = s.client.get(&s.proxy, "/_proxy/nope", &[]).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.proxy_error(), Some("not_found"));
    assert_eq!(s.fake.rest_requests(), 0, "admin paths never reach SFMC");
    assert_eq!(s.fake.token_requests(), 0);
}

#[tokio::test]
async fn http2_clients_are_served_too() {
    let s = setup().await;
    let response = TestClient::http2()
        .send(request("GET", &s.proxy, "/hub/v1/h2?x=%20", &[], empty()))
        .await;
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body");
    let echo: serde_json::Value = serde_json::from_slice(&body.to_bytes()).expect("json");
    assert_eq!(echo["path"], "/hub/v1/h2");
    assert_eq!(echo["query"], "x=%20");
}

#[tokio::test]
async fn unreachable_instance_is_a_clear_502() {
    // A port that was just closed: nothing listens there.
    let closed = closed_port();
    let auth_url = static_auth_server(serde_json::json!({
        "access_token": "t", "token_type": "Bearer", "expires_in": 1080,
        "rest_instance_url": format!("http://{closed}/"), "soap_instance_url": format!("http://{closed}/")
    }))
    .await;
    let proxy = TestProxy::builder()
        .tenant(Tenant::at("acme", &auth_url))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.proxy_error(), Some("upstream_unavailable"));
    assert!(reply.message().contains("could not reach"));
}

#[tokio::test]
async fn silent_instance_is_a_504_after_response_timeout() {
    let hole = black_hole().await;
    let auth_url = static_auth_server(serde_json::json!({
        "access_token": "t", "token_type": "Bearer", "expires_in": 1080,
        "rest_instance_url": format!("http://{hole}/")
    }))
    .await;
    let proxy = TestProxy::builder()
        .response_timeout(Duration::from_millis(300))
        .tenant(Tenant::at("acme", &auth_url))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.proxy_error(), Some("upstream_timeout"));
}

#[tokio::test]
async fn instance_that_never_accepts_is_a_502_after_connect_timeout() {
    let (addr, _held) = unconnectable().await;
    let auth_url = static_auth_server(serde_json::json!({
        "access_token": "t", "token_type": "Bearer", "expires_in": 1080,
        "rest_instance_url": format!("http://{addr}/")
    }))
    .await;
    // The response timeout is far away: only connect_timeout can end this early.
    let proxy = TestProxy::builder()
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_secs(120))
        .tenant(Tenant::at("acme", &auth_url))
        .start()
        .await;
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        TestClient::new().get(&proxy, "/hub/v1/x", &[]),
    )
    .await
    .expect("connect_timeout ends the request long before response_timeout");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.proxy_error(), Some("upstream_unavailable"));
    assert!(
        reply
            .message()
            .contains("timed out after upstream.connect_timeout"),
        "names the setting that ended it: {}",
        reply.message()
    );
}

#[tokio::test]
async fn ready_says_whether_every_tenant_can_get_a_token() {
    let s = setup().await;
    let ready = s.client.get(&s.proxy, "/_proxy/ready", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["tenants"]["acme"]["ready"], true);
    assert_eq!(ready.json()["tenants"]["acme"]["state"], "ready");
    assert!(!ready.text().contains("fake-"), "no token in the answer");

    let refused = setup().await;
    refused.fake.set_auth_failure(Some(AuthFailure::Reject {
        status: 401,
        error: "invalid_client".into(),
        description: "Client authentication failed.".into(),
    }));
    let ready = refused
        .client
        .get(&refused.proxy, "/_proxy/ready", &[])
        .await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["tenants"]["acme"]["error"], "token_rejected");
    assert_eq!(ready.json()["tenants"]["acme"]["state"], "failing");
}
