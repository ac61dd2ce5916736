//! `sfmc-proxy demo` as a newcomer runs it: the fake tenant and the proxy come
//! up, the self-check passes through the proxy, and the printed address serves.

mod support;

use std::process::Stdio;

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn demo_serves_through_the_proxy_and_prints_curl_lines() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    // The demo prints its last line once the self-check is done.
    while let Some(line) = lines.next_line().await.expect("read stdout") {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Press Ctrl-C to stop") {
            break;
        }
    }
    assert!(
        printed.contains("Press Ctrl-C to stop"),
        "the demo ran to its end:\n{printed}"
    );
    let self_check: Vec<&str> = printed.lines().filter(|l| l.contains(" -> ")).collect();
    assert!(!self_check.is_empty(), "self-check lines:\n{printed}");
    for line in &self_check {
        assert!(line.contains("-> 200"), "self-check call failed: {line}");
    }
    assert!(
        printed.contains("token requests sent to SFMC: 2 for"),
        "one token per business unit:\n{printed}"
    );
    assert!(!printed.contains("fake-client-secret"), "no secret printed");

    // The printed address is a live proxy in front of the fake tenant.
    let proxy_line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("proxy"))
        .expect("a proxy line");
    let addr = proxy_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address");
    let request = http::Request::builder()
        .uri(format!("http://{addr}/hub/v1/demo?$top=1"))
        .header("x-sfmc-account-id", "200")
        .body(empty())
        .expect("request");
    let reply = TestClient::new().fetch(request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/hub/v1/demo");
    assert_eq!(reply.json()["query"], "$top=1");
    assert_eq!(reply.json()["account_id"], "200");
    assert!(printed.contains(&format!("curl -s 'http://{addr}/hub/v1/")));
    child.kill().await.expect("demo stops");
}
