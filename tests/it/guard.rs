//! The guard in front of a credential-holding proxy: DNS rebinding, cross-site
//! browser requests, inbound keys, and no forward-proxy use.

use crate::support::*;

#[tokio::test]
async fn foreign_host_header_is_refused_before_any_token_is_used() {
    let s = setup().await;
    let reply = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[("host", "attacker.example:8080")])
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.proxy_error(), Some("host_not_allowed"));
    assert_eq!((s.fake.token_requests(), s.fake.rest_requests()), (0, 0));
    let ok = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("host", &format!("localhost:{}", s.proxy.addr.port()))],
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn allowed_hosts_can_be_configured() {
    let s = Setup::builder()
        .proxy(|p| p.allowed_hosts(&["proxy.internal"]))
        .start()
        .await;
    assert_eq!(
        s.client
            .get(&s.proxy, "/x", &[("host", "proxy.internal:8080")])
            .await
            .status,
        200
    );
    assert_eq!(
        s.client
            .get(&s.proxy, "/x", &[("host", "127.0.0.1")])
            .await
            .proxy_error(),
        Some("host_not_allowed")
    );
}

#[tokio::test]
async fn cross_site_browser_requests_are_refused() {
    let s = Setup::builder()
        .proxy(|p| p.allowed_origins(&["http://localhost:3000"]))
        .start()
        .await;
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let reply = s.client.post(&s.proxy, "/hub/v1/x", &headers, "{}").await;
        assert_eq!(reply.status, 403, "{headers:?}");
        assert_eq!(reply.proxy_error(), Some("cross_site_request"));
    }
    assert_eq!(s.fake.rest_requests(), 0);
    let allowed = s
        .client
        .post(
            &s.proxy,
            "/hub/v1/x",
            &[("origin", "http://localhost:3000")],
            "{}",
        )
        .await;
    assert_eq!(allowed.status, 200);
}

#[tokio::test]
async fn inbound_key_is_required_when_configured() {
    let key = "inbound-key-0123456789";
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&[key]))
        .start()
        .await;
    let none = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.proxy_error(), Some("inbound_key_required"));
    let wrong = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("x-proxy-key", "inbound-key-0123456780")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {key}");
    assert_eq!(
        s.client
            .get(&s.proxy, "/hub/v1/x", &[("proxy-authorization", &bearer)])
            .await
            .status,
        200
    );
    assert_eq!(
        s.client
            .get(&s.proxy, "/hub/v1/x", &[("x-proxy-key", key)])
            .await
            .status,
        200
    );
    assert_eq!(s.fake.rest_requests(), 2);
    // Without the key nothing is said about the tenants either.
    let probe = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[("x-sfmc-tenant", "guess")])
        .await;
    assert_eq!(probe.proxy_error(), Some("inbound_key_required"));
    assert!(!probe.text().contains("acme"), "{}", probe.text());
    // Liveness stays open to orchestrator probes.
    assert_eq!(
        s.client.get(&s.proxy, "/_proxy/health", &[]).await.status,
        200
    );
}

#[tokio::test]
async fn connect_and_absolute_form_targets_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    for request in [
        "CONNECT attacker.example:443 HTTP/1.1\r\nHost: attacker.example:443\r\n\r\n".to_owned(),
        "GET http://attacker.example/steal HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let mut stream = tokio::net::TcpStream::connect(s.proxy.addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = vec![0u8; 1024];
        let n = stream.read(&mut response).await.expect("read");
        let head = String::from_utf8_lossy(&response[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 403"), "{request:?} -> {head}");
        assert!(head.contains("x-sfmc-proxy-error"), "{head}");
    }
    assert_eq!((s.fake.token_requests(), s.fake.rest_requests()), (0, 0));
}

/// A browser pointed at the proxy asks for `/favicon.ico`: answered here,
/// never sent to SFMC with a token (with or without an inbound key).
#[tokio::test]
async fn a_browsers_favicon_request_is_answered_here_without_a_token() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&["inbound-key-0123456789"]))
        .start()
        .await;
    let reply = s.client.get(&s.proxy, "/favicon.ico", &[]).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(reply.body.is_empty());
    let cache = reply
        .headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok());
    assert_eq!(cache, Some("public, max-age=86400"));
    let head = s
        .client
        .fetch(request("HEAD", &s.proxy, "/favicon.ico", &[], empty()))
        .await;
    assert_eq!(head.status, 204, "HEAD too");
    assert_eq!((s.fake.token_requests(), s.fake.rest_requests()), (0, 0));
    // The Host check still comes first.
    let foreign = [("host", "attacker.example")];
    let refused = s.client.get(&s.proxy, "/favicon.ico", &foreign).await;
    assert_eq!(refused.proxy_error(), Some("host_not_allowed"));
}
