//! Header hygiene at the proxy boundary (RFC 9110 §7.6.1): hop-by-hop headers,
//! including every header named in `Connection`, are never forwarded in either
//! direction; inbound credentials and the proxy's own `X-SFMC-*` control headers
//! never reach SFMC.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Selects the tenant by name.
pub const X_SFMC_TENANT: HeaderName = HeaderName::from_static("x-sfmc-tenant");
/// Selects the business unit (MID).
pub const X_SFMC_ACCOUNT_ID: HeaderName = HeaderName::from_static("x-sfmc-account-id");
/// Selects the token scope.
pub const X_SFMC_SCOPE: HeaderName = HeaderName::from_static("x-sfmc-scope");
/// Inbound key, for clients that cannot set `Proxy-Authorization`.
pub const X_PROXY_KEY: HeaderName = HeaderName::from_static("x-proxy-key");

/// Hop-by-hop headers named by RFC 9110 §7.6.1, plus the legacy ones proxies
/// still see in the wild (`Keep-Alive`, `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Request headers that never reach SFMC besides the hop-by-hop ones: the
/// client's own credentials, the proxy's control headers, `Host` (the upstream
/// client sets the instance's) and `Expect` (the proxy's server side already
/// answered `100-continue`; the upstream client does not wait for one), and
/// `Cookie`: SFMC's APIs take none, and a browser on an allowed origin would
/// otherwise send its session cookies for the proxy's host along.
const REQUEST_ONLY: [HeaderName; 9] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
    header::EXPECT,
    X_SFMC_TENANT,
    X_SFMC_ACCOUNT_ID,
    X_SFMC_SCOPE,
    X_PROXY_KEY,
];

// Compared as `HeaderName`s: a standard name is one small number against
// another, where its text is a string comparison.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

fn is_request_only(name: &HeaderName) -> bool {
    REQUEST_ONLY.contains(name)
}

/// Removes hop-by-hop headers, and the headers `Connection` names, in place.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_hop_by_hop);
}

/// Prepares inbound request headers for SFMC: hop-by-hop headers and the
/// request-only ones (credentials, control headers, `Host`, `Expect`) removed.
pub fn strip_request_headers(headers: &mut HeaderMap) {
    strip(headers, |name| is_hop_by_hop(name) || is_request_only(name));
}

/// Removes the headers `Connection` names, then every header `doomed`
/// names (`Connection` itself among them). One look at each name first:
/// most heads carry none of these but `Connection`, and many not even that.
fn strip(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let (mut any, mut connection) = (false, false);
    for name in headers.keys() {
        if doomed(name) {
            any = true;
            connection |= name == header::CONNECTION;
        }
    }
    if connection {
        remove_connection_named(headers);
    }
    if any {
        remove_where(headers, doomed);
    }
}

/// Removes every header whose name matches `doomed`.
///
/// This runs twice per proxied request, so it scans the names instead of
/// removing each candidate by name: a scan is a few comparisons per header
/// and allocates nothing, where a removal hashes the name, and most requests
/// carry none of the headers to remove. Each pass removes one name with all
/// its values, so there are at most as many passes as matching names.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = headers.keys().find(|name| doomed(name)).cloned() {
        headers.remove(&name);
    }
}

/// Removes the headers listed in `Connection` (it goes with the hop-by-hop ones).
fn remove_connection_named(headers: &mut HeaderMap) {
    // Bytes, not `str` and its `split` (some 400 instructions on every
    // response with `Connection: keep-alive`): a token that is not text
    // names no header anyway.
    let tokens = || {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
    };
    // Usually (`keep-alive`, `close`, `upgrade`) the listed names are either
    // hop-by-hop anyway or not present: then skip the allocation below.
    let names_others = tokens().any(|token| {
        !HOP_BY_HOP
            .iter()
            .any(|hop| hop.as_str().as_bytes().eq_ignore_ascii_case(token))
            && std::str::from_utf8(token).is_ok_and(|token| headers.contains_key(token))
    });
    if !names_others {
        return;
    }
    let named: Vec<HeaderName> = tokens()
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Whether any of the proxy's own `X-SFMC-*` selectors was sent: one look at
/// each name, where looking each selector up hashes its name (most requests
/// carry none).
pub fn has_selectors(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with(SELECTOR_PREFIX))
}

