use std::collections::HashMap;
use std::path::Path;

use super::*;

fn egress_with(
    proxy: Option<&str>,
    no_proxy: &[&str],
    env: &[(&str, &str)],
) -> Result<Egress, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = move |name: &str| env.get(name).cloned();
    let ex = Expander::new(&lookup, Path::new("/nonexistent"));
    let no_proxy: Vec<String> = no_proxy.iter().map(|s| (*s).to_owned()).collect();
    validate(proxy, None, Some(&no_proxy), &ex)
}

fn egress(proxy: Option<&str>, no_proxy: &[&str], env: &[(&str, &str)]) -> Egress {
    egress_with(proxy, no_proxy, env).expect("valid egress settings")
}

/// The proxy a target goes through, as `host:port (source)`, or "direct".
fn via(egress: &Egress, url: &str) -> String {
    match egress.route_for_url(url) {
        Route::Direct => "direct".into(),
        Route::Proxy(p) => format!("{}:{} ({})", p.host(), p.port(), p.source),
        Route::Unusable(u) => format!("unusable ({})", u.variable),
    }
}

const SFMC: &str = "https://mc123.rest.marketingcloudapis.com/";

#[test]
fn a_configured_proxy_takes_every_target_loopback_included() {
    let e = egress(Some("http://proxy.corp:3128"), &[], &[]);
    assert_eq!(via(&e, SFMC), "proxy.corp:3128 (upstream.proxy)");
    assert_eq!(
        via(&e, "http://127.0.0.1:9000/"),
        "proxy.corp:3128 (upstream.proxy)"
    );
    assert_eq!(
        via(&e, "http://localhost:9000/"),
        "proxy.corp:3128 (upstream.proxy)"
    );
}

#[test]
fn a_configured_proxy_ignores_the_environment() {
    let env = [
        ("https_proxy", "http://env.proxy:8080"),
        ("no_proxy", "marketingcloudapis.com"),
    ];
    let e = egress(Some("http://proxy.corp:3128"), &[], &env);
    assert_eq!(via(&e, SFMC), "proxy.corp:3128 (upstream.proxy)");
}

#[test]
fn credentials_are_percent_decoded_into_basic_auth_and_never_shown() {
    let e = egress(Some("http://us%40er:p%3Ass%2Fw@proxy.corp:3128"), &[], &[]);
    let Route::Proxy(proxy) = e.route_for_url(SFMC) else {
        panic!("through the proxy");
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("us@er:p:ss/w")
    );
    let header = proxy.authorization().expect("credentials");
    assert_eq!(header.to_str().expect("ascii"), expected);
    assert!(header.is_sensitive());
    for shown in [
        proxy.to_string(),
        format!("{proxy:?}"),
        format!("{e:?}"),
        e.route_for_url(SFMC).to_string(),
    ] {
        assert!(
            !shown.contains("p%3Ass") && !shown.contains("p:ss"),
            "{shown}"
        );
        assert!(!shown.contains(&expected[6..]), "{shown}");
    }
    assert_eq!(
        proxy.to_string(),
        "the egress proxy http://proxy.corp:3128 (from upstream.proxy)"
    );
    // reqwest gets the same proxy, credentials and port included.
    let url = proxy.client_url();
    assert_eq!(
        (url.username(), url.password(), url.port()),
        ("us%40er", Some("p%3Ass%2Fw"), Some(3128))
    );
}

