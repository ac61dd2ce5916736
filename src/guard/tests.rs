use http::StatusCode;

use super::*;
use crate::broker::LocalTokens;
use crate::config::Secret;
use crate::token::TokenKey;

#[test]
fn host_of_drops_the_port_and_keeps_ipv6_brackets() {
    for (authority, host) in [
        ("127.0.0.1:8080", Some("127.0.0.1")),
        ("localhost", Some("localhost")),
        ("[::1]:8080", Some("[::1]")),
        ("[::1]", Some("[::1]")),
        ("user@127.0.0.1:80", Some("user@127.0.0.1")),
        (":8080", Some("")),
        ("localhost:junk", None),
        ("localhost:", None),
        ("localhost:80@evil", None),
        ("[::1]junk", None),
        ("[::1]:8080x", None),
        ("[::1", None),
    ] {
        assert_eq!(host_of(authority), host, "{authority}");
    }
}
use http::Request;

fn server(keys: &[&str], origins: &[&str]) -> ServerSettings {
    ServerSettings {
        listen: vec!["127.0.0.1:8080".parse().expect("addr")],
        admin_listen: None,
        public_url: None,
        inbound_keys: keys.iter().map(|k| Secret::new(*k)).collect(),
        allow_unauthenticated_remote: false,
        allowed_hosts: Some(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]),
        allowed_hosts_configured: false,
        allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
        max_connections: 10,
        header_read_timeout: std::time::Duration::from_secs(1),
        idle_timeout: std::time::Duration::from_secs(1),
        max_concurrent_streams: 100,
        worker_threads: None,
        log_paths: true,
        shutdown_timeout: std::time::Duration::from_secs(30),
        ready_requires: crate::config::ReadyRequires::All,
    }
}

fn parts(builder: http::request::Builder) -> Parts {
    builder.body(()).expect("request").into_parts().0
}

fn code(result: Result<(), ProxyError>) -> &'static str {
    result.err().map_or("ok", |e| e.code())
}

#[test]
fn host_must_be_allowed() {
    let s = server(&[], &[]);
    assert_eq!(
        code(check(
            &parts(Request::get("/x").header("host", "127.0.0.1:8080")),
            &s
        )),
        "ok"
    );
    assert_eq!(
        code(check(
            &parts(Request::get("/x").header("host", "[::1]:8080")),
            &s
        )),
        "ok"
    );
    assert_eq!(
        code(check(
            &parts(Request::get("/x").header("host", "LOCALHOST")),
            &s
        )),
        "ok"
    );
    assert_eq!(
        code(check(
            &parts(Request::get("/x").header("host", "evil.example:8080")),
            &s
        )),
        "host_not_allowed"
    );
    assert_eq!(
        code(check(&parts(Request::get("/x")), &s)),
        "host_not_allowed"
    );
    assert_eq!(
        code(check(
            &parts(Request::get("http://evil.example/x").header("host", "127.0.0.1")),
            &s
        )),
        "host_not_allowed"
    );
}

#[test]
fn connect_is_refused() {
    let s = server(&[], &[]);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("evil.example:443")
        .header("host", "127.0.0.1");
    assert_eq!(code(check(&parts(req), &s)), "method_not_allowed");
}

#[test]
fn cross_site_browser_requests_are_refused() {
    let s = server(&[], &["http://localhost:3000"]);
    let base = || Request::post("/x").header("host", "127.0.0.1:8080");
    // Another localhost port is "same-site", and refused all the same.
    assert_eq!(
        code(check(
            &parts(base().header("sec-fetch-site", "same-site")),
            &s
        )),
        "cross_site_request"
    );
    assert_eq!(
        code(check(
            &parts(base().header("sec-fetch-site", "same-origin")),
            &s
        )),
        "ok"
    );
    assert_eq!(
        code(check(
            &parts(base().header("origin", "https://evil.example")),
            &s
        )),
        "cross_site_request"
    );
    assert_eq!(
        code(check(&parts(base().header("origin", "null")), &s)),
        "cross_site_request"
    );
    assert_eq!(
        code(check(
            &parts(base().header("sec-fetch-site", "cross-site")),
            &s
        )),
        "cross_site_request"
    );
    assert_eq!(
        code(check(
            &parts(base().header("origin", "http://localhost:3000")),
            &s
        )),
        "ok"
    );
    assert_eq!(
        code(check(
            &parts(base().header("origin", "http://127.0.0.1:8080")),
            &s
        )),
        "ok"
    );
    assert_eq!(code(check(&parts(base()), &s)), "ok");
}

