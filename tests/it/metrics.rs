//! `/_proxy/metrics`: what is counted equals what happened (token requests
//! equal what the fake SFMC saw), labels stay bounded, the key guards it
//! (also as `Authorization: Bearer`, as Prometheus sends it), and nothing
//! secret is in it. The exposition's validity under strict parsers and a
//! real Prometheus scrape are in `prometheus`.

use crate::support::soap::*;
use crate::support::*;

/// The value of the sample `series` (name and labels exactly as written).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

pub async fn scrape(client: &TestClient, proxy: &TestProxy, headers: &[(&str, &str)]) -> Reply {
    client.get(proxy, "/_proxy/metrics", headers).await
}

#[tokio::test]
async fn token_requests_equal_what_sfmc_saw_and_lookups_say_how_each_request_got_its_token() {
    let s = Setup::builder()
        .tenant(|t| t.account_ids(&["100", "200"]))
        .start()
        .await;
    for _ in 0..3 {
        let reply = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
        assert_eq!(reply.status, 200);
    }
    let bu = s
        .client
        .get(&s.proxy, "/hub/v1/y", &[("x-sfmc-account-id", "200")])
        .await;
    assert_eq!(bu.status, 200);
    // An odd method and a MID outside account_ids: bounded labels.
    let refused = s
        .client
        .get(&s.proxy, "/hub/v1/y", &[("x-sfmc-account-id", "31337")])
        .await;
    assert_eq!(refused.status, 403);

    let reply = scrape(&s.client, &s.proxy, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = reply.text();
    let sent = |mid: &str| {
        let series = format!(
            r#"sfmc_proxy_token_requests_total{{tenant="acme",mid="{mid}",result="ok",error=""}}"#
        );
        sample(&text, &series).unwrap_or(0.0)
    };
    assert_eq!(
        sent("default") + sent("200"),
        s.fake.token_requests() as f64
    );
    assert_eq!((sent("default"), sent("200")), (1.0, 1.0));
    let requests = |code: &str| {
        let series = format!(
            r#"sfmc_proxy_requests_total{{tenant="acme",api="rest",method="GET",code="{code}"}}"#
        );
        sample(&text, &series)
    };
    assert_eq!(requests("200"), Some(4.0), "{text}");
    let lookups = |result: &str| {
        let series =
            format!(r#"sfmc_proxy_token_lookups_total{{tenant="acme",result="{result}"}}"#);
        sample(&text, &series)
    };
    assert_eq!((lookups("fetch"), lookups("hit")), (Some(2.0), Some(2.0)));
    let counted = sample(
        &text,
        r#"sfmc_proxy_business_unit_requests_total{tenant="acme",mid="default",outcome="ok"}"#,
    );
    assert_eq!(counted, Some(3.0));
    let expiry = sample(
        &text,
        r#"sfmc_proxy_token_expiry_timestamp_seconds{tenant="acme",mid="200"}"#,
    );
    assert!(expiry.is_some_and(|at| at > 1.7e9), "{text}");
    // The MID outside account_ids is no label; nor is any path or address.
    for absent in ["31337", "/hub", "127.0.0.1", CLIENT_SECRET] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    let token = s.fake.last_issued_token().expect("a token was issued");
    assert!(!text.contains(&token));
    // The scrape itself is a request too, counted once its response ends.
    let again = scrape(&s.client, &s.proxy, &[]).await.text();
    let scrapes =
        r#"sfmc_proxy_requests_total{tenant="unknown",api="proxy",method="GET",code="200"}"#;
    assert_eq!(sample(&again, scrapes), Some(1.0), "{again}");
    assert_eq!(sample(&again, "sfmc_proxy_requests_in_flight"), Some(1.0));
}

#[tokio::test]
async fn the_inbound_key_guards_the_metrics_and_may_come_as_a_bearer() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&["metrics-key-0123456789"]))
        .start()
        .await;
    let none = scrape(&s.client, &s.proxy, &[]).await;
    assert_eq!(
        (none.status, none.proxy_error()),
        (401, Some("inbound_key_required"))
    );
    let wrong = scrape(&s.client, &s.proxy, &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    let bearer = scrape(
        &s.client,
        &s.proxy,
        &[("authorization", "Bearer metrics-key-0123456789")],
    )
    .await;
    assert_eq!(bearer.status, 200, "{}", bearer.text());
    assert!(bearer.text().ends_with("# EOF\n"));
    let header = scrape(
        &s.client,
        &s.proxy,
        &[("x-proxy-key", "metrics-key-0123456789")],
    )
    .await;
    assert_eq!(header.status, 200);
    let key = [("x-proxy-key", "metrics-key-0123456789")];
    let posted = s.client.post(&s.proxy, "/_proxy/metrics", &key, "").await;
    assert_eq!(posted.status, 405);
    assert_eq!(posted.headers["allow"], "GET, HEAD");
    // Only on /_proxy/*: elsewhere `Authorization` is the caller's own and
    // never counts as the inbound key.
    let api = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("authorization", "Bearer metrics-key-0123456789")],
        )
        .await;
    assert_eq!(
        (api.status, api.proxy_error()),
        (401, Some("inbound_key_required"))
    );
    assert_eq!(s.fake.rest_requests(), 0);
}