#[test]
fn the_password_may_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("egress-pw-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("pw"), "s3cret\n").expect("write");
    let lookup = |_: &str| None;
    let ex = Expander::new(&lookup, &dir);
    let e = validate(Some("http://svc@proxy.corp:3128"), Some("pw"), None, &ex).expect("valid");
    let Route::Proxy(proxy) = e.route_for_url(SFMC) else {
        panic!("through the proxy");
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("svc:s3cret")
    );
    assert_eq!(proxy.authorization().expect("auth"), expected.as_str());
    assert_eq!(proxy.client_url().password(), Some("s3cret"));
    let both = validate(Some("http://svc:x@proxy.corp:3128"), Some("pw"), None, &ex);
    assert!(both.is_err_and(|e| e.to_string().contains("keep one")));
    let without_proxy = validate(None, Some("pw"), None, &ex);
    assert!(without_proxy.is_err_and(|e| e.to_string().contains("upstream.proxy_password_file")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ports_default_as_curl_does_and_https_proxies_are_tls() {
    let e = egress(Some("proxy.corp"), &[], &[]);
    assert_eq!(via(&e, SFMC), "proxy.corp:1080 (upstream.proxy)");
    let e = egress(Some("https://proxy.corp:8443"), &[], &[]);
    let Route::Proxy(proxy) = e.route_for_url(SFMC) else {
        panic!("through the proxy");
    };
    assert!(proxy.tls());
    assert_eq!(proxy.authorization(), None);
    let e = egress(Some("http://[::1]:3128"), &[], &[]);
    let Route::Proxy(proxy) = e.route_for_url(SFMC) else {
        panic!("through the proxy");
    };
    assert_eq!((proxy.host(), proxy.port()), ("::1", 3128));
}

#[test]
fn unusable_proxy_urls_are_refused_without_quoting_them() {
    for (url, says) in [
        ("socks5://user:hunter2@proxy.corp:1080", "SOCKS"),
        ("ftp://proxy.corp:21", "`ftp`"),
        ("http://proxy.corp:3128/path", "no path"),
        ("http://:hunter2@proxy.corp:3128", "no user"),
        ("http://hunter2@:3128", "proxy URL"),
    ] {
        let error = egress_with(Some(url), &[], &[]).expect_err(url).to_string();
        assert!(error.contains("upstream.proxy"), "{error}");
        assert!(error.contains(says), "{url}: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn the_environment_is_read_lower_case_first_and_all_proxy_fills_in() {
    let env = [
        ("HTTPS_PROXY", "http://upper:1"),
        ("https_proxy", "http://lower:2"),
    ];
    assert_eq!(via(&egress(None, &[], &env), SFMC), "lower:2 (https_proxy)");
    let env = [("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "")];
    assert_eq!(
        via(&egress(None, &[], &env), SFMC),
        "upper:1 (HTTPS_PROXY)",
        "an empty variable is an unset one"
    );
    let env = [
        ("ALL_PROXY", "http://all:3"),
        ("http_proxy", "http://plain:4"),
    ];
    let e = egress(None, &[], &env);
    assert_eq!(via(&e, SFMC), "all:3 (ALL_PROXY)");
    assert_eq!(via(&e, "http://plain.example/"), "plain:4 (http_proxy)");
    assert_eq!(via(&egress(None, &[], &[]), SFMC), "direct");
}

#[test]
fn loopback_targets_never_go_to_an_environment_proxy() {
    let env = [
        ("HTTPS_PROXY", "http://proxy.corp:3128"),
        ("HTTP_PROXY", "http://proxy.corp:3128"),
        ("ALL_PROXY", "http://proxy.corp:3128"),
    ];
    let e = egress(None, &[], &env);
    for url in [
        "http://127.0.0.1:8080/",
        "https://127.0.0.2:8443/",
        "http://localhost:9000/v2/token",
        "http://[::1]:9000/",
    ] {
        assert_eq!(via(&e, url), "direct", "{url}");
    }
    assert_eq!(via(&e, SFMC), "proxy.corp:3128 (HTTPS_PROXY)");
}

#[test]
fn no_proxy_matches_as_curl_does() {
    let e = egress(
        Some("http://proxy.corp:3128"),
        &[
            "marketingcloudapis.com",
            ".internal.example",
            "*.wild.example",
            "10.0.0.0/8",
            "192.168.1.7",
            "[fd00::1]",
        ],
        &[],
    );
    for (url, expected) in [
        (SFMC, "direct"),
        ("https://marketingcloudapis.com/", "direct"),
        ("https://MC1.Auth.MarketingCloudAPIs.com./", "direct"),
        ("https://notmarketingcloudapis.com/", "proxy"),
        ("https://a.internal.example/", "direct"),
        ("https://internal.example/", "direct"),
        ("https://x.wild.example/", "direct"),
        ("https://10.1.2.3/", "direct"),
        ("https://11.1.2.3/", "proxy"),
        ("https://192.168.1.7/", "direct"),
        ("https://192.168.1.8/", "proxy"),
        ("https://[fd00::1]/", "direct"),
    ] {
        let route = via(&e, url);
        let got = if route == "direct" { "direct" } else { "proxy" };
        assert_eq!(got, expected, "{url}: {route}");
    }
    let everything = egress(Some("http://proxy.corp:3128"), &["*"], &[]);
    assert_eq!(via(&everything, SFMC), "direct");
    let empty = egress_with(Some("http://proxy.corp:3128"), &[" "], &[]);
    assert!(empty.is_err_and(|e| e.to_string().contains("upstream.no_proxy[0]")));
}

#[test]
fn the_environment_no_proxy_joins_the_configured_list() {
    let env = [
        ("https_proxy", "http://proxy.corp:3128"),
        ("NO_PROXY", "a.example, b.example"),
    ];
    let e = egress(None, &["c.example"], &env);
    for host in ["a.example", "b.example", "c.example"] {
        assert_eq!(via(&e, &format!("https://{host}/")), "direct", "{host}");
    }
    assert_eq!(via(&e, SFMC), "proxy.corp:3128 (https_proxy)");
}

#[test]
fn an_unusable_environment_proxy_fails_only_the_calls_that_need_it() {
    let env = [("HTTPS_PROXY", "socks5://proxy.corp:1080")];
    let e = egress(None, &[], &env);
    assert_eq!(via(&e, "http://127.0.0.1:8080/"), "direct");
    let Route::Unusable(unusable) = e.route_for_url(SFMC) else {
        panic!("an unusable proxy, not direct");
    };
    let text = unusable.to_string();
    assert!(
        text.contains("HTTPS_PROXY") && text.contains("SOCKS"),
        "{text}"
    );
}
