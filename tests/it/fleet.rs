//! Replicas sharing tokens through a real Redis (`[redis]`): several
//! proxies in front of one fake tenant behave as one — a stampede of cold
//! requests costs one token request, a revocation one new token, a new
//! replica none; nothing in Redis reads as a token; and with Redis gone
//! they keep serving, each on its own, until it is back.

use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::*;

/// A proxy for tenant `acme` of `fake`, sharing tokens through `redis`,
/// without the start-up fetch (so that a test decides when tokens are asked).
async fn replica(fake: &FakeTenant, redis: &RedisServer) -> TestProxy {
    TestProxy::builder()
        .redis(&redis.url())
        .prefetch(false)
        .tenant(Tenant::new("acme", fake))
        .start()
        .await
}

/// `n` GETs of `/hub/v1/x` at once, spread over `replicas` in turn: the replies.
async fn spread(replicas: &[TestProxy], n: usize) -> Vec<Reply> {
    let client = TestClient::new();
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (
                client.clone(),
                replicas[i % replicas.len()].url("/hub/v1/x"),
            );
            tokio::spawn(async move {
                let request = http::Request::get(url).body(empty()).expect("request");
                client.fetch(request).await
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for request in requests {
        replies.push(request.await.expect("task"));
    }
    replies
}

async fn status(client: &TestClient, proxy: &TestProxy, path: &str) -> u16 {
    client.get(proxy, path, &[]).await.status
}

#[tokio::test]
async fn three_hundred_cold_requests_on_three_replicas_cost_one_token_request() {
    let dir = temp_dir("fleet-stampede");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let replicas = [
        replica(&fake, &redis).await,
        replica(&fake, &redis).await,
        replica(&fake, &redis).await,
    ];
    for reply in spread(&replicas, 300).await {
        assert_eq!(reply.status, 200);
    }
    assert_eq!(fake.token_requests(), 1, "one token for the whole fleet");
}

#[tokio::test]
async fn nothing_in_redis_reads_as_a_token_a_secret_or_a_name() {
    let dir = temp_dir("fleet-sealed");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let proxy = replica(&fake, &redis).await;
    let client = TestClient::new();
    assert_eq!(status(&client, &proxy, "/hub/v1/x").await, 200);
    let token = fake.last_issued_token().expect("a token was issued");
    let entries = redis.dump().await;
    assert!(!entries.is_empty(), "the token was shared");
    for (key, value) in &entries {
        assert!(key.starts_with("sfmc-proxy:"), "{key}");
        for plain in [
            token.as_str(),
            "acme",
            "fake-client-id",
            "fake-client-secret",
            "127.0.0.1",
        ] {
            assert!(!key.contains(plain), "{key} names {plain}");
            let shown = String::from_utf8_lossy(value);
            assert!(
                !shown.contains(plain),
                "{key}'s value holds {plain}: {shown}"
            );
        }
    }
}

#[tokio::test]
async fn a_new_replica_serves_with_the_fleet_s_token_without_asking_sfmc() {
    let dir = temp_dir("fleet-restart");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let client = TestClient::new();
    let first = replica(&fake, &redis).await;
    assert_eq!(status(&client, &first, "/hub/v1/x").await, 200);
    drop(first);
    let restarted = replica(&fake, &redis).await;
    let reply = client.get(&restarted, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["token_number"], 1, "the same token");
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn a_revocation_costs_the_fleet_one_new_token() {
    let dir = temp_dir("fleet-revoke");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let client = TestClient::new();
    let (a, b) = (replica(&fake, &redis).await, replica(&fake, &redis).await);
    assert_eq!(status(&client, &a, "/hub/v1/x").await, 200);
    assert_eq!(status(&client, &b, "/hub/v1/x").await, 200);
    assert_eq!(fake.token_requests(), 1);

    fake.revoke_all_tokens();
    // Each replica meets SFMC's 401 with its cached token and replays with
    // a fresh one: the first fetches it, the second finds it in Redis.
    let on_a = client.get(&a, "/hub/v1/x", &[]).await;
    assert_eq!(
        (on_a.status, &on_a.json()["token_number"]),
        (200, &2.into())
    );
    let on_b = client.get(&b, "/hub/v1/x", &[]).await;
    assert_eq!(
        (on_b.status, &on_b.json()["token_number"]),
        (200, &2.into())
    );
    assert_eq!(fake.token_requests(), 2, "one new token for the fleet");
}

#[tokio::test]
async fn without_redis_replicas_serve_alone_and_share_again_once_it_is_back() {
    let dir = temp_dir("fleet-down");
    let mut redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let client = TestClient::new();
    let warm = replica(&fake, &redis).await;
    assert_eq!(status(&client, &warm, "/hub/v1/x").await, 200);

    redis.stop().await;
    // A replica with its token goes on; a cold one fetches its own.
    assert_eq!(status(&client, &warm, "/hub/v1/x").await, 200);
    let cold = replica(&fake, &redis).await;
    assert_eq!(status(&client, &cold, "/hub/v1/x").await, 200);
    assert_eq!(fake.token_requests(), 2, "the cold replica fetched alone");

    // Back (empty): the next cold replica shares its token again.
    redis.restart().await;
    let (c, d) = (replica(&fake, &redis).await, replica(&fake, &redis).await);
    assert_eq!(status(&client, &c, "/hub/v1/x").await, 200);
    assert_eq!(status(&client, &d, "/hub/v1/x").await, 200);
    assert_eq!(fake.token_requests(), 3, "c fetched, d took c's from Redis");
}

#[tokio::test]
async fn while_redis_is_down_tenants_are_degraded_and_its_errors_counted() {
    let dir = temp_dir("fleet-degraded");
    let mut redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let client = TestClient::new();
    let proxy = replica(&fake, &redis).await;
    assert_eq!(status(&client, &proxy, "/hub/v1/x").await, 200);
    let text = crate::metrics::scrape(&client, &proxy, &[]).await.text();
    assert_eq!(
        crate::metrics::sample(&text, "sfmc_proxy_redis_up"),
        Some(1.0),
        "{text}"
    );

    redis.stop().await;
    // A business unit not fetched yet: a token fetch, which meets no Redis.
    let other_bu = [("x-sfmc-account-id", "200")];
    assert_eq!(client.get(&proxy, "/hub/v1/x", &other_bu).await.status, 200);
    let ready = client.get(&proxy, "/_proxy/ready", &[]).await;
    assert_eq!(ready.status, 200, "degraded still serves: {}", ready.text());
    let acme = &ready.json()["tenants"]["acme"];
    assert_eq!(acme["state"], "degraded", "{acme}");
    let why = acme["degraded"].as_str().unwrap_or_default();
    assert!(
        why.contains("Redis at unix://") && why.contains("cannot be reached"),
        "{why}"
    );
    let text = crate::metrics::scrape(&client, &proxy, &[]).await.text();
    assert_eq!(
        crate::metrics::sample(&text, "sfmc_proxy_redis_up"),
        Some(0.0),
        "{text}"
    );
    let errors = r#"sfmc_proxy_redis_errors_total{op="get"}"#;
    assert!(
        crate::metrics::sample(&text, errors).is_some_and(|n| n >= 1.0),
        "{text}"
    );

    redis.restart().await;
    let third_bu = [("x-sfmc-account-id", "300")];
    assert_eq!(client.get(&proxy, "/hub/v1/x", &third_bu).await.status, 200);
    let ready = client.get(&proxy, "/_proxy/ready", &[]).await;
    assert_eq!(
        ready.json()["tenants"]["acme"]["state"],
        "ready",
        "{}",
        ready.text()
    );
    let text = crate::metrics::scrape(&client, &proxy, &[]).await.text();
    assert_eq!(
        crate::metrics::sample(&text, "sfmc_proxy_redis_up"),
        Some(1.0),
        "{text}"
    );
}

/// A replica process's log: its start-up line, no access events (nobody
/// reads its stderr while the requests run, and a full pipe would stall it).
const QUIET: &str = "info,sfmc_proxy::access=off";

/// `acme` of `fake` sharing through `redis`, as a builder (for processes).
fn replica_config(fake: &FakeTenant, redis: &RedisServer) -> ProxyBuilder {
    TestProxy::builder()
        .redis(&redis.url())
        .prefetch(false)
        .tenant(Tenant::new("acme", fake))
}

#[tokio::test]
async fn a_replica_sees_redis_go_and_come_back_without_any_request() {
    let dir = temp_dir("fleet-probe");
    let mut redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    redis.stop().await;
    let mut replica = Binary::start("fleet-probe", replica_config(&fake, &redis), "info").await;
    let message = |start: &'static str| {
        move |event: &serde_json::Value| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(start))
        }
    };
    replica.event(message("Redis is down")).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let metrics = |client: reqwest::Client, url: String| async move {
        let reply = client.get(url).send().await.expect("metrics");
        reply.text().await.expect("text")
    };
    let url = replica.url("/_proxy/metrics");
    let text = metrics(client.clone(), url.clone()).await;
    assert_eq!(
        crate::metrics::sample(&text, "sfmc_proxy_redis_up"),
        Some(0.0),
        "{text}"
    );
    let pings = r#"sfmc_proxy_redis_errors_total{op="ping"}"#;
    assert!(
        crate::metrics::sample(&text, pings).is_some_and(|n| n >= 1.0),
        "{text}"
    );

    redis.restart().await;
    replica.next_event(message("Redis answers again")).await;
    let text = metrics(client, url).await;
    assert_eq!(
        crate::metrics::sample(&text, "sfmc_proxy_redis_up"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(fake.token_requests(), 0, "no token was asked for");
}

#[tokio::test]
async fn three_replica_processes_share_one_token() {
    let dir = temp_dir("fleet-processes");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let mut replicas = Vec::new();
    for i in 0..3 {
        let name = format!("fleet-{i}");
        replicas.push(Binary::start(&name, replica_config(&fake, &redis), QUIET).await);
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut requests = Vec::new();
    for i in 0..300 {
        let request = client.get(replicas[i % 3].url("/hub/v1/x")).send();
        requests.push(tokio::spawn(request));
    }
    for request in requests {
        let reply = request.await.expect("task").expect("reply");
        assert_eq!(reply.status(), 200);
    }
    assert_eq!(fake.token_requests(), 1, "one token for three processes");
}

#[tokio::test]
async fn a_replica_killed_holding_the_lock_frees_it_after_the_lease() {
    let dir = temp_dir("fleet-killed");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    fake.set_auth_failure(Some(AuthFailure::Hang));
    let config = replica_config(&fake, &redis).redis_lock_timeout(Duration::from_secs(1));
    let holder = Binary::start("fleet-holder", config, QUIET).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let stuck = tokio::spawn(client.get(holder.url("/hub/v1/x")).send());
    // The holder took the lock, then asked SFMC, which does not answer.
    while fake.token_requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let locks = redis.dump().await;
    assert!(
        locks.iter().any(|(key, _)| key.contains(":lock:")),
        "{locks:?}"
    );
    holder.stop().await;
    let _ = stuck.await;
    fake.set_auth_failure(None);

    // Another replica waits out the dead holder's lease, then fetches.
    let next = TestProxy::builder()
        .redis(&redis.url())
        .redis_lock_timeout(Duration::from_secs(1))
        .prefetch(false)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let reply = TestClient::new().get(&next, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        fake.token_requests(),
        2,
        "the dead one's request and the new one"
    );
}

#[tokio::test]
async fn a_local_token_from_one_replica_is_honoured_by_every_other() {
    let dir = temp_dir("fleet-broker");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let client = TestClient::new();
    let (a, b) = (replica(&fake, &redis).await, replica(&fake, &redis).await);
    let body = r#"{"grant_type":"client_credentials","client_id":"acme","client_secret":"x","account_id":"200"}"#;
    let json = [("content-type", "application/json")];
    let issued = client.post(&a, "/v2/token", &json, body).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let local = issued.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(local.starts_with("sfmcproxy_"), "{local}");
    let bearer = format!("Bearer {local}");
    let auth = [("authorization", bearer.as_str())];
    // The tool's next call lands on the other replica.
    let served = client.get(&b, "/hub/v1/x", &auth).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(
        served.json()["account_id"],
        "200",
        "bound to the token's business unit"
    );
    assert_eq!(
        fake.token_requests(),
        1,
        "b used the fleet's token for that unit"
    );

    // A replica outside the fleet does not know it: the tool authenticates again.
    let alone = TestProxy::builder()
        .prefetch(false)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let refused = client.get(&alone, "/hub/v1/x", &auth).await;
    assert_eq!(
        (refused.status, refused.proxy_error()),
        (401, Some("local_token_invalid"))
    );
}

#[tokio::test]
async fn the_token_rate_limit_counts_every_replica_together() {
    let dir = temp_dir("fleet-budget");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let limited = || {
        TestProxy::builder()
            .redis(&redis.url())
            .prefetch(false)
            .rate_burst(1)
            .rate_interval(Duration::from_secs(3600))
            .tenant(Tenant::new("acme", &fake))
            .start()
    };
    let (a, b) = (limited().await, limited().await);
    let client = TestClient::new();
    let first_bu = [("x-sfmc-account-id", "100")];
    assert_eq!(client.get(&a, "/hub/v1/x", &first_bu).await.status, 200);
    // Another business unit on the other replica: its own bucket is full,
    // the fleet's is empty.
    let other_bu = [("x-sfmc-account-id", "200")];
    let held = client.get(&b, "/hub/v1/x", &other_bu).await;
    assert_eq!(
        (held.status, held.proxy_error()),
        (503, Some("token_unavailable"))
    );
    let message = held.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("the fleet's token rate limit"),
        "{message}"
    );
    assert!(held.headers.contains_key("retry-after"));
    assert_eq!(
        fake.token_requests(),
        1,
        "nothing sent for the held-back one"
    );
    // The first business unit's token is the fleet's: b serves it.
    assert_eq!(client.get(&b, "/hub/v1/x", &first_bu).await.status, 200);
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_a_few_timeouts_then_the_replica_goes_alone() {
    // Connections are taken (the kernel's backlog) and never answered.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}/0", blackhole.local_addr().expect("addr"));
    let fake = start_fake().await;
    let proxy = TestProxy::builder()
        .redis(&url)
        .prefetch(false)
        .request_timeout(Duration::from_secs(3))
        .fetch_deadline(Duration::from_secs(3))
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(fake.token_requests(), 1, "fetched alone, once");
}

#[tokio::test]
async fn dropping_a_token_on_the_status_page_gets_the_fleet_a_new_one() {
    let dir = temp_dir("fleet-drop");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let client = TestClient::new();
    let a = replica(&fake, &redis).await;
    let b = replica(&fake, &redis).await;
    assert_eq!(status(&client, &a, "/hub/v1/x").await, 200);
    assert_eq!(status(&client, &b, "/hub/v1/x").await, 200);
    let json = [("accept", "application/json")];
    // The page comes from one replica, its form is posted to another (a
    // load balancer does not keep a browser on one): the form token is
    // the fleet's.
    let page = client.get(&a, "/_proxy/status", &json).await.json();
    let form_token = page["actions"]["drop"]["form_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let form = format!("tenant=acme&account_id=&scope=&form_token={form_token}");
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        json[0],
    ];
    let dropped = client.post(&b, "/_proxy/status/drop", &headers, form).await;
    assert_eq!(dropped.json()["dropped"], true, "{}", dropped.text());

    let again = client.get(&b, "/hub/v1/x", &[]).await;
    assert_eq!(
        again.json()["token_number"],
        2,
        "a new token, not the fleet's old one"
    );
    let newcomer = replica(&fake, &redis).await;
    let shared = client.get(&newcomer, "/hub/v1/x", &[]).await;
    assert_eq!(
        shared.json()["token_number"],
        2,
        "the fleet's entry is the new one"
    );
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn rediss_reaches_a_tls_redis_whose_ca_is_redis_ca_file() {
    let dir = temp_dir("fleet-tls");
    let redis = RedisServer::start_tcp(&dir).await;
    let tls = tls_server_with_ca(&dir);
    let backend = redis.tcp_addr().expect("tcp");
    let front =
        crate::support::forward_proxy::TlsFront::start(&dir, backend, &tls.cert, &tls.key).await;
    let url = format!("rediss://localhost:{}/0", front.addr().port());
    let fake = start_fake().await;
    let shared = || {
        TestProxy::builder()
            .redis(&url)
            .redis_ca_file(&tls.ca)
            .prefetch(false)
            .tenant(Tenant::new("acme", &fake))
            .start()
    };
    let (a, b) = (shared().await, shared().await);
    let client = TestClient::new();
    assert_eq!(status(&client, &a, "/hub/v1/x").await, 200);
    assert_eq!(status(&client, &b, "/hub/v1/x").await, 200);
    assert_eq!(fake.token_requests(), 1, "shared over TLS");
    assert!(!redis.dump().await.is_empty());
}

#[tokio::test]
async fn the_token_command_prints_the_fleet_s_token_without_asking_sfmc() {
    let dir = temp_dir("fleet-token-command");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let proxy = replica(&fake, &redis).await;
    assert_eq!(status(&TestClient::new(), &proxy, "/hub/v1/x").await, 200);
    let config = config_file(
        "fleet-token-command",
        &replica_config(&fake, &redis).render(),
    );
    let printed = succeeded(&run_binary(&["token"], &config, &[]).await);
    let issued = fake.last_issued_token().expect("issued");
    assert_eq!(printed.trim(), issued, "the fleet's token");
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn a_replica_with_another_encryption_key_is_told_it_is_not_in_the_fleet() {
    let dir = temp_dir("fleet-canary");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    let first = replica(&fake, &redis).await;
    assert_eq!(status(&TestClient::new(), &first, "/hub/v1/x").await, 200);
    let other =
        replica_config(&fake, &redis).redis_encryption_key("another-key-of-32-characters-or-more");
    let mut stray = Binary::start("fleet-canary", other, QUIET).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let reply = client
        .get(stray.url("/hub/v1/x"))
        .send()
        .await
        .expect("reply");
    assert_eq!(reply.status(), 200, "it serves, alone");
    let warning = stray
        .next_event(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("different redis.encryption_key"))
        })
        .await;
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        fake.token_requests(),
        2,
        "the stray replica fetched its own"
    );
}

#[tokio::test]
async fn sfmc_s_refusal_is_shared_so_the_fleet_asks_once() {
    let dir = temp_dir("fleet-refusal");
    let redis = RedisServer::start(&dir).await;
    let fake = start_fake().await;
    fake.set_auth_failure(Some(invalid_client()));
    let replicas = [
        replica(&fake, &redis).await,
        replica(&fake, &redis).await,
        replica(&fake, &redis).await,
    ];
    for reply in spread(&replicas, 30).await {
        assert_eq!(
            (reply.status, reply.proxy_error()),
            (502, Some("token_rejected"))
        );
    }
    assert_eq!(
        fake.token_requests(),
        1,
        "one refused request for the fleet"
    );
}
