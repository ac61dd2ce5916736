//! A person's login for Web and Public App tenants: `sfmc-proxy login` (the
//! redirect to its TLS listener, or the pasted URL), the refresh token stored
//! and rotated, refreshes serialised, and a revoked login reported.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::*;

struct Login {
    fake: FakeTenant,
    /// The file `sfmc-proxy login` reads: `proxy`, rendered.
    config: PathBuf,
    proxy: ProxyBuilder,
    redirect_uri: String,
    store: PathBuf,
    dir: PathBuf,
}

async fn login_tenant(name: &str) -> Login {
    login_tenant_with(name, |acme| acme).await
}

/// A Web App tenant `acme` that logs in with the authorization code, its
/// configuration written to a file; `tenant` adds settings.
async fn login_tenant_with(name: &str, tenant: fn(Tenant) -> Tenant) -> Login {
    let fake = start_fake().await;
    let dir = temp_dir(name);
    let store = dir.join("state").join("tokens.json");
    let port = closed_port().port();
    let redirect_uri = format!("https://127.0.0.1:{port}/callback");
    let proxy = login_config(&fake, &store, &redirect_uri, tenant);
    let config = dir.join("proxy.toml");
    std::fs::write(&config, proxy.render()).expect("config");
    Login {
        fake,
        config,
        proxy,
        redirect_uri,
        store,
        dir,
    }
}

fn login_config(
    fake: &FakeTenant,
    store: &Path,
    redirect_uri: &str,
    tenant: fn(Tenant) -> Tenant,
) -> ProxyBuilder {
    let acme = Tenant::new("acme", fake)
        .grant("authorization_code")
        .redirect_uri(redirect_uri);
    TestProxy::builder().store_file(store).tenant(tenant(acme))
}

/// `login`'s configuration as a Public App: no client secret.
fn public_app(login: &Login) -> ProxyBuilder {
    login_config(&login.fake, &login.store, &login.redirect_uri, |acme| {
        acme.without_client_secret().app_type("public")
    })
}

/// What a person does in the browser: open the page, click "Allow".
/// Returns where SFMC redirects the browser (the `redirect_uri` with the code).
async fn click_allow(authorize_url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    let page = http
        .get(authorize_url)
        .send()
        .await
        .expect("authorize page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("id=\"allow\""));
    let query: std::collections::HashMap<String, String> = authorize_url
        .split_once('?')
        .map(|(_, q)| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .expect("query");
    let fields = [
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ];
    let form: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|n| query.get(*n).map(|v| (*n, v.as_str())))
        .collect();
    let base = authorize_url.split('?').next().expect("base");
    let allowed = http.post(base).form(&form).send().await.expect("allow");
    assert_eq!(allowed.status(), 302);
    allowed.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

/// Runs `sfmc-proxy login`; `finish` gets the redirect and completes the login
/// the way the test wants (paste it, or follow it).
async fn cli_login(login: &Login, finish: Finish) -> std::process::Output {
    cli_login_at(login, finish).await.0
}

