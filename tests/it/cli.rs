//! The binary as a user runs it: exit codes, messages that name the key, and
//! `token`/`check` output (never a token where it does not belong).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;

// The shared runner under this file's shorter names: its state (the token
// store, the token cache) is `state_dir(config)`, never the real home.
use crate::support::{
    config_file as write_config, run_binary as run, stderr_of as stderr, stdout_of as stdout,
};

/// Where `token` and `check` cache tokens for `config` (see `run`).
fn token_cache(config: &Path) -> PathBuf {
    state_dir(config).join("sfmc-proxy/access-tokens.json")
}

const GOOD_TENANT: &str = "[tenants.acme]\nauth_url = \"https://mc123.auth.marketingcloudapis.com/\"\nclient_id = \"id\"\nclient_secret = \"${TEST_SECRET}\"\n";

#[tokio::test]
async fn config_errors_exit_2_and_name_the_key() {
    let cases = [
        (format!("{GOOD_TENANT}clinet_id = \"typo\"\n"), "clinet_id"),
        (
            GOOD_TENANT.replace("${TEST_SECRET}", "${SFMC_TEST_UNSET_VARIABLE}"),
            "SFMC_TEST_UNSET_VARIABLE",
        ),
        (
            GOOD_TENANT.replace("https://mc123", "http://mc123"),
            "tenants.acme.auth_url",
        ),
        (
            format!("[token]\nrefresh_before_expiry = \"two minutes\"\n{GOOD_TENANT}"),
            "token.refresh_before_expiry",
        ),
        (
            format!("[upstream]\nresponse_timeout = \"-1s\"\n{GOOD_TENANT}"),
            "upstream.response_timeout",
        ),
        (
            format!("[server]\nlisten = \"0.0.0.0:8080\"\n{GOOD_TENANT}"),
            "server.listen",
        ),
        ("[server]\n".to_owned(), "tenants"),
    ];
    for (text, key) in cases {
        let path = write_config("bad-config", &text);
        for check in [&["check"][..], &["check", "--offline"]] {
            let output = run(check, &path, &[("TEST_SECRET", "s3cret-value")]).await;
            assert_eq!(output.status.code(), Some(2), "{key}: {}", stderr(&output));
            assert!(
                stderr(&output).contains(key),
                "message names {key}: {}",
                stderr(&output)
            );
            assert!(!stderr(&output).contains("s3cret-value"));
        }
    }
}

