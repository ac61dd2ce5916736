//! The flags and environment variables people expect from a proxy's command
//! line: `serve --listen` (repeatable, `localhost:PORT`), `SFMC_PROXY_LISTEN`,
//! `SFMC_PROXY_LOG_FORMAT`, `SFMC_PROXY_CONFIG`; flag over variable over
//! file; `--help` that lists them and the exit codes; `demo` refusing
//! `--config`. Through the binary.

use crate::support::*;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A config whose `server.listen` is a port something else holds: a proxy
/// that starts anyway took its address from elsewhere.
fn config_on_a_busy_port(fake: &FakeTenant) -> (ProxyBuilder, std::net::TcpListener) {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr");
    let config = TestProxy::builder()
        .listen(addr)
        .tenant(Tenant::new("acme", fake));
    (config, busy)
}

async fn health(url: &str) -> u16 {
    http()
        .get(format!("{url}/_proxy/health"))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn listen_flags_replace_the_files_address_and_localhost_is_both_loopbacks() {
    let fake = start_fake().await;
    let (config, _busy) = config_on_a_busy_port(&fake);
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut proxy = Binary::start_with(
        "flags-listen",
        config,
        "info",
        &["--listen", "localhost:0", "--listen", "127.0.0.1:0"],
        &[],
    )
    .await;
    let listening = proxy.listening().to_vec();
    let (v4, v4_port) = listening[0].rsplit_once(':').expect("address");
    assert_eq!(v4, "127.0.0.1", "{listening:?}");
    if ipv6 {
        assert_eq!(listening.len(), 3, "{listening:?}");
        assert_eq!(
            listening[1],
            format!("[::1]:{v4_port}"),
            "localhost's two addresses share the port the system picked"
        );
    } else {
        assert_eq!(listening.len(), 2, "{listening:?}");
        proxy
            .next_event(|e| e["message"].as_str().is_some_and(|m| m.contains("[::1]")))
            .await;
    }
    assert!(listening.iter().all(|addr| !addr.ends_with(":0")));
    for addr in &listening {
        assert_eq!(health(&format!("http://{addr}")).await, 200, "{addr}");
    }
    // localhost as a client writes it: the Host check accepts it on each.
    let by_name = http()
        .get(format!("http://localhost:{v4_port}/_proxy/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(by_name.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn the_environment_sets_listen_and_log_format_and_a_flag_wins_over_it() {
    let fake = start_fake().await;
    let (config, busy) = config_on_a_busy_port(&fake);
    let path = config_file("flags-env", &config.render());
    // SFMC_PROXY_LISTEN over the file's (busy) address; SFMC_PROXY_LOG_FORMAT
    // json, without --log-format: the start-up line parses as JSON.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .env("SFMC_PROXY_CONFIG", &path)
        .env("SFMC_PROXY_LISTEN", "127.0.0.1:0")
        .env("SFMC_PROXY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let first = lines
        .next_line()
        .await
        .expect("read")
        .expect("a start-up line");
    let event: serde_json::Value = serde_json::from_str(&first).expect("JSON log from the env");
    let listen = event["listen"].as_str().expect("listen field");
    assert_ne!(listen, busy.local_addr().expect("addr").to_string());
    assert_eq!(health(&format!("http://{listen}")).await, 200);
    child.start_kill().expect("stop");

    // A flag over its variable: --listen wins over a busy SFMC_PROXY_LISTEN,
    // --log-format text over SFMC_PROXY_LOG_FORMAT=json.
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let output = run_binary(
        &[
            "--log-format",
            "text",
            "serve",
            "--listen",
            "localhost:99999",
        ],
        &path,
        &[
            ("SFMC_PROXY_LISTEN", &busy_addr),
            ("SFMC_PROXY_LOG_FORMAT", "json"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let error = stderr_of(&output);
    assert!(
        error.contains("config key `--listen`: `localhost:99999`: the port must be a number"),
        "the flag's value was used, and named: {error}"
    );
    assert!(
        !error.trim_start().starts_with('{'),
        "text, not JSON: {error}"
    );

    // An empty SFMC_PROXY_LISTEN is an unset one: the file's (busy) address
    // is used, and named.
    let output = run_binary(&["serve"], &path, &[("SFMC_PROXY_LISTEN", "")]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains(&format!("cannot listen on {busy_addr}")),
        "{}",
        stderr_of(&output)
    );
}

/// Arguments, environment, and what the error must say.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn a_listen_address_that_is_wrong_names_the_flag_or_variable_it_came_from() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake));
    let path = config_file("flags-bad", &config.render());
    let cases: [Case; 4] = [
        (
            &["serve", "--listen", "example.com:80"],
            &[],
            "`--listen`: `example.com:80` is not an address to listen on",
        ),
        (
            &["serve"],
            &[("SFMC_PROXY_LISTEN", "nowhere")],
            "`SFMC_PROXY_LISTEN`: `nowhere` is not an address",
        ),
        (
            &["serve", "--listen", "0.0.0.0:0"],
            &[],
            "`--listen`: 0.0.0.0:0 is not a loopback address",
        ),
        (
            &["--listen", "127.0.0.1:0", "check"],
            &[],
            "--listen: it is serve's flag",
        ),
    ];
    for (args, envs, expected) in cases {
        let output = run_binary(args, &path, envs).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let error = stderr_of(&output);
        assert!(error.contains(expected), "{args:?} {envs:?}: {error}");
    }
}

#[tokio::test]
async fn a_reload_keeps_the_addresses_the_flag_gave() {
    let fake = start_fake().await;
    let (config, _busy) = config_on_a_busy_port(&fake);
    let mut proxy = Binary::start_with(
        "flags-reload",
        config.clone().tenant(Tenant::new("beta", &fake)),
        "info",
        &["--listen", "127.0.0.1:0"],
        &[],
    )
    .await;
    std::fs::write(&proxy.config, config.render()).expect("write config");
    proxy.signal("HUP");
    let reloaded = proxy
        .next_event(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reloaded"))
        })
        .await;
    let text = reloaded["message"].as_str().unwrap_or_default();
    assert!(text.contains("removed [beta]"), "{reloaded}");
    assert!(
        !text.contains("server.listen"),
        "the file's listen is replaced by --listen on reload too: {reloaded}"
    );
    assert_eq!(reloaded["level"], "INFO", "{reloaded}");
    proxy.stop().await;
}

#[tokio::test]
async fn every_subcommands_help_lists_the_environment_and_the_exit_codes() {
    let mut subcommands = vec!["serve", "check", "token", "login"];
    if cfg!(feature = "demo") {
        subcommands.push("demo");
    }
    for args in subcommands
        .iter()
        .map(|sub| vec![*sub, "--help"])
        .chain([vec!["--help"]])
    {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
            .args(&args)
            .output()
            .await
            .expect("binary runs");
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let help = stdout_of(&output);
        for expected in [
            "SFMC_PROXY_CONFIG",
            "SFMC_PROXY_LOG_FORMAT",
            "SFMC_PROXY_LISTEN",
            "Exit codes:",
            "2  bad config or usage",
        ] {
            assert!(
                help.contains(expected),
                "{args:?} lacks {expected}:\n{help}"
            );
        }
    }
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_refuses_a_typed_config_but_not_one_in_the_environment() {
    let output = run_binary(&["demo"], std::path::Path::new("my.toml"), &[]).await;
    assert_eq!(output.status.code(), Some(2));
    let error = stderr_of(&output);
    assert!(
        error.contains("--config: `demo` reads no config file"),
        "{error}"
    );

    // SFMC_PROXY_CONFIG exported in the shell is no reason to refuse.
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("SFMC_PROXY_CONFIG", "/nonexistent/proxy.toml")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let stdout = demo.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = lines.next_line().await.expect("read");
    assert_eq!(first.as_deref(), Some("sfmc-proxy demo"));
    demo.start_kill().expect("stop the demo");
}