/// Who is calling, over route × credential: the one decision, made from
/// the head alone, before routing can speak.
#[tokio::test]
async fn callers_are_identified_once_over_route_and_credential() {
    use std::sync::Arc;
    let keyed = server(&["key-one-0123456789", "key-two-0123456789"], &[]);
    let open = server(&[], &[]);
    let locals = LocalTokens::new(std::time::Duration::from_secs(600));
    let key = TokenKey {
        tenant: Arc::from("acme"),
        account_id: Some(Arc::from("123")),
        scope: None,
    };
    let local = locals
        .issue(key.clone(), "acme")
        .expect("a local token")
        .token;
    let local_bearer = format!("Bearer {local}");
    let routes = [
        (Method::GET, "/hub/v1/x"),
        (Method::POST, "/Service.asmx"),
        (Method::POST, "/v2/token"),
        (Method::GET, "/_proxy/ready"),
    ];
    let credentials: [(&str, Option<(&str, &str)>); 7] = [
        ("none", None),
        ("key", Some(("x-proxy-key", "key-two-0123456789"))),
        (
            "proxy-auth key",
            Some(("proxy-authorization", "bearer key-one-0123456789")),
        ),
        ("wrong key", Some(("x-proxy-key", "wrong"))),
        (
            "basic key",
            Some(("proxy-authorization", "Basic key-one-0123456789")),
        ),
        ("local", Some(("authorization", local_bearer.as_str()))),
        (
            "stale local",
            Some(("authorization", "Bearer sfmcproxy_00")),
        ),
    ];
    let local_caller = Caller::Local(key.clone());
    for (method, path) in routes {
        for (name, header) in credentials {
            let mut request = Request::builder().method(method.clone()).uri(path);
            if let Some((header, value)) = header {
                request = request.header(header, value);
            }
            let parts = parts(request);
            let with_keys = identify(&parts, &keyed, &locals);
            let without = identify(&parts, &open, &locals);
            let expected_with_keys = match name {
                "key" | "proxy-auth key" => Ok(Caller::Key),
                "local" => Ok(local_caller.clone()),
                "stale local" => Err("local_token_invalid"),
                "none" if path == "/v2/token" => Ok(Caller::BrokerClient),
                "none" if path == "/Service.asmx" => Ok(Caller::Unproven),
                _ => Err("inbound_key_required"),
            };
            let expected_without = match name {
                "local" => Ok(local_caller.clone()),
                "stale local" => Err("local_token_invalid"),
                _ => Ok(Caller::Anonymous),
            };
            let shown = |r: Result<Caller, ProxyError>| r.map_err(|e| e.code());
            assert_eq!(
                shown(with_keys),
                expected_with_keys,
                "{method} {path} {name}, keys"
            );
            assert_eq!(
                shown(without),
                expected_without,
                "{method} {path} {name}, no keys"
            );
        }
    }
}

#[test]
fn an_unproven_soap_caller_is_proved_only_by_a_local_token_in_fueloauth() {
    let locals = LocalTokens::new(std::time::Duration::from_secs(600));
    let key = TokenKey {
        tenant: std::sync::Arc::from("acme"),
        account_id: None,
        scope: None,
    };
    let local = locals
        .issue(key.clone(), "acme")
        .expect("a local token")
        .token;
    let code = |r: Result<Caller, ProxyError>| r.map_err(|e| e.code());
    assert_eq!(
        code(Caller::Unproven.from_envelope(Some(&local), &locals)),
        Ok(Caller::Local(key.clone()))
    );
    for absent in [None, Some("a-real-sfmc-token")] {
        assert_eq!(
            code(Caller::Unproven.from_envelope(absent, &locals)),
            Err("inbound_key_required")
        );
        assert_eq!(
            code(Caller::Key.from_envelope(absent, &locals)),
            Ok(Caller::Key)
        );
    }
    assert_eq!(
        code(Caller::Key.from_envelope(Some("sfmcproxy_00"), &locals)),
        Err("local_token_invalid")
    );
}

#[test]
fn two_host_headers_a_bad_port_and_asterisk_targets_are_refused() {
    let s = server(&[], &[]);
    let two = Request::get("/x")
        .header("host", "127.0.0.1")
        .header("host", "evil.example");
    assert_eq!(code(check(&parts(two), &s)), "bad_request");
    for host in [
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:99999999999",
        "[::1]:70000",
    ] {
        let request = Request::get("/x").header("host", host);
        assert_eq!(code(check(&parts(request), &s)), "bad_request", "{host}");
    }
    assert_eq!(
        code(check(
            &parts(Request::get("/x").header("host", "127.0.0.1:65535")),
            &s
        )),
        "ok"
    );
    let star = Request::get("*").header("host", "127.0.0.1");
    assert_eq!(code(check(&parts(star), &s)), "bad_request");
    let options = Request::builder()
        .method(Method::OPTIONS)
        .uri("*")
        .header("host", "127.0.0.1");
    let options = parts(options);
    assert_eq!(code(check(&options, &s)), "ok");
    let answer = answer_locally(&options, &s).expect("answered by the proxy");
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers().contains_key(header::ALLOW));
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_here() {
    let s = server(&[], &["http://localhost:3000"]);
    let preflight = |origin: &str| {
        parts(
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/hub/v1/x")
                .header("host", "127.0.0.1:8080")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type, x-proxy-key",
                ),
        )
    };
    let allowed = preflight("http://localhost:3000");
    assert_eq!(code(check(&allowed, &s)), "ok");
    let answer = answer_locally(&allowed, &s).expect("a preflight is never forwarded");
    let h = answer.headers();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, x-proxy-key"
    );
    assert!(h["vary"].to_str().is_ok_and(|v| v.contains("Origin")));
    assert_eq!(
        code(check(&preflight("https://evil.example"), &s)),
        "cross_site_request"
    );
    // A plain OPTIONS (no preflight) goes on like any request.
    let plain = parts(
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/x")
            .header("host", "127.0.0.1"),
    );
    assert!(answer_locally(&plain, &s).is_none());
}
