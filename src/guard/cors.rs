//! CORS for `server.allowed_origins`: the preflight and `OPTIONS *`, answered
//! here and never forwarded, and the grant on responses to an allowed origin.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::config::ServerSettings;

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
