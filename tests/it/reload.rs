//! Reload without drops: a new configuration applies to new requests while
//! those in flight finish untouched; unchanged tenants keep their tokens,
//! changed ones lose them, new ones serve at once, removed ones are
//! `unknown_tenant`; an invalid file changes nothing. In-process through
//! `TestProxy::reload` (what SIGHUP calls), and SIGHUP/SIGTERM to the binary.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::*;

const TENANT: &str = "x-sfmc-tenant";

/// Tenant `acme` (the default) on `fake`, and whatever else `more` adds.
fn config(fake: &FakeTenant) -> ProxyBuilder {
    TestProxy::builder().tenant(Tenant::new("acme", fake).default(true))
}

fn names(list: &[std::sync::Arc<str>]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

#[tokio::test]
async fn unchanged_tenants_keep_their_tokens_and_new_ones_serve_at_once() {
    let fake = start_fake().await;
    let proxy = config(&fake).start().await;
    let client = TestClient::new();
    assert_eq!(client.get(&proxy, "/hub/v1/a", &[]).await.status, 200);
    assert_eq!(fake.token_requests(), 1);

    let with_beta = config(&fake)
        .tenant(Tenant::new("beta", &fake).scope("email_read"))
        .max_keys(10);
    let report = proxy.reload(&with_beta).expect("a valid config reloads");
    assert_eq!(names(&report.changes.added), ["beta"]);
    assert_eq!(names(&report.changes.kept), ["acme"]);
    assert_eq!(report.tokens_dropped, 0);

    let acme = client.get(&proxy, "/hub/v1/b", &[]).await;
    assert_eq!(acme.status, 200);
    assert_eq!(fake.token_requests(), 1, "acme's token was kept");
    let beta = client.get(&proxy, "/hub/v1/c", &[(TENANT, "beta")]).await;
    assert_eq!(beta.status, 200, "{}", beta.text());
    assert_eq!(beta.json()["scope"], "email_read");
    assert_eq!(fake.token_requests(), 2, "beta fetched its own");
    // Its requests are counted under its own name, not as `unknown`.
    let metrics = client.get(&proxy, "/_proxy/metrics", &[]).await.text();
    assert!(metrics.contains("tenant=\"beta\""), "{metrics}");
}

#[tokio::test]
async fn a_changed_secret_drops_the_token_and_a_removed_tenant_is_unknown() {
    let fake = start_fake().await;
    let both = config(&fake).tenant(Tenant::new("beta", &fake));
    let proxy = both.clone().start().await;
    let client = TestClient::new();
    assert_eq!(client.get(&proxy, "/hub/v1/a", &[]).await.status, 200);
    let beta = client.get(&proxy, "/hub/v1/a", &[(TENANT, "beta")]).await;
    assert_eq!(beta.status, 200);
    assert_eq!(fake.token_requests(), 2);

    let changed = TestProxy::builder().tenant(
        Tenant::new("acme", &fake)
            .default(true)
            .client_secret("a-rotated-secret"),
    );
    let report = proxy.reload(&changed).expect("reloads");
    assert_eq!(names(&report.changes.credentials_changed), ["acme"]);
    assert_eq!(names(&report.changes.removed), ["beta"]);
    assert_eq!(report.tokens_dropped, 2);

    // The fake knows only the old secret: a cached token would have hidden it.
    let refused = client.get(&proxy, "/hub/v1/b", &[]).await;
    assert_eq!(
        refused.proxy_error(),
        Some("token_rejected"),
        "{}",
        refused.text()
    );
    assert_eq!(fake.token_requests(), 3, "acme asked SFMC again");
    let gone = client.get(&proxy, "/hub/v1/b", &[(TENANT, "beta")]).await;
    assert_eq!(
        gone.proxy_error(),
        Some("unknown_tenant"),
        "{}",
        gone.text()
    );
    assert_eq!(fake.token_requests(), 3);

    // Put back, the tenant serves again (its backoff went with the old secret).
    let report = proxy.reload(&config(&fake)).expect("reloads");
    assert_eq!(names(&report.changes.credentials_changed), ["acme"]);
    assert_eq!(client.get(&proxy, "/hub/v1/c", &[]).await.status, 200);
}

#[tokio::test]
async fn an_invalid_config_is_refused_and_the_running_one_stays() {
    let fake = start_fake().await;
    let proxy = config(&fake).start().await;
    let client = TestClient::new();
    assert_eq!(client.get(&proxy, "/hub/v1/a", &[]).await.status, 200);

    let secret = "s3cret-that-must-not-show";
    let invalid = format!(
        "[server]\nlisten = \"nowhere\"\n[tenants.acme]\nauth_url = \"{}\"\nclient_id = \"id\"\nclient_secret = \"{secret}\"\n",
        fake.auth_url()
    );
    let error = proxy
        .reload_text(&invalid)
        .expect_err("refused")
        .to_string();
    assert!(error.contains("server.listen"), "names the key: {error}");
    assert!(!error.contains(secret), "{error}");
    let typo = format!("{}clinet_id = \"x\"\n", config(&fake).render());
    let error = proxy.reload_text(&typo).expect_err("refused").to_string();
    assert!(error.contains("clinet_id"), "{error}");
    // Valid, but naming a CA file that is not there: refused as well.
    let missing_ca = config(&fake).ca_file(std::path::Path::new("/nonexistent/ca.pem"));
    let error = proxy.reload(&missing_ca).expect_err("refused").to_string();
    assert!(error.contains("upstream.ca_file"), "{error}");

    let still = client.get(&proxy, "/hub/v1/b", &[]).await;
    assert_eq!(still.status, 200);
    assert_eq!(
        fake.token_requests(),
        1,
        "the running config and its token stayed"
    );

    // Counted: three refusals; then one success.
    let metrics = client.get(&proxy, "/_proxy/metrics", &[]).await.text();
    assert!(
        metrics.contains("sfmc_proxy_config_reloads_total{result=\"failure\"} 3"),
        "{metrics}"
    );
    proxy.reload(&config(&fake)).expect("reloads");
    let metrics = client.get(&proxy, "/_proxy/metrics", &[]).await.text();
    assert!(
        metrics.contains("sfmc_proxy_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sfmc_proxy_config_reloads_total{result=\"failure\"} 3"));
}

#[tokio::test]
async fn listen_and_worker_threads_are_reported_as_needing_a_restart() {
    let fake = start_fake().await;
    let proxy = config(&fake).start().await;
    let moved = config(&fake).listen("127.0.0.1:1".parse().expect("address"));
    let report = proxy.reload(&moved).expect("the rest applies");
    assert_eq!(report.changes.needs_restart, ["server.listen"]);
    let client = TestClient::new();
    assert_eq!(
        client.get(&proxy, "/hub/v1/a", &[]).await.status,
        200,
        "still served where it was bound"
    );
    let report = proxy.reload(&moved).expect("reloads");
    assert_eq!(
        report.changes.needs_restart,
        ["server.listen"],
        "compared with what is bound, not with the last file"
    );
}

#[tokio::test]
async fn a_download_and_an_upload_in_flight_finish_intact_across_a_reload() {
    let fake = start_fake().await;
    let proxy = config(&fake).start().await;
    let client = TestClient::new();
    let size: usize = 30 * 1024 * 1024;
    let download = client
        .send(request(
            "GET",
            &proxy,
            &format!("/fake/download?bytes={size}"),
            &[],
            empty(),
        ))
        .await;
    assert_eq!(download.status(), 200);
    let mut body = download.into_body();
    let (mut received, mut hasher) = (0usize, Sha256::new());
    let mut take = |frame: Option<Result<http_body::Frame<Bytes>, hyper::Error>>| {
        if let Ok(data) = frame.expect("a frame").expect("no error").into_data() {
            received += data.len();
            hasher.update(&data);
        }
    };
    take(body.frame().await);

    let (mut tx, upload) = channel_body();
    let post = request("POST", &proxy, "/fake/upload-gated", &[], upload);
    let uploader = client.clone();
    let uploading = tokio::spawn(async move { uploader.fetch(post).await });
    tx.send_data(Bytes::from_static(b"before the reload;"))
        .await
        .expect("send");
    fake.upload_started().await;

    // Everything a reload can change under them: new credentials (the token
    // is dropped), a new upstream client (a new pool).
    let changed = TestProxy::builder()
        .tenant(
            Tenant::new("acme", &fake)
                .default(true)
                .client_secret("rotated"),
        )
        .response_timeout(Duration::from_secs(299));
    let report = proxy.reload(&changed).expect("reloads");
    assert!(report.changes.upstream);
    let refused = client.get(&proxy, "/hub/v1/new", &[]).await;
    assert_eq!(
        refused.proxy_error(),
        Some("token_rejected"),
        "new requests see it"
    );

    tx.send_data(Bytes::from_static(b"after it"))
        .await
        .expect("send");
    drop(tx);
    let uploaded = uploading.await.expect("task");
    assert_eq!(uploaded.status, 200);
    assert_eq!(
        uploaded.json()["body_sha256"],
        data_encoding::HEXLOWER.encode(&Sha256::digest(b"before the reload;after it"))
    );
    while let Some(frame) = body.frame().await {
        take(Some(frame));
    }
    assert_eq!(received, size);
    let expected: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        data_encoding::HEXLOWER.encode(&hasher.finalize()),
        data_encoding::HEXLOWER.encode(&Sha256::digest(&expected))
    );
}

