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

/// Removes hop-by-hop headers, and the headers `Connection` names, in place.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Collect the names listed in `Connection` first: they are removed with it.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares inbound request headers for SFMC: hop-by-hop headers, the client's
/// own credentials, the proxy's control headers, `Host` (the upstream client
/// sets the instance's) and `Expect` (the proxy's server side already answered
/// `100-continue`; the upstream client does not wait for one) are removed.
pub fn strip_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::HOST,
        header::EXPECT,
        X_SFMC_TENANT,
        X_SFMC_ACCOUNT_ID,
        X_SFMC_SCOPE,
        X_PROXY_KEY,
    ] {
        headers.remove(name);
    }
}

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
}
