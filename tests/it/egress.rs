//! The egress proxy end to end (`upstream.proxy`, the environment's
//! proxies): a real tinyproxy with Basic auth in front of the fake tenant
//! over TLS, stunnel in front of tinyproxy for an `https://` proxy, its
//! refusals, and loopback never sent to an environment proxy.

use std::path::Path;

use crate::support::forward_proxy::{ForwardProxy, TlsFront};
use crate::support::*;

const USER: &str = "svc";
/// A plain word: tinyproxy's `BasicAuth` takes no quoting (the
/// percent-decoding of URL credentials is unit-tested in `config::egress`).
const PASS: &str = "s3cret-w0rd";

/// The fake tenant over TLS (a test CA) and that CA's path.
async fn tls_tenant(dir: &Path) -> (FakeTenant, std::path::PathBuf) {
    let tls = tls_server_with_ca(dir);
    let fake = start_fake_with(tls_fake(&tls.server_config)).await;
    (fake, tls.ca)
}

fn authority(fake: &FakeTenant) -> String {
    format!("localhost:{}", fake.addr().port())
}

/// The CONNECTs the forward proxy was asked for.
fn connects(forward: &ForwardProxy) -> Vec<String> {
    forward
        .requests()
        .into_iter()
        .filter(|line| line.starts_with("CONNECT "))
        .collect()
}

#[tokio::test]
async fn token_rest_and_soap_are_tunnelled_through_an_authenticating_forward_proxy() {
    let dir = temp_dir("egress-tunnel");
    let (fake, ca) = tls_tenant(&dir).await;
    let forward = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let proxy = TestProxy::builder()
        .ca_file(&ca)
        .egress_proxy(&forward.url_with_credentials())
        .prefetch(false)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let reply = TestClient::new()
        .get(&proxy, "/hub/v1/x?$filter=a%20b", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/hub/v1/x");
    assert_eq!(
        reply.json()["version"],
        "HTTP/2.0",
        "ALPN inside the tunnel"
    );
    let reply = TestClient::new()
        .post(&proxy, "/Service.asmx", &soap::XML, soap::envelope(""))
        .await;
    soap::assert_answered(&reply, 1);
    assert_eq!(fake.token_requests(), 1);
    // One tunnel for the token client, one for the pool's (REST and SOAP
    // share the HTTP/2 connection): each asked of tinyproxy, nothing direct.
    let asked = connects(&forward);
    let wanted = format!("CONNECT {} HTTP/1.1", authority(&fake));
    assert_eq!(asked, vec![wanted.clone(), wanted], "{}", forward.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_https_egress_proxy_is_reached_over_tls_before_the_tunnel() {
    let dir = temp_dir("egress-https");
    let tls = tls_server_with_ca(&dir);
    let fake = start_fake_with(tls_fake(&tls.server_config)).await;
    let forward = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let front = TlsFront::start(&dir, forward.addr(), &tls.cert, &tls.key).await;
    let proxy = TestProxy::builder()
        .ca_file(&tls.ca)
        .egress_proxy(&front.url_with_credentials(USER, PASS))
        .prefetch(false)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(connects(&forward).len(), 2, "{}", forward.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn missing_or_wrong_proxy_credentials_say_what_to_change_and_send_nothing_to_sfmc() {
    let dir = temp_dir("egress-407");
    let (fake, ca) = tls_tenant(&dir).await;
    let forward = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let wrong = forward.url().replace("http://", "http://svc:nope@");
    for (url, answer) in [
        (forward.url(), "answered 407 Proxy Authentication Required"),
        (wrong, "answered 401 Unauthorized"),
    ] {
        let proxy = TestProxy::builder()
            .ca_file(&ca)
            .egress_proxy(&url)
            .prefetch(false)
            .tenant(Tenant::new("acme", &fake))
            .start()
            .await;
        let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.json()["error"], "token_unavailable");
        let message = reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let named = format!("the egress proxy {} (from upstream.proxy)", forward.url());
        assert!(message.contains(&named), "{message}");
        assert!(message.contains(answer), "{message}");
        assert!(
            message.contains("check the proxy credentials in upstream.proxy"),
            "{message}"
        );
        assert!(!message.contains("nope"), "{message}");
    }
    assert_eq!(fake.token_requests(), 0);
    assert_eq!(fake.rest_requests(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_plain_http_target_goes_to_the_proxy_in_absolute_form() {
    let dir = temp_dir("egress-absolute");
    let fake = start_fake().await;
    let forward = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let proxy = TestProxy::builder()
        .egress_proxy(&forward.url_with_credentials())
        .prefetch(false)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x?a=%20b", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["query"], "a=%20b", "{}", reply.text());
    let base = format!("http://{}", fake.addr());
    assert!(
        forward.requested("POST", &format!("{base}/v2/token")),
        "{}",
        forward.log()
    );
    assert!(
        forward.requested("GET", &format!("{base}/hub/v1/x?a=%20b")),
        "{}",
        forward.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_unreachable_egress_proxy_is_named_at_once() {
    let fake = start_fake().await;
    let closed = closed_port();
    let proxy = TestProxy::builder()
        .egress_proxy(&format!("http://{closed}"))
        .prefetch(false)
        .fetch_deadline(std::time::Duration::from_secs(2))
        .request_timeout(std::time::Duration::from_secs(1))
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let message = reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(&format!(
            "the egress proxy http://{closed} (from upstream.proxy) cannot be reached"
        )),
        "{message}"
    );
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn check_reports_the_egress_path_without_the_credentials() {
    let dir = temp_dir("egress-check");
    let (fake, ca) = tls_tenant(&dir).await;
    let forward = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let config = TestProxy::builder()
        .ca_file(&ca)
        .egress_proxy(&forward.url_with_credentials())
        .tenant(Tenant::new("acme", &fake))
        .render();
    let path = config_file("egress-check", &config);
    let output = run_binary(&["check"], &path, &[]).await;
    let printed = succeeded(&output);
    let expected = format!(
        "egress: through the egress proxy {} (from upstream.proxy)",
        forward.url()
    );
    assert!(printed.contains(&expected), "{printed}");
    let output = run_binary(&["check", "--json"], &path, &[]).await;
    let report: serde_json::Value =
        serde_json::from_str(&succeeded(&output)).expect("check --json");
    let tenant = &report["tenants"][0];
    assert_eq!(tenant["egress"], expected["egress: ".len()..]);
    assert_eq!(
        tenant["business_units"][0]["instance_egress"],
        expected["egress: ".len()..]
    );
    for text in [printed, stderr_of(&output), report.to_string()] {
        assert!(!text.contains("w0rd"), "{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A shell with a corporate proxy set: loopback targets never reach it.
/// Every variable names a port where nothing listens, so any call that
/// used one would fail.
#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_works_in_a_shell_with_environment_proxies_set() {
    let dead = format!("http://{}", closed_port());
    let variables = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ];
    let envs: Vec<(&str, &str)> = variables
        .iter()
        .map(|name| (*name, dead.as_str()))
        .collect();
    let (_demo, printed) = demo_ready(&envs, &["NO_PROXY", "no_proxy"]).await;
    let text = printed.join("\n");
    let checks: Vec<&String> = printed.iter().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(checks.len(), 4, "{text}");
    assert!(checks.iter().all(|l| l.contains("-> 200")), "{text}");
}