#[tokio::test]
async fn missing_config_file_exits_2_with_a_hint() {
    let output = run(&["check"], Path::new("/nonexistent/proxy.toml"), &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("/nonexistent/proxy.toml"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let output = run(&["token", "--no-such-flag"], Path::new("proxy.toml"), &[]).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn token_prints_one_token_and_nothing_else_on_stdout() {
    let fake = start_fake().await;
    let config =
        TestProxy::builder().tenant(Tenant::new("acme", &fake).account_ids(&["100", "200"]));
    let path = write_config("token", &config.render());
    let output = run(&["token"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "{printed}");
    assert!(lines[0].starts_with("fake-1-"), "{printed}");
    assert_eq!(fake.token_requests(), 1);

    let output = run(&["token", "--account-id", "200"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        fake.last_token_request().expect("request")["account_id"],
        "200"
    );

    let output = run(&["token", "--account-id", "999"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(2), "MID outside account_ids");
    assert!(stdout(&output).is_empty());
    let output = run(&["token", "--tenant", "nope"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("nope"));
}

#[tokio::test]
async fn check_reports_instance_expiry_and_scope_but_never_the_token() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake).scope("email_read"));
    let path = write_config("check", &config.render());
    let output = run(&["check"], &path, &[]).await;
    let printed = succeeded(&output);
    assert!(
        printed.contains(&format!(
            "acme BU of the package (default): ok (new token; expires in 1080 s; rest instance http://{}/; ",
            fake.addr()
        )),
        "{printed}"
    );
    assert!(
        printed.contains("; granted scope email_read)\n"),
        "{printed}"
    );
    assert!(
        !printed.contains("fake-1-") && !stderr(&output).contains("fake-1-"),
        "no token printed"
    );
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn check_fails_with_exit_1_and_sfmcs_reason_when_refused() {
    let fake = start_fake().await;
    let config =
        TestProxy::builder().tenant(Tenant::new("acme", &fake).client_secret("not-the-secret"));
    let path = write_config("check-refused", &config.render());
    let output = run(&["check"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let printed = stdout(&output);
    assert!(
        printed.contains("acme BU of the package (default): FAILED: ")
            && printed.contains("invalid_client"),
        "{printed}"
    );
    assert!(
        stderr(&output).contains("1 of 1 business unit(s) could not get a token"),
        "{}",
        stderr(&output)
    );
    assert!(!printed.contains("not-the-secret") && !stderr(&output).contains("not-the-secret"));
}

#[tokio::test]
async fn serve_refuses_a_port_in_use_with_exit_1() {
    let fake = start_fake().await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr");
    let config = TestProxy::builder()
        .listen(addr)
        .tenant(Tenant::new("acme", &fake));
    let path = write_config("busy", &config.render());
    let output = run(&["serve"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&addr.to_string()),
        "{}",
        stderr(&output)
    );
}

// The slim build (`--no-default-features`) has no `demo`.
#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_checks_rest_and_soap_and_prints_a_soap_curl_line_that_works() {
    // The demo prints its self-check, then the lines to try, then waits.
    let (_demo, printed) = demo_ready(&[], &[]).await;
    let text = printed.join("\n");
    assert!(text.contains("POST /Service.asmx [SOAPAction: Retrieve, no token in the envelope] -> 200; OverallStatus OK, 2 results; the fake SFMC found token #1 for MID 100"), "{text}");
    assert!(
        text.contains("token requests sent to SFMC: 2 for 4 calls"),
        "{text}"
    );
    let self_check: Vec<&str> = printed
        .iter()
        .filter(|l| l.contains(" -> "))
        .map(String::as_str)
        .collect();
    assert_eq!(self_check.len(), 4, "{text}");
    assert!(self_check.iter().all(|l| l.contains("-> 200")), "{text}");
    assert!(!text.contains("fake-client-secret"), "no secret printed");
    // The printed heredoc, pasted into a shell, posts this envelope to this URL.
    let curl = printed
        .iter()
        .position(|l| l.ends_with("<<'XML'"))
        .expect("SOAP curl line");
    let end = curl
        + printed[curl..]
            .iter()
            .position(|l| l == "XML")
            .expect("heredoc end");
    let url = printed[curl].split_whitespace().nth(2).expect("URL");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/Service.asmx"),
        "{url}"
    );
    let envelope = printed[curl + 1..end].join("\n");
    let req = http::Request::post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", "Retrieve")
        .body(full(envelope))
        .expect("request");
    let reply = TestClient::new().fetch(req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply_field(&reply.text(), "OverallStatus").as_deref(),
        Some("OK")
    );
    // The same proxy serves REST, with the business unit picked per request.
    let rest = http::Request::get(url.replace("/Service.asmx", "/hub/v1/demo?$top=1"))
        .header("x-sfmc-account-id", "200")
        .body(empty())
        .expect("request");
    let echo = TestClient::new().fetch(rest).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(echo.json()["path"], "/hub/v1/demo");
    assert_eq!(echo.json()["query"], "$top=1");
    assert_eq!(echo.json()["account_id"], "200");
}

#[tokio::test]
async fn check_accepts_an_auth_url_pasted_as_the_token_url_and_says_so() {
    let fake = start_fake().await;
    let pasted = format!("{}v2/token", fake.auth_url());
    let config = TestProxy::builder().tenant(Tenant::at("acme", &pasted));
    let path = write_config("check-token-url", &config.render());
    let output = run(&["check"], &path, &[]).await;
    let printed = succeeded(&output);
    assert!(
        printed.contains("note: tenants.acme.auth_url: ")
            && printed.contains("Authentication Base URI"),
        "{printed}"
    );
    assert!(
        printed.contains("acme BU of the package (default): ok"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("token endpoint {}v2/token (", fake.auth_url())),
        "posted to /v2/token once, not /v2/token/v2/token: {printed}"
    );
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn a_path_prefix_that_shadows_an_sfmc_api_root_exits_2_naming_the_key() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake).path_prefix("/Hub"));
    let path = write_config("prefix-hub", &config.render());
    let output = run(&["check"], &path, &[]).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("tenants.acme.path_prefix"), "{said}");
    assert!(said.contains("an SFMC REST API root"), "{said}");
    assert_eq!(fake.token_requests(), 0, "nothing is asked of SFMC");
}

#[tokio::test]
async fn check_into_a_closed_pipe_exits_quietly() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake));
    let path = write_config("check-pipe", &config.render());
    // `check | head -0`: the reader is gone before the first line is written.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = run_binary_into(&["check"], &path, std::process::Stdio::from(writer)).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}

