//! Running it as a service: per-tenant readiness (`/_proxy/ready?tenant=`,
//! `server.ready_requires`, login tenants left out, `starting` while the
//! prefetch runs) and the start-up prefetch (one token per client-credentials
//! tenant, one log line each).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

/// Two tenants: `good` (its fake issues tokens) and `bad` (its fake refuses
/// the package, as SFMC does a wrong secret); `good` is the default.
async fn good_and_bad(configure: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> Pair {
    let good = start_fake().await;
    let bad = start_fake().await;
    bad.set_auth_failure(Some(invalid_client()));
    let builder = TestProxy::builder()
        .tenant(Tenant::new("good", &good).default(true))
        .tenant(Tenant::new("bad", &bad));
    let proxy = configure(builder).start().await;
    Pair { good, bad, proxy }
}

struct Pair {
    good: FakeTenant,
    bad: FakeTenant,
    proxy: TestProxy,
}

/// Probes `/_proxy/ready?tenant=NAME` until it is 200: a bounded loop that
/// yields between probes (each probe is itself a round trip), never a sleep.
async fn wait_ready(proxy: &TestProxy, tenant: &str) -> Reply {
    let client = TestClient::new();
    let path = format!("/_proxy/ready?tenant={tenant}");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let reply = client.get(proxy, &path, &[]).await;
            if reply.status == 200 {
                return reply;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("tenant {tenant} never became ready"))
}

#[tokio::test]
async fn ready_per_tenant_is_200_for_a_ready_tenant_and_503_for_a_failing_one() {
    let s = good_and_bad(|b| b).await;
    let client = TestClient::new();
    let good = client.get(&s.proxy, "/_proxy/ready?tenant=good", &[]).await;
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(good.json()["state"], "ready");
    assert_eq!(good.json()["tenant"], "good");
    assert!(good.json()["expires_in_s"].as_u64().is_some_and(|s| s > 0));
    assert!(!good.text().contains("fake-"), "no token in the answer");

    let bad = client.get(&s.proxy, "/_proxy/ready?tenant=bad", &[]).await;
    assert_eq!(bad.status, 503, "{}", bad.text());
    let body = bad.json();
    assert_eq!(body["state"], "failing");
    assert_eq!(body["ready"], false);
    assert_eq!(body["error"], "token_rejected");
    assert_eq!(body["sfmc_error"], "invalid_client", "SFMC's words: {body}");
    assert!(
        body["sfmc_error_description"]
            .as_str()
            .is_some_and(|d| d.contains("Invalid client ID")),
        "{body}"
    );

    // Probes of a tenant in backoff, and of one with a token, send nothing.
    let (good_before, bad_before) = (s.good.token_requests(), s.bad.token_requests());
    assert_eq!((good_before, bad_before), (1, 1));
    for _ in 0..5 {
        let again = client.get(&s.proxy, "/_proxy/ready?tenant=bad", &[]).await;
        assert_eq!(again.json()["state"], "failing");
        let plain = client.get(&s.proxy, "/_proxy/ready", &[]).await;
        assert_eq!(plain.status, 503, "all: one failing tenant is enough");
    }
    assert_eq!(
        s.good.token_requests(),
        good_before,
        "a cached token costs nothing"
    );
    assert_eq!(
        s.bad.token_requests(),
        bad_before,
        "backoff: no new request"
    );

    let unknown = client.get(&s.proxy, "/_proxy/ready?tenant=nope", &[]).await;
    assert_eq!(
        unknown.proxy_error(),
        Some("unknown_tenant"),
        "{}",
        unknown.text()
    );
}

#[tokio::test]
async fn ready_requires_all_or_any_over_the_tenants() {
    let all = good_and_bad(|b| b).await;
    let reply = TestClient::new()
        .get(&all.proxy, "/_proxy/ready", &[])
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["ready_requires"], "all");
    assert_eq!(body["tenants"]["good"]["state"], "ready");
    assert_eq!(body["tenants"]["good"]["ready"], true);
    assert_eq!(body["tenants"]["bad"]["state"], "failing");
    assert_eq!(body["tenants"]["bad"]["error"], "token_rejected");
    assert_eq!(body["tenants"]["bad"]["sfmc_error"], "invalid_client");

    let any = good_and_bad(|b| b.ready_requires("any")).await;
    let reply = TestClient::new()
        .get(&any.proxy, "/_proxy/ready", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["ready_requires"], "any");
    assert_eq!(body["tenants"]["bad"]["state"], "failing", "still named");

    any.bad.set_auth_failure(None);
    any.good.set_auth_failure(Some(invalid_client()));
    // `good` keeps its cached token: still ready, and `any` still holds.
    let reply = TestClient::new()
        .get(&any.proxy, "/_proxy/ready", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn login_tenants_are_left_out_unless_every_tenant_is_one() {
    let fake = start_fake().await;
    let login_fake = start_fake().await;
    let dir = temp_dir("ready-login");
    let login = Tenant::new("web", &login_fake)
        .grant("authorization_code")
        .redirect_uri("https://127.0.0.1:8443/callback");
    let builder = TestProxy::builder().store_file(&dir.join("tokens.json"));
    let mixed = builder
        .clone()
        .tenant(Tenant::new("api", &fake).default(true))
        .tenant(login.clone())
        .start()
        .await;
    let client = TestClient::new();
    let reply = client.get(&mixed, "/_proxy/ready", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["tenants"]["web"]["state"], "login_required");
    assert_eq!(
        body["tenants"]["web"]["command"],
        "sfmc-proxy login --tenant web"
    );
    assert_eq!(body["tenants"]["api"]["state"], "ready");
    let web = client.get(&mixed, "/_proxy/ready?tenant=web", &[]).await;
    assert_eq!(web.status, 503, "asked by name, it is not ready");
    assert_eq!(web.json()["state"], "login_required");

    let only_login = builder.tenant(login).start().await;
    let reply = client.get(&only_login, "/_proxy/ready", &[]).await;
    assert_eq!(reply.status, 503, "nothing can serve: {}", reply.text());
    assert_eq!(reply.json()["tenants"]["web"]["state"], "login_required");
    assert_eq!(
        login_fake.token_requests(),
        0,
        "no refresh token, nothing sent"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_tenant_whose_prefetch_has_not_finished_is_starting() {
    let fake = start_fake().await;
    fake.set_auth_failure(Some(AuthFailure::Hang));
    let proxy = TestProxy::builder()
        .prefetch(true)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let client = TestClient::new();
    for _ in 0..3 {
        let one = client.get(&proxy, "/_proxy/ready?tenant=acme", &[]).await;
        assert_eq!(one.status, 503, "{}", one.text());
        assert_eq!(one.json()["state"], "starting");
        let all = client.get(&proxy, "/_proxy/ready", &[]).await;
        assert_eq!(all.status, 503);
        assert_eq!(all.json()["tenants"]["acme"]["state"], "starting");
    }
    assert!(
        fake.token_requests() <= 1,
        "probes join no fetch and start none: only the prefetch's request"
    );
}

#[tokio::test]
async fn prefetch_fetches_one_token_per_client_credentials_tenant_at_start() {
    let (a, b) = (start_fake().await, start_fake().await);
    let proxy = TestProxy::builder()
        .prefetch(true)
        .tenant(Tenant::new("a", &a).default(true))
        .tenant(Tenant::new("b", &b))
        .start()
        .await;
    let ready = wait_ready(&proxy, "a").await;
    assert_eq!(ready.json()["state"], "ready");
    wait_ready(&proxy, "b").await;
    assert_eq!(a.token_requests(), 1, "one prefetch, and probes add none");
    assert_eq!(b.token_requests(), 1);
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        a.token_requests(),
        1,
        "the request uses the prefetched token"
    );
}

#[tokio::test]
async fn prefetch_logs_one_line_per_tenant_with_sfmc_words_on_failure() {
    let good = start_fake().await;
    let bad = start_fake().await;
    bad.set_auth_failure(Some(invalid_client()));
    let dir = temp_dir("prefetch-log");
    let config = dir.join("proxy.toml");
    let text = TestProxy::builder()
        .prefetch(true)
        .listen("127.0.0.1:0".parse().expect("address"))
        .tenant(Tenant::new("good", &good).default(true))
        .tenant(Tenant::new("bad", &bad))
        .render();
    std::fs::write(&config, text).expect("write config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "serve"])
        .env("RUST_LOG", "info")
        .env_remove("SFMC_PROXY_CONFIG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = Vec::new();
    let mut prefetched = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while prefetched.len() < 2 {
            let Some(line) = lines.next_line().await.expect("read stderr") else {
                break;
            };
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("prefetch:"))
            {
                prefetched.push(event);
            }
            log.push(line);
        }
    })
    .await;
    child.start_kill().expect("stop the proxy");
    let whole = log.join("\n");
    assert!(read.is_ok(), "no two prefetch lines in time:\n{whole}");
    let ok = prefetched
        .iter()
        .find(|e| e["tenant"] == "good")
        .unwrap_or_else(|| panic!("no line for `good`:\n{whole}"));
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["instance"], good.addr().to_string(), "{ok}");
    assert!(ok["expires_in_s"].as_u64().is_some_and(|s| s > 0), "{ok}");
    assert!(ok["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(ok["scope"].as_str().is_some_and(|s| !s.is_empty()), "{ok}");
    let failed = prefetched
        .iter()
        .find(|e| e["tenant"] == "bad")
        .unwrap_or_else(|| panic!("no line for `bad`:\n{whole}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["sfmc_error"], "invalid_client");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Invalid client ID") && message.contains("client_secret"),
        "SFMC's words and what to check: {message}"
    );
    assert_eq!(prefetched.len(), 2, "one line per tenant");
    assert_eq!((good.token_requests(), bad.token_requests()), (1, 1));
    assert!(!whole.contains(CLIENT_SECRET), "no secret in the log");
    assert!(!whole.contains("fake-1-"), "no token in the log");
    let _ = std::fs::remove_dir_all(dir);
}