#[tokio::test]
async fn throttling_replays_and_connections_are_counted() {
    let s = setup().await;
    let throttled = s
        .client
        .get(
            &s.proxy,
            "/fake/respond?status=429&header=Retry-After:30",
            &[],
        )
        .await;
    assert_eq!(throttled.status, 429);
    s.fake.set_soap_rate_limited(true);
    let limited = soap(&s, "/Service.asmx", envelope("")).await;
    assert_eq!(limited.status, 500);
    s.fake.set_soap_rate_limited(false);
    // SFMC refuses the token once: one replay with a fresh one.
    s.fake.revoke_all_tokens();
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);

    let text = scrape(&s.client, &s.proxy, &[]).await.text();
    let throttled = |api: &str| {
        let series = format!(r#"sfmc_proxy_upstream_throttled_total{{tenant="acme",api="{api}"}}"#);
        sample(&text, &series)
    };
    assert_eq!(
        (throttled("rest"), throttled("soap")),
        (Some(1.0), Some(1.0)),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"sfmc_proxy_replays_total{tenant="acme",api="rest"}"#
        ),
        Some(1.0)
    );
    // This scrape's own connection is open; the pool holds SFMC's.
    let clients = sample(&text, "sfmc_proxy_client_connections").unwrap_or(0.0);
    assert!(clients >= 1.0, "{text}");
    let upstream = sample(&text, "sfmc_proxy_upstream_connections").unwrap_or(0.0);
    assert!(upstream >= 1.0, "{text}");
    assert!(text.contains("sfmc_proxy_build_info{version=\""));
}

#[tokio::test]
async fn the_admin_address_serves_the_proxy_paths_without_the_key_and_nothing_else() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&["main-listener-key-0123"]).admin_listener())
        .start()
        .await;
    let admin = s.proxy.admin();
    let metrics = scrape(&s.client, &admin, &[]).await;
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert!(metrics.text().contains("sfmc_proxy_build_info"));
    let ready = s.client.get(&admin, "/_proxy/ready", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    // API calls are not served there, with or without a key, and reach no SFMC.
    let api = s.client.get(&admin, "/hub/v1/x", &[]).await;
    assert_eq!((api.status, api.proxy_error()), (404, Some("not_found")));
    assert!(api.message().contains("server.listen"), "{}", api.message());
    assert_eq!(s.fake.rest_requests(), 0);
    // A person's login acts for the tenant: not without the key.
    let login = s.client.get(&admin, "/_proxy/login?tenant=acme", &[]).await;
    assert_eq!(
        (login.status, login.proxy_error()),
        (404, Some("not_found"))
    );
    assert!(
        login.message().contains("sfmc-proxy login"),
        "{}",
        login.message()
    );
    // A rebinding web page's Host is refused there too.
    let rebound = s
        .client
        .get(&admin, "/_proxy/metrics", &[("host", "evil.example")])
        .await;
    assert_eq!(
        (rebound.status, rebound.proxy_error()),
        (403, Some("host_not_allowed"))
    );
    // The main address still wants the key for the same paths.
    let main = scrape(&s.client, &s.proxy, &[]).await;
    assert_eq!(main.status, 401);
}

#[tokio::test]
async fn a_login_tenant_without_a_login_counts_no_token_request_it_never_sent() {
    let fake = start_fake().await;
    let dir = temp_dir("metrics-login");
    let proxy = TestProxy::builder()
        .store_file(&dir.join("tokens.json"))
        .tenant(
            Tenant::new("acme", &fake)
                .grant("authorization_code")
                .redirect_uri("https://127.0.0.1:1/callback"),
        )
        .start()
        .await;
    let client = TestClient::new();
    // A probe and a request both find no stored login: nothing is sent.
    let ready = client.get(&proxy, "/_proxy/ready?tenant=acme", &[]).await;
    assert_eq!(ready.json()["state"], "login_required", "{}", ready.text());
    let call = client.get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(
        call.proxy_error(),
        Some("login_required"),
        "{}",
        call.text()
    );
    assert_eq!(fake.token_requests(), 0);
    let text = scrape(&client, &proxy, &[]).await.text();
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sfmc_proxy_token_requests_total{"))
        .collect();
    assert_eq!(
        counted,
        [r#"sfmc_proxy_token_requests_total{tenant="acme",mid="default",result="ok",error=""} 0"#],
        "requests never sent are not counted (the 0 is there for alerts):\n{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