#[tokio::test]
async fn a_web_page_where_a_token_was_expected_names_the_url_and_content_type() {
    let page = bytes::Bytes::from_static(b"<!doctype html><title>Marketing Cloud</title>");
    let auth_url = static_auth_answer("text/html; charset=utf-8", page).await;
    let config = TestProxy::builder().tenant(Tenant::at("acme", &auth_url));
    let path = write_config("check-html", &config.render());
    let output = run(&["check"], &path, &[]).await;
    let printed = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{printed}{}",
        stderr(&output)
    );
    assert!(
        printed.contains(&format!("POST {auth_url}v2/token answered HTTP 200")),
        "{printed}"
    );
    assert!(
        printed.contains("Content-Type: text/html; charset=utf-8"),
        "{printed}"
    );
    assert!(printed.contains("Authentication Base URI"), "{printed}");
}

/// The one line `token` printed.
fn printed_token(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    let printed = stdout(output);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "{printed}");
    lines[0].to_owned()
}

#[tokio::test]
async fn token_prints_the_cached_token_until_its_refresh_window_and_fresh_forces_a_new_one() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake));
    let path = write_config("token-cache", &config.render());
    let first = printed_token(&run(&["token"], &path, &[]).await);
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(printed_token(&run(&["token"], &path, &[]).await), first);
    assert_eq!(
        fake.token_requests(),
        1,
        "the second call asks SFMC nothing"
    );

    let cache = token_cache(&path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o600);
        assert_eq!(mode(cache.parent().expect("dir")), 0o700);
    }
    let text = std::fs::read_to_string(&cache).expect("cache written");
    assert!(!text.contains(CLIENT_SECRET), "no secret in the cache");

    let fresh = printed_token(&run(&["token", "--fresh"], &path, &[]).await);
    assert_ne!(fresh, first);
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(printed_token(&run(&["token"], &path, &[]).await), fresh);
    assert_eq!(fake.token_requests(), 2, "--fresh replaced the cached one");

    // Within token.refresh_before_expiry (120 s) of its expiry: not reused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let text = std::fs::read_to_string(&cache).expect("cache");
    let mut file: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    for entry in file["entries"].as_array_mut().expect("entries") {
        entry["obtained_at"] = (now - 900).into();
        entry["expires_at"] = (now + 60).into();
    }
    std::fs::write(&cache, file.to_string()).expect("rewrite cache");
    let renewed = printed_token(&run(&["token"], &path, &[]).await);
    assert_ne!(renewed, fresh);
    assert_eq!(fake.token_requests(), 3);

    // A token another command holds the lock for is printed at once: the
    // lock guards writes, and a fresh entry needs none.
    let lock = std::fs::File::options()
        .write(true)
        .open(cache.with_extension("lock"))
        .expect("lock file");
    lock.lock().expect("hold the lock");
    let held = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        run(&["token"], &path, &[]),
    )
    .await
    .expect("not kept waiting by the lock");
    assert_eq!(printed_token(&held), renewed);
    // One that needs a new token waits for the lock, and says so.
    let mut waiting = binary_command(&["token", "--fresh"], &path, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr_pipe = waiting.stderr.take().expect("stderr");
    let mut said = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr_pipe));
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), said.next_line())
        .await
        .expect("it says why it waits")
        .expect("read")
        .unwrap_or_default();
    assert!(
        first.contains("waiting for another sfmc-proxy command"),
        "{first}"
    );
    assert_eq!(fake.token_requests(), 3, "nothing asked while it waits");
    drop(lock);
    let output = waiting.wait_with_output().await.expect("token ends");
    assert_eq!(output.status.code(), Some(0));
    assert_ne!(stdout(&output).trim(), renewed, "--fresh got a new token");
    assert_eq!(fake.token_requests(), 4);

    // A corrupt cache: a warning that never quotes it, a new token, the
    // cache rewritten.
    std::fs::write(
        &cache,
        br#"{"version":1,"entries":[{"obtained_at":"fake-LEAKED"}]}"#,
    )
    .expect("corrupt cache");
    let output = run(&["token"], &path, &[]).await;
    let after_corrupt = printed_token(&output);
    assert!(
        stderr(&output).contains("warning: token cache")
            && stderr(&output).contains("not in the expected shape at line 1")
            && !stderr(&output).contains("fake-"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fake.token_requests(), 5);
    assert_eq!(
        printed_token(&run(&["token"], &path, &[]).await),
        after_corrupt
    );
    assert_eq!(fake.token_requests(), 5);
}

