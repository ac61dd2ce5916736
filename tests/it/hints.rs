//! Small things a user of the command line notices: a command for one
//! tenant is not stopped by another tenant's unset variable, and the login
//! a hint tells them to run names the config file in use. Through the binary.

use crate::support::*;

/// acme works; beta's secret, and gamma's local secret for the broker,
/// come from variables nobody set.
fn two_tenants(fake: &FakeTenant) -> ProxyBuilder {
    TestProxy::builder()
        .tenant(Tenant::new("acme", fake).default(true))
        .tenant(Tenant::new("beta", fake).client_secret("${BETA_SECRET_NOT_SET}"))
        .tenant(Tenant::new("gamma", fake))
        .broker_client_secret("gamma", "${GAMMA_BROKER_SECRET_NOT_SET}")
}

#[tokio::test]
async fn token_for_one_tenant_is_not_stopped_by_another_tenants_unset_variable() {
    let fake = start_fake().await;
    let path = config_file("hints-lazy", &two_tenants(&fake).render());

    let output = run_binary(&["token", "--tenant", "acme"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).starts_with("fake-"),
        "a token is printed"
    );
    assert!(
        stderr_of(&output).contains(
            "note: tenant `beta` left out: config key `tenants.beta.client_secret`: environment variable BETA_SECRET_NOT_SET is not set"
        ),
        "{}",
        stderr_of(&output)
    );
    assert!(
        stderr_of(&output).contains("note: broker.client_secrets.gamma left out"),
        "{}",
        stderr_of(&output)
    );

    // Without --tenant the error says how to use one tenant alone.
    let output = run_binary(&["token"], &path, &[]).await;
    assert!(
        stderr_of(&output).contains("name it: --tenant NAME"),
        "{}",
        stderr_of(&output)
    );

    // The tenant that lacks it, and every command that needs all tenants,
    // still stop with exit 2 naming the key.
    let named = "`tenants.beta.client_secret`: environment variable BETA_SECRET_NOT_SET";
    for args in [
        &["token", "--tenant", "beta"][..],
        &["token"],
        &["check"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let output = run_binary(args, &path, &[]).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr_of(&output).contains(named),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    assert_eq!(fake.token_requests(), 1, "only acme's token was asked for");
}

#[tokio::test]
async fn login_for_one_tenant_is_not_stopped_by_another_tenants_unset_variable() {
    let fake = start_fake().await;
    let dir = temp_dir("hints-login-lazy");
    let config = two_tenants(&fake)
        .store_file(&dir.join("tokens.json"))
        .tenant(
            Tenant::new("web", &fake)
                .grant("authorization_code")
                .redirect_uri(&format!(
                    "https://127.0.0.1:{}/callback",
                    closed_port().port()
                )),
        );
    let path = config_file("hints-login-lazy", &config.render());
    // Up to the authorize URL, printed once the config was loaded; then the
    // login would wait for a browser, so it is stopped.
    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .arg("--config")
        .arg(&path)
        .args(["login", "--tenant", "web"])
        .env("XDG_STATE_HOME", &dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("login starts");
    let stdout = login.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let url = lines.next_line().await.expect("read").unwrap_or_default();
    login.start_kill().expect("stop the login");
    let output = login.wait_with_output().await.expect("login ends");
    let error = stderr_of(&output);
    assert!(
        url.contains("/v2/authorize?"),
        "the login began: {url} {error}"
    );
    assert!(error.contains("note: tenant `beta` left out"), "{error}");
}

#[tokio::test]
async fn a_login_hint_names_the_config_file_in_use() {
    let fake = start_fake().await;
    let dir = temp_dir("hints-login-command");
    let config = TestProxy::builder()
        .store_file(&dir.join("tokens.json"))
        .tenant(
            Tenant::new("web", &fake)
                .grant("authorization_code")
                .redirect_uri("https://127.0.0.1:8443/callback"),
        );
    let path = config_file("hints-login-command", &config.render());
    let absolute = std::path::absolute(&path).expect("absolute path");
    let command = format!(
        "sfmc-proxy --config {} login --tenant web",
        absolute.display()
    );

    let output = run_binary(&["token", "--tenant", "web"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let error = stderr_of(&output);
    assert!(error.contains(&format!("run `{command}`")), "{error}");

    let output = run_binary(
        &["token", "--tenant", "web", "--account-id", "200"],
        &path,
        &[],
    )
    .await;
    let error = stderr_of(&output);
    assert!(
        error.contains(&format!("run `{command} --account-id 200`")),
        "{error}"
    );

    // The 503 a client of `serve` gets says the same.
    let proxy = Binary::start("hints-login-serve", config, "info").await;
    let reply = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(proxy.url("/hub/v1/x"))
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 503);
    let body: serde_json::Value = reply.json().await.expect("JSON error");
    let served_with = proxy.config.clone();
    let expected = format!(
        "sfmc-proxy --config {} login --tenant web",
        std::path::absolute(&served_with)
            .expect("absolute")
            .display()
    );
    assert_eq!(body["command"], expected.as_str(), "{body}");
    proxy.stop().await;
}
