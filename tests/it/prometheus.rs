//! The exposition as its consumers read it: valid under Python
//! `prometheus_client`'s strict OpenMetrics parser, and scraped by a real
//! Prometheus (Debian's package, on a free port) that sends the inbound key
//! as `Authorization: Bearer` — and then holds the values the proxy counted.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::metrics::{sample, scrape};
use crate::support::tools::{prometheus, python_with_prometheus_client};
use crate::support::*;

const KEY: &str = "prometheus-scrape-key-0123";

/// A proxy with the inbound key that has served a REST call, a refused
/// business unit and a throttled answer, so most families have samples.
async fn busy_proxy() -> Setup {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&[KEY]))
        .tenant(|t| t.account_ids(&["100"]))
        .start()
        .await;
    let key = [("x-proxy-key", KEY)];
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &key).await.status, 200);
    let refused = [("x-proxy-key", KEY), ("x-sfmc-account-id", "999")];
    assert_eq!(
        s.client.get(&s.proxy, "/hub/v1/x", &refused).await.status,
        403
    );
    let throttled = s
        .client
        .get(&s.proxy, "/fake/respond?status=429", &key)
        .await;
    assert_eq!(throttled.status, 429);
    s
}

#[tokio::test]
async fn the_exposition_passes_the_strict_openmetrics_parser() {
    let s = busy_proxy().await;
    let text = scrape(
        &s.client,
        &s.proxy,
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await
    .text();
    let dir = temp_dir("openmetrics");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text).expect("write the exposition");
    // Every family and sample is parsed; the names are printed for the
    // assertions below. The parser raises on anything the format forbids.
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
for family in text_string_to_metric_families(text):
    print(family.name, family.type, len(family.samples))
"#;
    let python = python_with_prometheus_client();
    let output = tokio::process::Command::new(python)
        .args(["-c", script])
        .arg(&file)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the strict parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    for family in [
        "sfmc_proxy_requests counter",
        "sfmc_proxy_request_duration_seconds histogram",
        "sfmc_proxy_upstream_duration_seconds histogram",
        "sfmc_proxy_token_requests counter",
        "sfmc_proxy_token_expiry_timestamp_seconds gauge",
        "sfmc_proxy_upstream_throttled counter",
        "sfmc_proxy_build info",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{family} "))),
            "{family} missing from the parsed families:\n{stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Prometheus' `/api/v1/…` answer's `data`.
async fn api(client: &TestClient, base: &str, path: &str) -> Value {
    let request = http::Request::get(format!("{base}{path}"))
        .body(empty())
        .expect("request");
    let reply = client.fetch(request).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()["data"].clone()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_proxy_with_the_key_as_a_bearer() {
    let s = busy_proxy().await;
    let binary = prometheus();
    let dir = temp_dir("prometheus");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sfmc-proxy\n    metrics_path: /_proxy/metrics\n    authorization:\n      type: Bearer\n      credentials: {KEY}\n    static_configs:\n      - targets: ['{}']\n",
        s.proxy.addr
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write the config");
    let mut child = tokio::process::Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // It logs the address it bound (`msg="Listening on" address=…`) and
    // that it is ready (before that its API answers 503), from two
    // goroutines: in either order.
    let mut log = Vec::new();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut address, mut ready) = (None, false);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("msg=\"Listening on\"") {
                address = line.split("address=").nth(1).map(|a| a.trim().to_owned());
            }
            ready |= line.contains("Server is ready to receive web requests");
            log.push(line);
            if ready && address.is_some() {
                return address;
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("prometheus did not get ready:\n{}", log.join("\n")));
    // Keep reading its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://{listening}");
    let client = TestClient::new();

    // Its scrape loop runs every second: wait for the first result.
    let target = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let targets = api(&client, &base, "/api/v1/targets").await;
            let target = targets["activeTargets"][0].clone();
            if target["health"] != "unknown" && !target.is_null() {
                return target;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("prometheus scraped the proxy within a minute");
    assert_eq!(
        target["health"], "up",
        "scrape failed: {}",
        target["lastError"]
    );
    assert_eq!(target["lastError"], "");

    // What Prometheus stored is what the proxy counted.
    let query = "/api/v1/query?query=sfmc_proxy_token_requests_total";
    let result = api(&client, &base, query).await["result"].clone();
    let stored: Vec<(String, String)> = result
        .as_array()
        .expect("a vector")
        .iter()
        .map(|r| (r["metric"]["result"].to_string(), r["value"][1].to_string()))
        .collect();
    assert_eq!(
        stored,
        [("\"ok\"".to_owned(), "\"1\"".to_owned())],
        "{result}"
    );
    assert_eq!(s.fake.token_requests(), 1);
    let build = api(&client, &base, "/api/v1/query?query=sfmc_proxy_build_info").await;
    assert_eq!(
        build["result"][0]["metric"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    let scraped = scrape(&s.client, &s.proxy, &[("x-proxy-key", KEY)])
        .await
        .text();
    let by_prometheus =
        r#"sfmc_proxy_requests_total{tenant="unknown",api="proxy",method="GET",code="200"}"#;
    assert!(
        sample(&scraped, by_prometheus).is_some_and(|n| n >= 1.0),
        "{scraped}"
    );
    child.kill().await.expect("stop prometheus");
    let _ = std::fs::remove_dir_all(dir);
}

/// The README's example alerts are rules Prometheus accepts (`promtool check
/// rules`), over metric names the proxy exposes.
#[tokio::test]
async fn the_readme_alerts_are_valid_rules_over_real_metric_names() {
    let readme = include_str!("../../README.md");
    let rules = readme
        .split("```yaml\n")
        .filter_map(|block| block.split("```").next())
        .find(|block| block.starts_with("groups:"))
        .expect("the README has an alerts block");
    let dir = temp_dir("alerts");
    let file = dir.join("alerts.yml");
    std::fs::write(&file, rules).expect("write the rules");
    let promtool = prometheus().with_file_name("promtool");
    let output = tokio::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .await
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool refused the README's alerts: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // And they fire when they should (`promtool test rules`): a tenant whose
    // every token request is refused from the start (only its 0 of `ok`), and
    // a business unit in use whose token has expired.
    let cases = r#"
rule_files: [alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'sfmc_proxy_token_requests_total{tenant="acme",mid="default",result="ok",error=""}'
        values: '0x40'
      - series: 'sfmc_proxy_token_requests_total{tenant="acme",mid="default",result="rejected",error="invalid_client"}'
        values: '0+1x40'
      - series: 'sfmc_proxy_token_expiry_timestamp_seconds{tenant="acme",mid="100"}'
        values: '300x40'
      - series: 'sfmc_proxy_business_unit_requests_total{tenant="acme",mid="100",outcome="ok"}'
        values: '0+10x40'
    alert_rule_test:
      - eval_time: 25m
        alertname: SfmcTokenEndpointFailing
        exp_alerts:
          - exp_labels: {tenant: acme}
            exp_annotations:
              summary: "SFMC refuses or cannot be reached for tenant acme: see /_proxy/status"
      - eval_time: 25m
        alertname: SfmcTokenExpiresSoon
        exp_alerts:
          - exp_labels: {tenant: acme, mid: "100"}
            exp_annotations:
              summary: "token of acme/100 expires within 60 s"
"#;
    std::fs::write(dir.join("alerts.test.yml"), cases).expect("write the rule tests");
    let promtool = prometheus().with_file_name("promtool");
    let output = tokio::process::Command::new(promtool)
        .current_dir(&dir)
        .args(["test", "rules", "alerts.test.yml"])
        .output()
        .await
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "the README's alerts do not fire as they should: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let s = setup().await;
    let throttled = s
        .client
        .get(&s.proxy, "/fake/respond?status=503", &[])
        .await;
    assert_eq!(throttled.status, 503);
    let text = scrape(&s.client, &s.proxy, &[]).await.text();
    for name in [
        "sfmc_proxy_token_requests",
        "sfmc_proxy_token_expiry_timestamp_seconds",
        "sfmc_proxy_business_unit_requests",
        "sfmc_proxy_upstream_throttled",
    ] {
        assert!(rules.contains(name), "{name} not in the alerts");
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} not exposed"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
