//! Inbound checks that keep a credential-holding proxy from being used by the
//! wrong caller, and the one decision of who is calling:
//! - the `Host` allowlist (defeats DNS rebinding), one `Host` only, a valid port;
//! - refusal of browser cross-site requests (a web page must not write to SFMC
//!   through the user's proxy), CORS for the origins that are allowed;
//! - refusal of forward-proxy use (`CONNECT`, absolute-form targets for other
//!   hosts) and of asterisk-form targets;
//! - [`identify`]: the [`Caller`] — an inbound key, a broker-issued local
//!   token, the broker's own client, or anonymous where no keys are set —
//!   decided before routing, whose errors name tenants, can answer.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::body::ProxyBody;
use crate::broker::{LOCAL_TOKEN_PREFIX, LocalTokens, Presented};
use crate::config::ServerSettings;
use crate::error::ProxyError;
use crate::headers::X_PROXY_KEY;
use crate::route;
use crate::token::TokenKey;

/// Who is calling, decided once per request ([`identify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presented one of `server.inbound_keys`.
    Key,
    /// Presented a live local token from the broker: the request is served as
    /// the tenant, business unit and scope it is bound to.
    Local(TokenKey),
    /// A token request to the broker, which authenticates it by the local
    /// secret in its body (read only up to the broker's small limit).
    BrokerClient,
    /// No inbound keys are configured: whoever passed the Host and Origin
    /// checks may call (a loopback listener, or a private network by choice).
    Anonymous,
    /// Not known yet: a SOAP call without a key, whose envelope's `fueloauth`
    /// may hold a local token. Only a bounded prefix of the envelope is read
    /// ([`Caller::from_envelope`]) before the call is served or refused.
    Unproven,
}

impl Caller {
    /// The key a local token binds the request to.
    pub fn bound(&self) -> Option<&TokenKey> {
        match self {
            Self::Local(key) => Some(key),
            _ => None,
        }
    }

    /// Whether answers may name tenants and business units: the caller proved
    /// who it is, or nobody has to.
    pub fn trusted(&self) -> bool {
        matches!(self, Self::Key | Self::Local(_) | Self::Anonymous)
    }

    /// After the start of a SOAP envelope is read: a local token in its
    /// `fueloauth` binds the call (and proves an unproven caller); without
    /// one, an unproven caller is refused.
    pub fn from_envelope(
        self,
        fueloauth: Option<&str>,
        locals: &LocalTokens,
    ) -> Result<Self, ProxyError> {
        match fueloauth.map(|token| locals.resolve(token)) {
            Some(Presented::Bound(key)) => Ok(Self::Local(key)),
            Some(Presented::Invalid) => Err(ProxyError::LocalTokenInvalid),
            Some(Presented::Foreign) | None if self == Self::Unproven => {
                Err(ProxyError::InboundKeyRequired)
            }
            Some(Presented::Foreign) | None => Ok(self),
        }
    }
}

/// Decides who is calling from the request head alone.
///
/// A local token (`Authorization: Bearer sfmcproxy_…`) counts first, with or
/// without keys; a stale one is refused so the tool re-authenticates. Then the
/// inbound key: where keys are set, a request without a valid one is refused
/// here — before a byte of its body is read — except a broker token request
/// and a SOAP call, whose credentials may be inside the body.
pub fn identify(
    parts: &Parts,
    server: &ServerSettings,
    locals: &LocalTokens,
) -> Result<Caller, ProxyError> {
    if let Some(token) = bearer(&parts.headers).filter(|t| t.starts_with(LOCAL_TOKEN_PREFIX)) {
        return match locals.resolve(token) {
            Presented::Bound(key) => Ok(Caller::Local(key)),
            Presented::Invalid | Presented::Foreign => Err(ProxyError::LocalTokenInvalid),
        };
    }
    if server.inbound_keys.is_empty() {
        return Ok(Caller::Anonymous);
    }
    match presented_key(&parts.headers) {
        Some(key) if key_matches(key, server) => Ok(Caller::Key),
        // A wrong key is refused even where the body might hold a credential.
        Some(_) => Err(ProxyError::InboundKeyRequired),
        None if route::is_token_request(&parts.method, parts.uri.path()) => {
            Ok(Caller::BrokerClient)
        }
        None if route::soap_shaped(&parts.method, parts.uri.path()) => Ok(Caller::Unproven),
        None => Err(ProxyError::InboundKeyRequired),
    }
}

/// The token in `Authorization: Bearer …` (scheme in any case), if any: the
/// one Bearer parser for local tokens and inbound keys alike.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_in(headers.get(header::AUTHORIZATION)?)
}

