//! Inbound checks that keep a credential-holding proxy from being used by the
//! wrong caller, and the one decision of who is calling:
//! - the `Host` allowlist (defeats DNS rebinding), one `Host` only, a valid port;
//! - refusal of browser cross-site requests (a web page must not write to SFMC
//!   through the user's proxy), CORS for the origins that are allowed (`cors`);
//! - refusal of forward-proxy use (`CONNECT`, absolute-form targets for other
//!   hosts) and of asterisk-form targets;
//! - [`identify`]: the [`Caller`] — an inbound key, a broker-issued local
//!   token, the broker's own client, or anonymous where no keys are set —
//!   decided before routing, whose errors name tenants, can answer (`caller`).
//!
//! The order is the pipeline's: [`check`] (Host, Origin, forward-proxy use),
//! then [`answer_locally`] (preflights), then [`identify`].

mod caller;
mod cors;

use http::request::Parts;
use http::{HeaderMap, Method, header};

pub use caller::{Caller, bearer, identify};
pub use cors::{allowed_origin, answer_locally, grant_origin};

use crate::config::ServerSettings;
use crate::error::ProxyError;

/// The Host, Origin and request-target checks every request passes first.
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
    // A login's redirect comes from SFMC's site by design (a cross-site
    // navigation); its one-time `state` is what proves it, and it can
    // only finish a login the proxy began.
    if parts.method == Method::GET && parts.uri.path() == crate::route::CALLBACK_PATH {
        return Ok(());
    }
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

#[cfg(test)]
mod tests;
