//! The proxy's own paths under `/_proxy/`, never forwarded. For now liveness
//! (`/_proxy/health`); readiness, metrics and status come with their own work.

use http::request::Parts;
use http::{HeaderValue, Response, header};

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub const HEALTH_PATH: &str = "/_proxy/health";

/// Liveness: the process is up and serving. Says nothing about SFMC.
pub fn health() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(&b"{\"status\":\"ok\"}"[..]));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn handle(parts: &Parts) -> Result<Response<ProxyBody>, ProxyError> {
    Err(ProxyError::NotFound(parts.uri.path().to_owned()))
}