fn bearer_in(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The inbound key as sent: `Proxy-Authorization: Bearer KEY` or `X-Proxy-Key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    match headers.get(header::PROXY_AUTHORIZATION) {
        Some(value) => Some(bearer_in(value).unwrap_or("")),
        None => headers
            .get(&X_PROXY_KEY)
            .map(|v| v.to_str().map_or("", str::trim)),
    }
}

/// Compares against every key, in constant time per key, so neither timing
/// nor order tells which key (or how much of one) matched.
fn key_matches(presented: &str, server: &ServerSettings) -> bool {
    let matched = server
        .inbound_keys
        .iter()
        .fold(subtle::Choice::from(0), |acc, key| {
            acc | key.expose().as_bytes().ct_eq(presented.as_bytes())
        });
    bool::from(matched)
}

pub fn check(parts: &Parts, server: &ServerSettings) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(
            "CONNECT is refused: sfmc-proxy is a reverse proxy for SFMC, not a forward proxy"
                .into(),
        ));
    }
    // `OPTIONS *` asks about the server, `GET *` is nonsense: neither names
    // an SFMC path, and neither goes to SFMC ([`answer_locally`] answers the first).
    if parts.uri == "*" && parts.method != Method::OPTIONS {
        return Err(ProxyError::BadRequest(
            "an asterisk-form request target (`*`) is only meaningful for OPTIONS".into(),
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
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts
        .next()
        .ok_or_else(|| ProxyError::HostNotAllowed("(no Host header)".into()))?;
    // RFC 9112 §3.2: a request with more than one Host is answered 400 — two
    // parties in a chain might each read a different one.
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    host.to_str().map_err(|_| {
        ProxyError::HostNotAllowed(String::from_utf8_lossy(host.as_bytes()).into_owned())
    })
}

/// The host part of an authority (a port dropped, an IPv6 literal kept in
/// its brackets, as `Authority::host` gives it), or `None` when the port is
/// not a number in 1–65535 or anything follows the `]` but one. Userinfo or an empty name
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
    let port_ok = port.is_none_or(|p| {
        p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|port| port != 0)
    });
    port_ok.then_some(host)
}

fn check_host(parts: &Parts, authority: &str, server: &ServerSettings) -> Result<(), ProxyError> {
    let Some(host) = host_of(authority) else {
        return Err(ProxyError::BadRequest(format!(
            "the request's Host `{}` is not a host name with an optional port (1-65535)",
            authority.escape_default()
        )));
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

/// The methods a browser on an allowed origin may use (CORS preflight answer).
const CORS_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE_SECS: &str = "600";

/// Requests the proxy answers itself once the Host and Origin checks passed,
/// before anyone is identified (they carry no credentials by design): a CORS
/// preflight — a browser never sends credentials on one, and SFMC must never
/// see one with a real token — and `OPTIONS *`.
pub fn answer_locally(parts: &Parts, server: &ServerSettings) -> Option<Response<ProxyBody>> {
    if parts.method != Method::OPTIONS {
        return None;
    }
    if parts.uri == "*" {
        let mut response = empty(StatusCode::OK);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(CORS_METHODS));
        return Some(response);
    }
    let headers = &parts.headers;
    if !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let mut response = empty(StatusCode::NO_CONTENT);
    let out = response.headers_mut();
    out.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    // Same-origin pages need no CORS; only an allowed origin gets the grant.
    if !origin_allowed(origin, &server.allowed_origins) {
        return Some(response);
    }
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(CORS_MAX_AGE_SECS),
    );
    Some(response)
}

/// The request's `Origin` when it is one of `server.allowed_origins` (a clone
/// only then, so the common request without CORS pays nothing).
pub fn allowed_origin(headers: &HeaderMap, server: &ServerSettings) -> Option<HeaderValue> {
    if server.allowed_origins.is_empty() {
        return None;
    }
    headers
        .get(header::ORIGIN)
        .filter(|origin| origin_allowed(origin, &server.allowed_origins))
        .cloned()
}

/// Marks a response for an allowed origin as readable by its page.
pub fn grant_origin(origin: HeaderValue, response: &mut Response<ProxyBody>) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(crate::error::PROXY_ERROR_HEADER),
    );
}

fn origin_allowed(origin: &HeaderValue, allowed: &[String]) -> bool {
    let origin = origin.as_bytes();
    let origin = origin.strip_suffix(b"/").unwrap_or(origin);
    allowed
        .iter()
        .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = status;
    response
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
            idle_timeout: std::time::Duration::from_secs(1),
            max_concurrent_streams: 100,
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
}
