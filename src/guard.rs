//! Inbound checks that keep a credential-holding proxy from being used by the
//! wrong caller: the `Host` allowlist (defeats DNS rebinding), refusal of
//! browser cross-site requests (a web page must not write to SFMC through the
//! user's proxy), the inbound key where one is configured, and refusal of
//! forward-proxy use (`CONNECT`, absolute-form targets for other hosts).
//! The inbound-key check is its own function: the pipeline skips it for
//! requests the token broker authenticates.

use http::request::Parts;
use http::{HeaderMap, Method, header};
use subtle::ConstantTimeEq;

use crate::config::ServerSettings;
use crate::error::ProxyError;
use crate::headers::X_PROXY_KEY;

pub fn check(parts: &Parts, server: &ServerSettings) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(
            "CONNECT is refused: sfmc-proxy is a reverse proxy for SFMC, not a forward proxy"
                .into(),
        ));
    }
    let authority = request_authority(parts)?;
    check_host(parts, authority, server)?;
    check_origin(&parts.headers, authority, &server.allowed_origins)
}

/// The authority the client addressed: the request target's (HTTP/2
/// `:authority`, HTTP/1 absolute-form) or else the `Host` header. Borrowed,
/// not parsed into an `Authority` (which copies it): only its host part is
/// compared, against a list of plain names.
fn request_authority(parts: &Parts) -> Result<&str, ProxyError> {
    if let Some(authority) = parts.uri.authority() {
        return Ok(authority.as_str());
    }
    let host = parts
        .headers
        .get(header::HOST)
        .ok_or_else(|| ProxyError::HostNotAllowed("(no Host header)".into()))?;
    host.to_str().map_err(|_| {
        ProxyError::HostNotAllowed(String::from_utf8_lossy(host.as_bytes()).into_owned())
    })
}

/// The host part of an authority (a port dropped, an IPv6 literal kept in
/// its brackets, as `Authority::host` gives it), or `None` when the port is
/// not digits or anything follows the `]` but one. Userinfo or an empty name
/// stay in, and so match no allowed host.
fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        let port = if rest.is_empty() {
            None
        } else {
            Some(rest.strip_prefix(':')?)
        };
        (&authority[..=end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok.then_some(host)
}

fn check_host(parts: &Parts, authority: &str, server: &ServerSettings) -> Result<(), ProxyError> {
    let Some(host) = host_of(authority) else {
        return Err(ProxyError::HostNotAllowed(authority.to_ascii_lowercase()));
    };
    match &server.allowed_hosts {
        // The allowlist is lowercase: compare without a lowercased copy per request.
        Some(allowed) if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) => {
            Err(ProxyError::HostNotAllowed(host.to_ascii_lowercase()))
        }
        Some(_) => Ok(()),
        // Host check off (wildcard listen, no allowlist): still never act as a
        // forward proxy for an absolute-form HTTP/1 target.
        None if parts.version < http::Version::HTTP_2 && parts.uri.scheme().is_some() => {
            Err(ProxyError::BadRequest(
                "absolute-form request targets are refused: sfmc-proxy is not a forward proxy"
                    .into(),
            ))
        }
        None => Ok(()),
    }
}

fn check_origin(
    headers: &HeaderMap,
    authority: &str,
    allowed: &[String],
) -> Result<(), ProxyError> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    // `same-site` too: a page on another localhost port is "same-site" with
    // the proxy, and must not reach SFMC through it either.
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"cross-site") || v.eq_ignore_ascii_case(b"same-site")
    });
    let Some(origin) = origin else {
        return if cross_site {
            Err(ProxyError::CrossSiteRequest(
                "(none; Sec-Fetch-Site: cross-site)".into(),
            ))
        } else {
            Ok(())
        };
    };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a == origin) {
        return Ok(());
    }
    // Same-origin: a page served by the proxy itself (status page) calling it.
    let same_origin = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(authority));
    if same_origin && !cross_site {
        Ok(())
    } else {
        Err(ProxyError::CrossSiteRequest(origin.to_owned()))
    }
}

/// The inbound key, where keys are configured. Separate from [`check`]: a
/// request authenticated otherwise (a broker-issued local token, or the
/// broker's own client secret) does not need one.
pub fn check_inbound_key(headers: &HeaderMap, server: &ServerSettings) -> Result<(), ProxyError> {
    let keys = &server.inbound_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get(&X_PROXY_KEY).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .ok_or(ProxyError::InboundKeyRequired)?;
    // Compare against every key, in constant time per key, so neither timing
    // nor order tells which key (or how much of one) matched.
    let matched = keys.iter().fold(subtle::Choice::from(0), |acc, key| {
        acc | key.expose().as_bytes().ct_eq(presented.as_bytes())
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(ProxyError::InboundKeyRequired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

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
            listen: "127.0.0.1:8080".parse().expect("addr"),
            public_url: None,
            inbound_keys: keys.iter().map(|k| Secret::new(*k)).collect(),
            allow_unauthenticated_remote: false,
            allowed_hosts: Some(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]),
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            max_connections: 10,
            header_read_timeout: std::time::Duration::from_secs(1),
            worker_threads: None,
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

    #[test]
    fn inbound_key_is_required_when_configured() {
        let s = server(&["key-one-0123456789", "key-two-0123456789"], &[]);
        let base = || Request::get("/x").header("host", "127.0.0.1");
        let check = |p: &Parts, s: &ServerSettings| check_inbound_key(&p.headers, s);
        assert_eq!(code(check(&parts(base()), &s)), "inbound_key_required");
        assert_eq!(
            code(check(&parts(base().header("x-proxy-key", "wrong")), &s)),
            "inbound_key_required"
        );
        assert_eq!(
            code(check(
                &parts(base().header("x-proxy-key", "key-two-0123456789")),
                &s
            )),
            "ok"
        );
        assert_eq!(
            code(check(
                &parts(base().header("proxy-authorization", "Bearer key-one-0123456789")),
                &s
            )),
            "ok"
        );
        assert_eq!(
            code(check(
                &parts(base().header("proxy-authorization", "Basic key-one-0123456789")),
                &s
            )),
            "inbound_key_required"
        );
    }
}