#[tokio::test]
async fn token_never_reuses_a_token_had_with_another_config() {
    let (one, two) = (start_fake().await, start_fake().await);
    let path = write_config(
        "token-fingerprint",
        &TestProxy::builder()
            .tenant(Tenant::new("acme", &one))
            .render(),
    );
    let first = printed_token(&run(&["token"], &path, &[]).await);
    // The same tenant name, now at another auth URL: a token from there.
    let other = TestProxy::builder().tenant(Tenant::new("acme", &two));
    std::fs::write(&path, other.render()).expect("rewrite config");
    let second = printed_token(&run(&["token"], &path, &[]).await);
    assert_ne!(first, second);
    assert_eq!((one.token_requests(), two.token_requests()), (1, 1));
}

#[tokio::test]
async fn concurrent_token_calls_share_one_token_request() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake));
    let path = write_config("token-concurrent", &config.render());
    let (a, b, c) = tokio::join!(
        run(&["token"], &path, &[]),
        run(&["token"], &path, &[]),
        run(&["token"], &path, &[])
    );
    let printed = [printed_token(&a), printed_token(&b), printed_token(&c)];
    assert!(printed.iter().all(|t| *t == printed[0]), "{printed:?}");
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn token_names_the_flag_it_refuses() {
    let fake = start_fake().await;
    let config =
        TestProxy::builder().tenant(Tenant::new("acme", &fake).account_ids(&["100", "200"]));
    let path = write_config("token-flags", &config.render());
    for (args, said) in [
        (&["token", "--account-id", "abc"][..], "--account-id abc: "),
        (&["token", "--account-id", "999"], "--account-id 999: "),
        (&["token", "--scope", "email_read\u{7f}"], "--scope: "),
    ] {
        let output = run(args, &path, &[]).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stdout(&output).is_empty());
        let message = stderr(&output);
        assert!(message.contains(said), "{args:?}: {message}");
        assert!(!message.contains("X-SFMC"), "{args:?}: {message}");
    }
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn check_checks_every_business_unit_and_a_second_check_reuses_the_tokens() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(
        Tenant::new("acme", &fake)
            .account_id("200")
            .account_ids(&["100", "200", "300"]),
    );
    let path = write_config("check-units", &config.render());
    let output = run(&["check"], &path, &[]).await;
    let printed = succeeded(&output);
    for line in [
        "  acme BU 200 (default): ok (new token; expires in 1080 s;",
        "  acme BU 100: ok (new token;",
        "  acme BU 300: ok (new token;",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    assert!(
        printed.contains("(1 tenant(s), 3 business unit(s))"),
        "{printed}"
    );
    assert_eq!(fake.token_requests(), 3, "each business unit once");
    assert_eq!(
        fake.last_token_request().expect("request")["account_id"],
        "300"
    );

    let output = run(&["check"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output).matches(": ok (cached token;").count(), 3);
    assert_eq!(fake.token_requests(), 3, "a second check asks SFMC nothing");
    // `token` reuses what `check` had.
    let token = printed_token(&run(&["token", "--account-id", "100"], &path, &[]).await);
    assert!(token.starts_with("fake-"), "{token}");
    assert_eq!(fake.token_requests(), 3);

    let output = run(&["check", "--json"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["offline"], false);
    assert_eq!(report["failed"], 0);
    let tenant = &report["tenants"][0];
    assert_eq!(tenant["name"], "acme");
    assert_eq!(tenant["grant"], "client_credentials");
    let units = tenant["business_units"].as_array().expect("business units");
    let mids: Vec<&str> = units
        .iter()
        .filter_map(|u| u["account_id"].as_str())
        .collect();
    assert_eq!(mids, ["200", "100", "300"]);
    for unit in units {
        assert_eq!(unit["ok"], true, "{unit}");
        assert_eq!(unit["cached"], true, "{unit}");
        assert!(
            unit["expires_in"]
                .as_u64()
                .is_some_and(|s| s > 0 && s <= 1080),
            "{unit}"
        );
        assert_eq!(unit["rest_instance"], format!("http://{}/", fake.addr()));
        assert!(unit["scope"].is_string(), "{unit}");
        assert!(unit["error"].is_null(), "{unit}");
    }
    assert_eq!(units[0]["default"], true);
    assert!(!stdout(&output).contains("fake-"), "never a token");
    assert_eq!(fake.token_requests(), 3);

    // --fresh trusts no cached token: SFMC is asked again, and refuses now.
    fake.set_auth_failure(Some(invalid_client()));
    let output = run(&["check"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0), "the cache still says ok");
    let output = run(&["check", "--fresh"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("invalid_client"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        fake.token_requests(),
        4,
        "one refusal holds back the tenant"
    );
    let both = run(&["check", "--fresh", "--offline"], &path, &[]).await;
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

#[tokio::test]
async fn check_reports_each_failing_business_unit_and_exits_1() {
    let fake = start_fake().await;
    let config = TestProxy::builder()
        .tenant(Tenant::new("acme", &fake).account_ids(&["100", "200"]))
        .tenant(
            Tenant::new("bad", &fake)
                .client_secret("not-the-secret")
                .account_ids(&["100", "200"]),
        );
    let path = write_config("check-failing", &config.render());
    let output = run(&["check", "--json"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("error: 3 of 6 business unit(s) could not get a token"),
        "{}",
        stderr(&output)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(
        (report["ok"].clone(), report["failed"].clone()),
        (false.into(), 3.into())
    );
    let units = |tenant: usize| report["tenants"][tenant]["business_units"].clone();
    assert_eq!(report["tenants"][1]["name"], "bad");
    for unit in units(1).as_array().expect("units") {
        assert_eq!(unit["ok"], false, "{unit}");
        assert!(
            unit["error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid_client")),
            "{unit}"
        );
    }
    assert!(
        units(0)
            .as_array()
            .expect("units")
            .iter()
            .all(|u| u["ok"] == true)
    );
    // A wrong secret is wrong for every business unit: asked once, not three times.
    assert_eq!(fake.token_requests(), 3 + 1);
    assert!(
        !stdout(&output).contains("not-the-secret") && !stderr(&output).contains("not-the-secret")
    );
}

#[tokio::test]
async fn check_waits_for_the_token_rate_limit_instead_of_bursting() {
    let fake = start_fake().await;
    // Two at once, then one every 2 s: the third business unit must wait
    // (unless the first two token requests took over 2 s, which on loopback
    // they do not), and the wait is said.
    let config = TestProxy::builder()
        .rate_burst(2)
        .rate_interval(std::time::Duration::from_secs(2))
        .tenant(Tenant::new("acme", &fake).account_ids(&["100", "200"]));
    let path = write_config("check-rate", &config.render());
    let output = run(&["check"], &path, &[]).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{}{said}", stdout(&output));
    assert_eq!(stdout(&output).matches(": ok (new token;").count(), 3);
    assert_eq!(fake.token_requests(), 3, "no BU failed for the limit");
    assert_eq!(
        said.matches("check: tenant acme: waiting ").count(),
        1,
        "{said}"
    );
    assert!(said.contains("token.rate_burst = 2"), "{said}");
}

#[tokio::test]
async fn check_offline_validates_and_says_what_it_would_check_without_a_request() {
    let fake = start_fake().await;
    let config =
        TestProxy::builder().tenant(Tenant::new("acme", &fake).account_ids(&["100", "200"]));
    let path = write_config("check-offline", &config.render());
    let output = run(&["check", "--offline"], &path, &[]).await;
    let printed = succeeded(&output);
    assert!(
        printed.contains("--offline: no token requested"),
        "{printed}"
    );
    assert_eq!(
        printed.matches(": would request a token").count(),
        3,
        "{printed}"
    );
    assert_eq!(fake.token_requests(), 0);

    printed_token(&run(&["token", "--account-id", "200"], &path, &[]).await);
    let output = run(&["check", "--offline", "--json"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["offline"], true);
    assert!(report["ok"].is_null());
    let units = report["tenants"][0]["business_units"]
        .as_array()
        .expect("units")
        .clone();
    assert_eq!(units.len(), 3);
    assert!(units.iter().all(|u| u["ok"].is_null()));
    let cached: Vec<&serde_json::Value> = units.iter().filter(|u| u["cached"] == true).collect();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0]["account_id"], "200");
    assert_eq!(fake.token_requests(), 1, "only the `token` call asked");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn token_into_a_full_disk_fails_instead_of_exiting_0() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake));
    let path = write_config("token-full", &config.render());
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = run_binary_into(&["token"], &path, std::process::Stdio::from(full)).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot write to standard output"), "{said}");
    assert!(!said.contains("fake-"), "{said}");
}

// `demo | head -0`: the demo, too, ends quietly when its reader has gone.
#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_into_a_closed_pipe_exits_quietly() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let ended = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary runs")
        .wait_with_output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), ended)
        .await
        .expect("the demo ends once nobody reads it")
        .expect("binary ends");
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}