/// What every `X-SFMC-*` selector's name starts with.
const SELECTOR_PREFIX: &str = "x-sfmc-";

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-second"),
            ("x-custom-hop", "1"),
            ("x-second", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("content-type", "application/json"),
            ("retry-after", "30"),
            ("content-encoding", "gzip"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-encoding", "content-type", "retry-after"]);
    }

    #[test]
    fn request_loses_credentials_and_control_headers_but_keeps_the_rest() {
        let mut headers = map(&[
            ("authorization", "Bearer client-placeholder"),
            ("proxy-authorization", "Bearer key"),
            ("x-proxy-key", "key"),
            ("host", "127.0.0.1:8080"),
            ("x-sfmc-tenant", "acme"),
            ("x-sfmc-account-id", "123"),
            ("x-sfmc-scope", "email_read"),
            ("accept", "application/json"),
            ("x-request-id", "abc"),
        ]);
        strip_request_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-request-id"]);
    }

    #[test]
    fn malformed_connection_tokens_are_ignored_not_fatal() {
        let mut headers = map(&[
            ("connection", "bad header name, x-ok"),
            ("x-ok", "1"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-ok").is_none());
        assert!(headers.get("accept").is_some());
    }

    #[test]
    fn a_name_beside_a_token_that_is_not_text_is_still_removed() {
        let mut headers = map(&[("x-named", "1"), ("accept", "*/*")]);
        let value = HeaderValue::from_bytes(b"x-named, caf\xe9").expect("obs-text is allowed");
        headers.insert(header::CONNECTION, value);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn selectors_are_seen_by_their_prefix() {
        assert!(!has_selectors(&map(&[("accept", "*/*"), ("x-sfmc", "1")])));
        assert!(has_selectors(&map(&[
            ("accept", "*/*"),
            ("X-SFMC-Scope", "a")
        ])));
        assert!(has_selectors(&map(&[("x-sfmc-anything", "a")])));
        // A selector named otherwise would be skipped by routing.
        for selector in [X_SFMC_TENANT, X_SFMC_ACCOUNT_ID, X_SFMC_SCOPE] {
            let name = selector.as_str();
            assert!(name.starts_with(SELECTOR_PREFIX), "{name}");
        }
    }

    #[test]
    fn usual_connection_values_remove_only_hop_by_hop_headers() {
        let mut headers = map(&[
            ("connection", "Keep-Alive"),
            ("keep-alive", "timeout=5"),
            ("close", "not a hop-by-hop header"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "close"]);
    }

    #[test]
    fn every_value_of_a_removed_header_goes() {
        let mut headers = map(&[
            ("connection", "X-Twice"),
            ("x-twice", "1"),
            ("x-twice", "2"),
            ("x-sfmc-scope", "a"),
            ("x-sfmc-scope", "b"),
            ("accept", "*/*"),
        ]);
        strip_request_headers(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
    }

    /// The strip functions scan instead of removing by name (speed); this is
    /// the plain removal-by-name they must agree with.
    fn reference(headers: &mut HeaderMap, request: bool) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        let extra: &[HeaderName] = if request { &REQUEST_ONLY } else { &[] };
        for name in HOP_BY_HOP.iter().chain(extra) {
            headers.remove(name);
        }
    }

    proptest::proptest! {
        #[test]
        fn scanning_agrees_with_removal_by_name(
            pairs in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "connection", "keep-alive", "te", "upgrade", "transfer-encoding",
                        "host", "authorization", "x-sfmc-tenant", "x-proxy-key", "expect",
                        "accept", "x-custom", "x-other", "content-type", "close",
                    ]),
                    proptest::sample::select(vec![
                        &b"x-custom"[..], b"X-Other, close", b"keep-alive", b"Upgrade", b"",
                        b" , ", b"content-type,x-custom", b"bad header name", b"1", b"close",
                        // obs-text, beside a name and alone
                        b"x-custom, caf\xe9", b"\xff\xfe", b"\tx-other\t,te",
                    ]),
                ),
                0..12,
            ),
            request in proptest::bool::ANY,
        ) {
            let mut fast = HeaderMap::new();
            for (name, value) in &pairs {
                let value = HeaderValue::from_bytes(value).expect("a valid header value");
                fast.append(*name, value);
            }
            let mut slow = fast.clone();
            if request {
                strip_request_headers(&mut fast);
            } else {
                strip_hop_by_hop(&mut fast);
            }
            reference(&mut slow, request);
            proptest::prop_assert_eq!(fast, slow);
        }
    }
}