/// A local token from the broker for `tenant`.
async fn local_token(client: &TestClient, proxy: &TestProxy, tenant: &str) -> String {
    let body = json!({"grant_type": "client_credentials", "client_id": tenant, "client_secret": "anything"});
    let reply = client
        .post(
            proxy,
            "/v2/token",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test]
async fn local_tokens_of_a_removed_tenant_are_refused_and_others_kept() {
    let fake = start_fake().await;
    let proxy = config(&fake)
        .tenant(Tenant::new("beta", &fake))
        .start()
        .await;
    let client = TestClient::new();
    let acme = local_token(&client, &proxy, "acme").await;
    let beta = local_token(&client, &proxy, "beta").await;
    let with = |token: &str| format!("Bearer {token}");
    for token in [&acme, &beta] {
        let reply = client
            .get(&proxy, "/hub/v1/x", &[("authorization", &with(token))])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    let beta_only = TestProxy::builder().tenant(Tenant::new("beta", &fake));
    let report = proxy.reload(&beta_only).expect("reloads");
    assert_eq!(report.local_tokens_dropped, 1);
    let refused = client
        .get(&proxy, "/hub/v1/x", &[("authorization", &with(&acme))])
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.proxy_error(), Some("local_token_invalid"));
    let kept = client
        .get(&proxy, "/hub/v1/x", &[("authorization", &with(&beta))])
        .await;
    assert_eq!(kept.status, 200, "{}", kept.text());
}

fn message(event: &Value) -> String {
    event["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn sighup_reloads_the_binary_and_sigterm_still_drains() {
    let fake = start_fake().await;
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    // Prefetch on, as in production: a reload prefetches the new tenants.
    let config = |fake: &FakeTenant| config(fake).prefetch(true);
    let mut proxy = Binary::start("reload-sighup", config(&fake), "info").await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = proxy.url("/hub/v1/x");
    let get = |tenant: &str| http.get(&url).header(TENANT, tenant).send();
    assert_eq!(get("acme").await.expect("request").status(), 200);

    // A new tenant: the process survives SIGHUP and serves it at once.
    let with_beta = config(&fake)
        .tenant(Tenant::new("beta", &fake))
        .listen(listen);
    std::fs::write(&proxy.config, with_beta.render()).expect("write config");
    proxy.signal("HUP");
    // The summary, and beta's prefetch line, in either order.
    let (mut summary, mut prefetched) = (None, false);
    while summary.is_none() || !prefetched {
        let event = proxy
            .next_event(|e| {
                let text = message(e);
                text.starts_with("config reloaded") || text.starts_with("prefetch: tenant `beta`")
            })
            .await;
        if message(&event).starts_with("config reloaded") {
            summary = Some(event);
        } else {
            assert!(message(&event).contains("got a token"), "{event}");
            prefetched = true;
        }
    }
    let reloaded = summary.unwrap_or_default();
    assert!(message(&reloaded).contains("added [beta]"), "{reloaded}");
    assert_eq!(get("beta").await.expect("request").status(), 200);

    // An invalid file: logged at ERROR with the key, no secret; beta still serves.
    let secret = "s3cret-that-must-not-show";
    let invalid = format!(
        "{}[tenants.gamma]\nauth_url = \"http://not-loopback.example/\"\nclient_id = \"id\"\nclient_secret = \"{secret}\"\n",
        with_beta.render()
    );
    std::fs::write(&proxy.config, invalid).expect("write config");
    proxy.signal("HUP");
    let refused = proxy
        .next_event(|e| message(e).starts_with("config reload refused"))
        .await;
    assert_eq!(refused["level"], "ERROR");
    assert!(
        message(&refused).contains("tenants.gamma.auth_url"),
        "{refused}"
    );
    assert!(!refused.to_string().contains(secret));
    assert_eq!(get("beta").await.expect("request").status(), 200);

    // A new listen address: applied but for it, with a warning.
    let moved = config(&fake)
        .tenant(Tenant::new("beta", &fake))
        .listen("127.0.0.1:1".parse().expect("address"));
    std::fs::write(&proxy.config, moved.render()).expect("write config");
    proxy.signal("HUP");
    let warned = proxy
        .next_event(|e| message(e).starts_with("config reloaded"))
        .await;
    assert_eq!(warned["level"], "WARN");
    assert!(
        message(&warned).contains("restart sfmc-proxy to apply server.listen"),
        "{warned}"
    );

    // SIGTERM: a response in flight still finishes, then the process exits 0.
    let mut gated = http
        .get(proxy.url("/fake/gated"))
        .send()
        .await
        .expect("request");
    let first = gated.chunk().await.expect("no error").expect("a chunk");
    assert_eq!(&first[..], b"first\n");
    proxy.signal("TERM");
    proxy
        .next_event(|e| message(e).starts_with("shutdown requested"))
        .await;
    fake.release_gate();
    let rest = gated.chunk().await.expect("no error").expect("the rest");
    assert_eq!(&rest[..], b"second\n");
    let (status, log) = proxy.exit().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("shut down cleanly"), "{log}");
    assert!(!log.contains(secret));
}

#[tokio::test]
async fn rotating_the_inbound_keys_retires_every_local_token() {
    let fake = start_fake().await;
    let (old_key, new_key, local_secret) = (
        "old-key-0123456789",
        "new-key-0123456789",
        "local-secret-0123456789",
    );
    let keyed = |key: &str| {
        config(&fake)
            .inbound_keys(&[key])
            .broker_client_secret("acme", local_secret)
    };
    let proxy = keyed(old_key).start().await;
    let client = TestClient::new();
    let body = json!({"grant_type": "client_credentials", "client_id": "acme", "client_secret": local_secret});
    let issued = client
        .post(
            &proxy,
            "/v2/token",
            &[
                ("content-type", "application/json"),
                ("x-proxy-key", old_key),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let local = format!(
        "Bearer {}",
        issued.json()["access_token"].as_str().expect("token")
    );
    let served = client
        .get(&proxy, "/hub/v1/x", &[("authorization", &local)])
        .await;
    assert_eq!(served.status, 200, "{}", served.text());

    let report = proxy.reload(&keyed(new_key)).expect("reloads");
    assert_eq!(report.local_tokens_dropped, 1);
    assert_eq!(report.tokens_dropped, 0, "the SFMC token is kept");
    let refused = client
        .get(&proxy, "/hub/v1/x", &[("authorization", &local)])
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.proxy_error(), Some("local_token_invalid"));
}

#[tokio::test]
async fn a_waiting_browser_login_of_a_changed_tenant_is_cancelled() {
    let fake = start_fake().await;
    let dir = temp_dir("reload-login");
    let redirect_uri = format!("https://127.0.0.1:{}/callback", closed_port().port());
    let web = |secret: &str| {
        TestProxy::builder()
            .store_file(&dir.join("tokens.json"))
            .tenant(
                Tenant::new("web", &fake)
                    .grant("authorization_code")
                    .redirect_uri(&redirect_uri)
                    .client_secret(secret),
            )
    };
    let proxy = web(CLIENT_SECRET).start().await;
    let client = TestClient::new();
    let start = client.get(&proxy, "/_proxy/login?tenant=web", &[]).await;
    assert_eq!(start.status, 302, "{}", start.text());

    let unchanged = proxy.reload(&web(CLIENT_SECRET)).expect("reloads");
    assert_eq!(
        unchanged.logins_cancelled, 0,
        "same credentials: it waits on"
    );
    let rotated = proxy.reload(&web("rotated-secret")).expect("reloads");
    assert_eq!(rotated.logins_cancelled, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file moves `listen` to loopback and drops the keys; the process still
/// listens where it started (a restart applies `listen`), so the keys stay.
#[tokio::test]
async fn a_reload_cannot_drop_the_keys_of_an_address_it_still_listens_on() {
    let fake = start_fake().await;
    let key = "network-listener-key-0123";
    let exposed = config(&fake)
        .listen("0.0.0.0:8080".parse().expect("addr"))
        .inbound_keys(&[key]);
    let proxy = exposed.start().await;
    let client = TestClient::new();
    let keyless = config(&fake).listen("127.0.0.1:8080".parse().expect("addr"));
    let error = proxy.reload(&keyless).expect_err("refused").to_string();
    assert!(
        error.contains("server.inbound_keys"),
        "names the key: {error}"
    );
    assert!(
        error.contains("0.0.0.0:8080"),
        "says where it listens: {error}"
    );
    assert!(!error.contains(key));
    let without = client
        .get(&proxy, "/hub/v1/x", &[("host", "localhost")])
        .await;
    assert_eq!(
        (without.status, without.proxy_error()),
        (401, Some("inbound_key_required")),
        "still keyed"
    );
    assert_eq!(fake.token_requests(), 0);
    // The same file with its keys kept applies (listen reported for a restart).
    let keyed = config(&fake)
        .listen("127.0.0.1:8080".parse().expect("addr"))
        .inbound_keys(&[key]);
    let report = proxy.reload(&keyed).expect("reloads");
    assert_eq!(report.changes.needs_restart, ["server.listen"]);
    // And the Host check stays the one of the address it is bound to (none on
    // 0.0.0.0 with keys), not the loopback names the file's listen implies.
    let named = client
        .get(
            &proxy,
            "/hub/v1/x",
            &[("x-proxy-key", key), ("host", "proxy.corp.example")],
        )
        .await;
    assert_eq!(named.status, 200, "{}", named.text());
}

#[tokio::test]
async fn a_reload_applies_new_token_timeouts_to_the_next_fetch() {
    let hole = black_hole().await;
    let auth_url = format!("http://{hole}/");
    let slow = |timeout: Duration| {
        TestProxy::builder()
            .request_timeout(timeout)
            .fetch_deadline(timeout)
            .tenant(Tenant::at("acme", &auth_url))
    };
    let proxy = slow(Duration::from_secs(30)).start().await;
    proxy
        .reload(&slow(Duration::from_secs(1)))
        .expect("reloads");
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        TestClient::new().get(&proxy, "/hub/v1/x", &[]),
    )
    .await
    .expect("cut at the reloaded 1 s, not the 30 s it started with");
    assert_eq!(reply.proxy_error(), Some("token_unavailable"));
    let message = reply.message();
    assert!(
        message.contains(
            "within token.fetch_deadline (1s): 1 attempt, cut at token.request_timeout (1s)"
        ),
        "{message}"
    );
}
