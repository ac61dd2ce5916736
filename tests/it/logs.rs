//! Logs as an operator sees them: one JSON event per request with the fields
//! that matter, and never a token, a secret or a query string.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

#[tokio::test]
async fn json_access_log_has_one_event_per_request_and_no_secrets() {
    let fake = start_fake().await;
    let listen = closed_port();
    let dir = temp_dir("logs");
    let config = dir.join("proxy.toml");
    let text = TestProxy::builder()
        .listen(listen)
        .tenant(Tenant::new("acme", &fake).account_ids(&["100", "200"]))
        .render();
    std::fs::write(&config, text).expect("write config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "serve"])
        .env("RUST_LOG", "debug")
        .env_remove("SFMC_PROXY_CONFIG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = Vec::new();
    // Wait for the start-up event rather than sleeping.
    while let Some(line) = lines.next_line().await.expect("read stderr") {
        let listening = line.contains("listening");
        log.push(line);
        if listening {
            break;
        }
    }
    let base = format!("http://{listen}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let secret_query =
        "/hub/v1/dataevents/key:DE/rowset?$filter=Email%20eq%20%27secret-customer@example.com%27";
    for (path, mid) in [
        (secret_query, None),
        ("/hub/v1/x", Some("200")),
        ("/hub/v1/x", Some("999")),
    ] {
        let mut request = client
            .get(format!("{base}{path}"))
            .header("authorization", "Bearer client-side-placeholder");
        if let Some(mid) = mid {
            request = request.header("x-sfmc-account-id", mid);
        }
        request
            .send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body");
    }
    child.start_kill().expect("stop the proxy");
    while let Some(line) = lines.next_line().await.expect("read stderr") {
        log.push(line);
    }
    let access: Vec<Value> = log
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["target"] == "sfmc_proxy::access")
        .collect();
    assert_eq!(
        access.len(),
        3,
        "one event per request:\n{}",
        log.join("\n")
    );
    assert_eq!(access[0]["method"], "GET");
    assert_eq!(access[0]["path"], "/hub/v1/dataevents/key:DE/rowset");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["tenant"], "acme");
    assert_eq!(access[0]["token"], "fetch");
    assert!(access[0]["duration_ms"].is_number());
    assert_eq!(access[1]["account_id"], "200");
    assert_eq!(access[2]["status"], 403);
    assert_eq!(access[2]["error"], "account_not_allowed");
    let whole = log.join("\n");
    for secret in [
        CLIENT_SECRET,
        "fake-1-",
        "fake-2-",
        "secret-customer",
        "client-side-placeholder",
        "$filter",
    ] {
        assert!(
            !whole.contains(secret),
            "`{secret}` leaked into the log:\n{whole}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