/// `cli_login`, and the authorize URL the command printed.
async fn cli_login_at(login: &Login, finish: Finish) -> (std::process::Output, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .arg("--config")
        .arg(&login.config)
        .arg("login")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("login starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let authorize_url = stdout
        .next_line()
        .await
        .expect("read")
        .expect("the authorize URL");
    assert!(authorize_url.starts_with(&format!(
        "{}v2/authorize?response_type=code&",
        login.fake.auth_url()
    )));
    let redirect = click_allow(&authorize_url).await;
    let mut stdin = child.stdin.take().expect("stdin");
    match finish {
        Finish::Paste(edit) => {
            stdin
                .write_all(edit(&redirect).as_bytes())
                .await
                .expect("paste");
            stdin.write_all(b"\n").await.expect("enter");
        }
        Finish::Follow => {
            let browser = reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(true) // the certificate made on the spot
                .no_proxy()
                .build()
                .expect("client");
            let page = browser
                .get(&redirect)
                .send()
                .await
                .expect("redirect reaches the listener");
            assert_eq!(page.status(), 200);
            assert!(page.text().await.expect("html").contains("Logged in"));
        }
    }
    drop(stdin);
    let output = child.wait_with_output().await.expect("login ends");
    (output, authorize_url)
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url.split_once('?')
        .map(|(_, q)| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

enum Finish {
    Paste(fn(&str) -> String),
    Follow,
}

async fn proxy_for(login: &Login, config: &ProxyBuilder) -> TestProxy {
    config.clone().start_in(&login.dir).await
}

#[tokio::test]
async fn pasted_url_logs_in_and_the_proxy_then_refreshes_by_itself() {
    let login = login_tenant("paste").await;
    let (output, authorize_url) = cli_login_at(&login, Finish::Paste(|url| url.to_owned())).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Logged in"), "{stderr}");
    // PKCE: an S256 challenge on /v2/authorize, its verifier on the exchange
    // (the fake checks one against the other).
    let query = query_of(&authorize_url);
    assert_eq!(query["code_challenge_method"], "S256", "{authorize_url}");
    let challenge = &query["code_challenge"];
    assert_eq!(challenge.len(), 43, "base64url of a SHA-256, no padding");
    let exchange = login.fake.last_token_request().expect("code exchange");
    assert_eq!(exchange["grant_type"], "authorization_code");
    let verifier = exchange["code_verifier"].as_str().expect("code_verifier");
    assert_eq!(verifier.len(), 43, "32 random bytes, base64url");
    assert!(
        !stderr.contains(verifier) && !String::from_utf8_lossy(&output.stdout).contains(verifier)
    );
    assert_eq!(exchange["redirect_uri"], login.redirect_uri.as_str());
    let stored = std::fs::read_to_string(&login.store).expect("store written");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("rt-"),
        "no token printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&login.store)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    let proxy = proxy_for(&login, &login.proxy).await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        login.fake.last_token_request().expect("refresh")["grant_type"],
        "refresh_token"
    );
    let rotated = std::fs::read_to_string(&login.store).expect("store");
    assert_ne!(
        stored, rotated,
        "the new refresh token replaced the used one"
    );
}

#[tokio::test]
async fn the_browser_redirect_reaches_the_login_listener_over_tls() {
    let login = login_tenant("follow").await;
    let output = cli_login(&login, Finish::Follow).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(login.store.exists());
}

#[tokio::test]
async fn a_redirect_with_another_state_is_refused() {
    let login = login_tenant("state").await;
    let output = cli_login(
        &login,
        Finish::Paste(|url| {
            let (before, _) = url.split_once("state=").expect("state");
            format!("{before}state=forged")
        }),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("state does not match"));
    assert!(!login.store.exists(), "nothing stored");
    assert_eq!(
        login.fake.token_requests(),
        0,
        "the code was never exchanged"
    );
}

/// Logs in without the CLI (the same library calls), for the tests below.
async fn log_in(login: &Login, config: &ProxyBuilder) {
    let settings = config.settings(&login.dir);
    let tenant = settings.tenant("acme").expect("tenant");
    let start = sfmc_proxy::login::start(tenant).expect("start");
    let redirect = click_allow(&start.authorize_url).await;
    let code = sfmc_proxy::login::code_from_callback(&redirect, &start.state).expect("code");
    let tls = sfmc_proxy::tls::client_config(None).expect("tls");
    let client = sfmc_proxy::token::sfmc::SfmcTokenClient::new(&settings, tls).expect("client");
    let verifier = start.code_verifier.as_ref().map(|v| v.expose().to_owned());
    client
        .exchange_code("acme", None, &code, verifier.as_deref())
        .await
        .expect("exchange");
}

#[tokio::test]
async fn rotated_refresh_tokens_survive_a_restart_and_old_ones_are_dead() {
    let login = login_tenant("restart").await;
    log_in(&login, &login.proxy).await;
    let first = std::fs::read_to_string(&login.store).expect("store");
    {
        let proxy = proxy_for(&login, &login.proxy).await;
        assert_eq!(
            TestClient::new().get(&proxy, "/hub/v1/a", &[]).await.status,
            200
        );
    }
    let second = std::fs::read_to_string(&login.store).expect("store");
    assert_ne!(first, second);
    let proxy = proxy_for(&login, &login.proxy).await;
    assert_eq!(
        TestClient::new().get(&proxy, "/hub/v1/b", &[]).await.status,
        200,
        "the restarted proxy refreshes with the stored token"
    );
    // The token the first proxy used up is refused by SFMC now.
    let used: serde_json::Value = serde_json::from_str(&first).expect("json");
    let old = used["entries"]["acme"]["refresh_token"]
        .as_str()
        .expect("entry");
    let reply = reqwest::Client::builder().no_proxy().build().expect("client")
        .post(format!("{}v2/token", login.fake.auth_url()))
        .json(&serde_json::json!({"grant_type": "refresh_token", "refresh_token": old, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
        .send().await.expect("fake");
    assert_eq!(reply.status(), 400);
}

/// `n` requests at once, spread over `proxies` in turn: each answered 200.
async fn all_answered(proxies: &[Arc<TestProxy>], n: usize) {
    let client = TestClient::new();
    let calls = (0..n).map(|i| {
        let (client, proxy) = (client.clone(), proxies[i % proxies.len()].clone());
        tokio::spawn(async move {
            client
                .get(&proxy, &format!("/hub/v1/{i}"), &[])
                .await
                .status
        })
    });
    for call in calls {
        assert_eq!(call.await.expect("task"), 200);
    }
}

#[tokio::test]
async fn a_hundred_concurrent_requests_make_exactly_one_refresh() {
    let login = login_tenant("concurrent").await;
    log_in(&login, &login.proxy).await;
    let before = login.fake.token_requests();
    let proxy = Arc::new(proxy_for(&login, &login.proxy).await);
    all_answered(&[proxy], 100).await;
    assert_eq!(
        login.fake.token_requests() - before,
        1,
        "one refresh for 100 requests"
    );
}

#[tokio::test]
async fn a_public_app_never_sends_a_secret() {
    let login = login_tenant("public").await;
    let public = public_app(&login);
    assert!(!public.render().contains("client_secret"));
    log_in(&login, &public).await;
    let exchange = login.fake.last_token_request().expect("exchange");
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert!(exchange.get("client_secret").is_none(), "{exchange}");
    let proxy = proxy_for(&login, &public).await;
    assert_eq!(
        TestClient::new().get(&proxy, "/hub/v1/x", &[]).await.status,
        200
    );
    let refresh = login.fake.last_token_request().expect("refresh");
    assert_eq!(refresh["grant_type"], "refresh_token");
    assert!(refresh.get("client_secret").is_none(), "{refresh}");
}

#[tokio::test]
async fn a_revoked_login_is_a_503_naming_the_command_and_check_reports_it() {
    let login = login_tenant("revoked").await;
    log_in(&login, &login.proxy).await;
    login.fake.revoke_refresh_tokens();
    let proxy = proxy_for(&login, &login.proxy).await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.proxy_error(), Some("login_required"));
    assert!(
        reply.message().contains("sfmc-proxy login --tenant acme"),
        "{}",
        reply.message()
    );
    assert_eq!(reply.json()["command"], "sfmc-proxy login --tenant acme");
    let health = TestClient::new().get(&proxy, "/_proxy/health", &[]).await;
    assert_eq!(health.status, 200, "nothing else breaks");

    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .arg("--config")
        .arg(&login.config)
        .arg("check")
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("check runs");
    assert_eq!(check.status.code(), Some(1));
    let absolute = std::path::absolute(&login.config).expect("absolute path");
    let command = format!(
        "sfmc-proxy --config {} login --tenant acme",
        absolute.display()
    );
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains(&command), "{printed}");
}

#[tokio::test]
async fn the_proxys_login_page_logs_in_through_the_browser_and_ready_turns_green() {
    let login = login_tenant("page").await;
    let proxy = proxy_for(&login, &login.proxy).await;
    let client = TestClient::new();
    let before = client.get(&proxy, "/_proxy/ready", &[]).await;
    assert_eq!(before.status, 503, "no login yet");
    assert_eq!(before.json()["tenants"]["acme"]["error"], "login_required");
    assert_eq!(before.json()["tenants"]["acme"]["state"], "login_required");

    let start = client.get(&proxy, "/_proxy/login?tenant=acme", &[]).await;
    assert_eq!(start.status, 302, "{}", start.text());
    let authorize_url = start.headers["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(authorize_url.starts_with(&format!("{}v2/authorize?", login.fake.auth_url())));
    // A reload joins the login already waiting (its listener holds the port).
    let again = client.get(&proxy, "/_proxy/login?tenant=acme", &[]).await;
    assert_eq!(again.status, 302, "{}", again.text());
    assert_eq!(again.headers["location"], authorize_url.as_str());
    let redirect = click_allow(&authorize_url).await;
    let browser = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .expect("client");
    let page = browser.get(&redirect).send().await.expect("callback");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Logged in"));

    let requests = login.fake.token_requests();
    let after = client.get(&proxy, "/_proxy/ready", &[]).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json()["tenants"]["acme"]["ready"], true);
    assert_eq!(after.json()["tenants"]["acme"]["state"], "ready");
    assert_eq!(client.get(&proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(
        login.fake.token_requests(),
        requests,
        "the login's token is used, no refresh yet"
    );
    assert!(login.store.exists());
}

#[tokio::test]
async fn the_browser_login_sends_pkce_and_a_wrong_verifier_is_refused() {
    let login = login_tenant("pkce").await;
    let settings = login.proxy.settings(&login.dir);
    let tenant = settings.tenant("acme").expect("tenant");
    let start = sfmc_proxy::login::start(tenant).expect("start");
    let query = query_of(&start.authorize_url);
    assert_eq!(query["code_challenge_method"], "S256");
    let redirect = click_allow(&start.authorize_url).await;
    let code = sfmc_proxy::login::code_from_callback(&redirect, &start.state).expect("code");
    let tls = sfmc_proxy::tls::client_config(None).expect("tls");
    let client = sfmc_proxy::token::sfmc::SfmcTokenClient::new(&settings, tls).expect("client");
    let wrong = "A".repeat(43);
    let refused = client
        .exchange_code("acme", None, &code, Some(&wrong))
        .await
        .err()
        .map(|error| format!("{error:?}"))
        .expect("a wrong verifier is refused");
    assert!(refused.contains("invalid_grant"), "{refused}");
    assert!(!login.store.exists(), "nothing stored");
    // The fake's codes are single-use: a fresh login with the right verifier.
    let start = sfmc_proxy::login::start(tenant).expect("start");
    let redirect = click_allow(&start.authorize_url).await;
    let code = sfmc_proxy::login::code_from_callback(&redirect, &start.state).expect("code");
    let verifier = start.code_verifier.as_ref().map(|v| v.expose().to_owned());
    assert!(verifier.is_some());
    client
        .exchange_code("acme", None, &code, verifier.as_deref())
        .await
        .expect("the right verifier is accepted");
    assert!(login.store.exists());
    // Without one, a code issued for a challenge is refused too.
    let start = sfmc_proxy::login::start(tenant).expect("start");
    let redirect = click_allow(&start.authorize_url).await;
    let code = sfmc_proxy::login::code_from_callback(&redirect, &start.state).expect("code");
    assert!(
        client
            .exchange_code("acme", None, &code, None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pkce_false_sends_neither_challenge_nor_verifier() {
    let login = login_tenant_with("no-pkce", |acme| acme.pkce(false)).await;
    let (output, authorize_url) = cli_login_at(&login, Finish::Paste(|url| url.to_owned())).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let query = query_of(&authorize_url);
    assert!(!query.contains_key("code_challenge"), "{authorize_url}");
    assert!(
        !query.contains_key("code_challenge_method"),
        "{authorize_url}"
    );
    let exchange = login.fake.last_token_request().expect("exchange");
    assert!(exchange.get("code_verifier").is_none(), "{exchange}");
    assert!(login.store.exists());
}

#[tokio::test]
async fn an_sfmc_that_refuses_pkce_tells_the_user_to_set_pkce_false() {
    let login = login_tenant("pkce-refused").await;
    login.fake.set_pkce_supported(false);
    let output = cli_login(&login, Finish::Paste(|url| url.to_owned())).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pkce = false"), "{stderr}");
    assert!(stderr.contains("acme"), "{stderr}");
}

/// With several tenants and no default, `/_proxy/login` must be told which:
/// the same `unknown_tenant` refusal (and wording) as a request that names no
/// tenant, with how to name one here. Nothing is started.
#[tokio::test]
async fn a_browser_login_without_a_tenant_among_several_says_how_to_name_one() {
    let fake = start_fake().await;
    let proxy = TestProxy::builder()
        .tenant(Tenant::new("acme", &fake))
        .tenant(Tenant::new("beta", &fake))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/_proxy/login", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some("unknown_tenant"));
    let message = reply.message();
    assert!(message.contains("none is the default"), "{message}");
    assert!(message.contains("/_proxy/login?tenant=NAME"), "{message}");
    let unknown = TestClient::new()
        .get(&proxy, "/_proxy/login?tenant=gamma", &[])
        .await;
    assert_eq!(unknown.proxy_error(), Some("unknown_tenant"));
    assert!(
        unknown.message().contains("acme, beta"),
        "{}",
        unknown.text()
    );
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn token_for_a_login_tenant_refreshes_once_and_then_reuses_the_access_token() {
    let login = login_tenant("token-cache").await;
    log_in(&login, &login.proxy).await;
    let exchanged = login.fake.token_requests();
    let token = || async {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
            .arg("--config")
            .arg(&login.config)
            .arg("token")
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("token runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let first = token().await;
    let store = std::fs::read_to_string(&login.store).expect("store");
    assert_eq!(login.fake.token_requests(), exchanged + 1, "one refresh");
    assert_eq!(
        login.fake.last_token_request().expect("refresh")["grant_type"],
        "refresh_token"
    );
    assert_eq!(token().await, first, "the cached access token");
    assert_eq!(login.fake.token_requests(), exchanged + 1);
    assert_eq!(
        std::fs::read_to_string(&login.store).expect("store"),
        store,
        "the refresh token is not rotated again"
    );
    assert!(login.dir.join("state/access-tokens.json").exists());
}

#[tokio::test]
async fn a_new_login_forgets_the_token_that_token_cached_for_the_previous_one() {
    let login = login_tenant("relogin").await;
    let token = || async {
        let output = run_binary(&["token"], &login.config, &[]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        stdout_of(&output)
    };
    assert!(
        cli_login(&login, Finish::Paste(|url| url.to_owned()))
            .await
            .status
            .success()
    );
    let first = token().await;
    assert_eq!(token().await, first, "cached while fresh");
    // Someone else logs in (the fake cannot tell; what matters is the new login).
    assert!(
        cli_login(&login, Finish::Paste(|url| url.to_owned()))
            .await
            .status
            .success()
    );
    let after = token().await;
    assert_ne!(
        after, first,
        "the previous login's token is not printed again"
    );
    assert_eq!(
        token().await,
        after,
        "the new login's token is cached in turn"
    );
}

#[tokio::test]
async fn with_redis_a_login_is_the_fleet_s_and_three_replicas_refresh_it_once() {
    let mut login = login_tenant("fleet-login").await;
    let mut redis = crate::support::redis::RedisServer::start(&login.dir).await;
    login.proxy = login.proxy.clone().redis(&redis.url());
    std::fs::write(&login.config, login.proxy.render()).expect("config");
    let output = cli_login(&login, Finish::Paste(|url| url.to_owned())).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !login.store.exists(),
        "the refresh token went to Redis, not the file"
    );
    let refresh_token = login.fake.last_token_request().expect("exchange");
    assert_eq!(refresh_token["grant_type"], "authorization_code");

    let before = login.fake.token_requests();
    let replicas = [
        Arc::new(proxy_for(&login, &login.proxy).await),
        Arc::new(proxy_for(&login, &login.proxy).await),
        Arc::new(proxy_for(&login, &login.proxy).await),
    ];
    all_answered(&replicas, 90).await;
    let client = TestClient::new();
    assert_eq!(
        login.fake.token_requests() - before,
        1,
        "one refresh of the login for three replicas"
    );
    assert_eq!(
        login.fake.last_token_request().expect("refresh")["grant_type"],
        "refresh_token"
    );
    // Neither the refresh tokens nor the access token read in Redis.
    let issued = login.fake.last_issued_token().expect("issued");
    for (key, value) in redis.dump().await {
        let shown = String::from_utf8_lossy(&value);
        assert!(
            !shown.contains(&issued) && !shown.contains("rt-"),
            "{key}: {shown}"
        );
    }

    // Redis gone: a replica with a token serves it; a cold one does not
    // redeem the fleet's refresh token alone.
    redis.stop().await;
    let warm = client.get(&replicas[0], "/hub/v1/again", &[]).await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let cold = proxy_for(&login, &login.proxy).await;
    let refused = client.get(&cold, "/hub/v1/x", &[]).await;
    assert_eq!(
        (refused.status, refused.proxy_error()),
        (503, Some("token_unavailable"))
    );
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("does not refresh it alone"), "{message}");
    assert_eq!(
        login.fake.token_requests() - before,
        1,
        "no refresh without Redis"
    );
}

/// A Web App tenant whose `redirect_uri` is the proxy's own
/// `/_proxy/callback` behind a TLS front named `sfmc-proxy.test`.
async fn front_login(name: &str) -> Login {
    let mut login = login_tenant(name).await;
    login.redirect_uri = "https://sfmc-proxy.test/_proxy/callback".into();
    login.proxy = login_config(&login.fake, &login.store, &login.redirect_uri, |acme| acme)
        .allowed_hosts(&["127.0.0.1", "sfmc-proxy.test"])
        .inbound_keys(&[KEY]);
    std::fs::write(&login.config, login.proxy.render()).expect("config");
    login
}

const KEY: &str = "team-key-0123456789";

/// A browser: the cookie the proxy set on it, if any.
#[derive(Clone, Default)]
struct Browser(Option<String>);

/// `/_proxy/login` on `proxy` from a browser that sends the key (a header
/// extension): where it is sent, and the browser with its login cookie.
async fn begin_login(proxy: &TestProxy) -> (String, Browser) {
    let start = TestClient::new()
        .get(proxy, "/_proxy/login?tenant=acme", &[("x-proxy-key", KEY)])
        .await;
    assert_eq!(start.status, 302, "{}", start.text());
    let cookie = start.headers["set-cookie"].to_str().expect("cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    assert!(pair.starts_with("__Host-sfmc-proxy-login="), "{cookie}");
    let location = start.headers["location"].to_str().expect("location");
    (location.to_owned(), Browser(Some(pair)))
}

/// `browser`'s way back from SFMC, as the TLS front hands it on: the
/// redirect's path and query, its Host, its cookie, no key, and a
/// cross-site navigation.
async fn come_back(proxy: &TestProxy, redirect: &str, browser: &Browser) -> Reply {
    let path = redirect
        .strip_prefix("https://sfmc-proxy.test")
        .expect("to the front");
    let mut headers = vec![
        ("host", "sfmc-proxy.test"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
    ];
    if let Some(cookie) = &browser.0 {
        headers.push(("cookie", cookie));
    }
    TestClient::new().get(proxy, path, &headers).await
}

#[tokio::test]
async fn a_login_behind_a_tls_front_comes_back_to_the_proxys_own_callback_once() {
    let login = front_login("front").await;
    let proxy = proxy_for(&login, &login.proxy).await;
    let (authorize_url, browser) = begin_login(&proxy).await;
    assert_eq!(
        query_of(&authorize_url)["redirect_uri"],
        "https://sfmc-proxy.test/_proxy/callback"
    );
    let redirect = click_allow(&authorize_url).await;
    let page = come_back(&proxy, &redirect, &browser).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("Logged in"), "{}", page.text());
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let exchange = login.fake.last_token_request().expect("exchange");
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert!(exchange["code_verifier"].is_string(), "PKCE: {exchange}");
    assert!(login.store.exists(), "the refresh token is stored");

    let requests = login.fake.token_requests();
    let api = TestClient::new()
        .get(&proxy, "/hub/v1/x", &[("x-proxy-key", KEY)])
        .await;
    assert_eq!(api.status, 200, "{}", api.text());
    assert_eq!(login.fake.token_requests(), requests, "the login's token");

    // The same redirect again (a reload, or someone who saw the address)
    // finds no login: a state works once, and the code is not sent again.
    let replay = come_back(&proxy, &redirect, &browser).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    assert!(
        replay.text().contains("no login is waiting"),
        "{}",
        replay.text()
    );
    assert_eq!(login.fake.token_requests(), requests, "nothing exchanged");
}

#[tokio::test]
async fn a_login_link_opened_in_another_browser_stores_nobody_s_login() {
    let login = front_login("front-other-browser").await;
    let proxy = proxy_for(&login, &login.proxy).await;
    // Someone with the key begins a login and sends the link to another
    // person, whose browser has no (or another) login cookie.
    let (authorize_url, _) = begin_login(&proxy).await;
    let redirect = click_allow(&authorize_url).await;
    let requests = login.fake.token_requests();
    let stranger = Browser(Some(format!("__Host-sfmc-proxy-login={}", "0f".repeat(32))));
    let page = come_back(&proxy, &redirect, &stranger).await;
    assert_eq!(page.status, 403, "{}", page.text());
    assert!(page.text().contains("another browser"), "{}", page.text());
    let (again, browser) = begin_login(&proxy).await;
    let redirect = click_allow(&again).await;
    let page = come_back(&proxy, &redirect, &Browser::default()).await;
    assert_eq!(page.status, 403, "{}", page.text());
    assert!(page.text().contains("another browser"), "{}", page.text());
    assert_eq!(login.fake.token_requests(), requests, "no code exchanged");
    assert!(!login.store.exists(), "no login stored");
    // The login is over: its own browser now finds none waiting.
    let late = come_back(&proxy, &redirect, &browser).await;
    assert_eq!(late.status, 400, "{}", late.text());
}

#[tokio::test]
async fn sfmcs_refusal_at_the_callback_is_shown_and_ends_the_login() {
    let login = front_login("front-denied").await;
    let proxy = proxy_for(&login, &login.proxy).await;
    let (authorize_url, browser) = begin_login(&proxy).await;
    let state = query_of(&authorize_url)["state"].clone();
    let denied = format!(
        "https://sfmc-proxy.test/_proxy/callback?error=access_denied&error_description=User%20said%20no&state={state}"
    );
    let page = come_back(&proxy, &denied, &browser).await;
    assert_eq!(page.status, 400, "{}", page.text());
    assert!(page.text().contains("User said no"), "{}", page.text());
    assert!(
        page.text().contains("/_proxy/login?tenant=acme"),
        "{}",
        page.text()
    );
    let late = format!("https://sfmc-proxy.test/_proxy/callback?code=c&state={state}");
    let late = come_back(&proxy, &late, &browser).await;
    assert!(
        late.text().contains("no login is waiting"),
        "{}",
        late.text()
    );
    // Only GET, and only on the proxy's listen: not on the admin address.
    let post = TestClient::new()
        .post(
            &proxy,
            "/_proxy/callback",
            &[("host", "sfmc-proxy.test")],
            "",
        )
        .await;
    assert_eq!(post.status, 405, "{}", post.text());
}

#[tokio::test]
async fn a_callback_tenant_needs_a_key_and_its_host_let_in() {
    let login = login_tenant("front-host").await;
    let front = "https://sfmc-proxy.test/_proxy/callback";
    let without_key = login_config(&login.fake, &login.store, front, |acme| acme)
        .allowed_hosts(&["127.0.0.1", "sfmc-proxy.test"]);
    let without_host =
        login_config(&login.fake, &login.store, front, |acme| acme).inbound_keys(&[KEY]);
    for (config, says) in [
        (without_key, "server.inbound_keys"),
        (without_host, "server.allowed_hosts"),
    ] {
        let file = config_file("front-host-config", &config.render());
        let output = run_binary(&["check"], &file, &[]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("tenants.acme.redirect_uri") && stderr.contains(says),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn with_redis_a_browser_login_begun_on_one_replica_finishes_on_another_once() {
    let mut login = front_login("front-fleet").await;
    let redis = crate::support::redis::RedisServer::start(&login.dir).await;
    login.proxy = login.proxy.clone().redis(&redis.url());
    let (a, b) = (
        proxy_for(&login, &login.proxy).await,
        proxy_for(&login, &login.proxy).await,
    );
    let (authorize_url, browser) = begin_login(&a).await;
    let state = query_of(&authorize_url)["state"].clone();
    let waiting = redis.dump().await;
    assert!(
        waiting.iter().any(|(key, _)| key.contains(":login:")),
        "the waiting login, in Redis: {waiting:?}"
    );
    let redirect = click_allow(&authorize_url).await;
    let requests = login.fake.token_requests();
    // The browser's redirect reaches both replicas at once (a double
    // submit, a retrying front): one finishes the login, once.
    let (first, second) = tokio::join!(
        come_back(&b, &redirect, &browser),
        come_back(&a, &redirect, &browser)
    );
    let mut statuses = [first.status, second.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{} / {}", first.text(), second.text());
    assert_eq!(login.fake.token_requests() - requests, 1, "one exchange");
    let verifier = login.fake.last_token_request().expect("exchange")["code_verifier"]
        .as_str()
        .expect("verifier")
        .to_owned();
    for (key, value) in waiting.iter().chain(&redis.dump().await) {
        let shown = String::from_utf8_lossy(value);
        assert!(
            !shown.contains(&verifier) && !key.contains(&state) && !shown.contains(&state),
            "{key}: {shown}"
        );
    }
    assert!(!login.store.exists(), "the login is the fleet's, in Redis");
    let requests = login.fake.token_requests();
    for replica in [&a, &b] {
        let api = TestClient::new()
            .get(replica, "/hub/v1/x", &[("x-proxy-key", KEY)])
            .await;
        assert_eq!(api.status, 200, "{}", api.text());
    }
    assert!(
        login.fake.token_requests() - requests <= 1,
        "at most one refresh for the fleet"
    );
}
