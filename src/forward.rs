//! Forwarding: the one pooled upstream client (hyper-util over rustls, HTTP/1.1
//! and HTTP/2 by ALPN), the rewrite of a client request into an SFMC request,
//! and the preparation of the request body for a possible replay.
//!
//! Bodies stream: only a body small enough to replay (`replay_body_limit`,
//! announced by `Content-Length`) is held in memory; everything else flows
//! through frame by frame.

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::config::UpstreamSettings;
use crate::error::{ProxyError, error_chain};
use crate::token::{InstanceBase, Token};

/// Idle upstream connections kept per instance host: enough for a busy ETL job's
/// concurrency without reconnecting (TLS handshakes are the expensive part).
const POOL_MAX_IDLE_PER_HOST: usize = 256;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings, tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        // Plain http is reachable only for loopback instances: `InstanceBase`
        // refuses http for every other host before a token is attached.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Self {
            client,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
        }
    }

    /// Sends the request; the response body is not awaited (it streams).
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            // The connector's own words are "deadline has elapsed": name the setting instead.
            Ok(Err(error)) if error.is_connect() && is_timed_out(&error) => {
                Err(ProxyError::UpstreamUnavailable(format!(
                    "connecting timed out after upstream.connect_timeout ({:?}); check the network path to SFMC (firewall, proxy) or raise the timeout",
                    self.connect_timeout
                )))
            }
            Ok(Err(error)) => Err(ProxyError::UpstreamUnavailable(error_chain(&error))),
            Err(_elapsed) => Err(ProxyError::UpstreamTimeout(self.response_timeout)),
        }
    }
}

/// Whether a timed-out I/O error is anywhere in the chain of causes.
fn is_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// A request body ready to send: held (and so replayable after a 401) or streamed.
pub enum OutboundBody {
    Replayable(Bytes),
    Streaming(Incoming),
}

impl OutboundBody {
    /// Holds the body only when it is known to fit in `limit` bytes.
    pub async fn prepare(body: Incoming, limit: usize) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(Self::Replayable(Bytes::new()));
        }
        let fits = body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= limit as u64);
        if !fits {
            return Ok(Self::Streaming(body));
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(Self::Replayable(collected.to_bytes())),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(ProxyError::BodyTooLarge { limit })
            }
            Err(error) => Err(ProxyError::BadRequest(format!(
                "could not read the request body: {}",
                error_chain(&*error)
            ))),
        }
    }

    /// The held bytes, if this body can be sent again.
    pub fn replay_copy(&self) -> Option<Bytes> {
        match self {
            Self::Replayable(bytes) => Some(bytes.clone()),
            Self::Streaming(_) => None,
        }
    }

    pub fn into_body(self) -> ProxyBody {
        match self {
            Self::Replayable(bytes) => ProxyBody::full(bytes),
            Self::Streaming(body) => ProxyBody::Stream(body),
        }
    }
}

/// The upstream request: the instance URL plus the client's path and query byte
/// for byte, the client's headers (already stripped of hop-by-hop, control and
/// credential headers) and, for REST, the token's `Authorization` (SOAP carries
/// it in the envelope instead).
pub fn build_request(
    method: Method,
    instance: &InstanceBase,
    path_and_query: &PathAndQuery,
    mut headers: HeaderMap,
    bearer: Option<&Token>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, ProxyError> {
    let uri = instance
        .uri_for(path_and_query)
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
    if let Some(token) = bearer {
        headers.insert(header::AUTHORIZATION, token.bearer().clone());
    }
    if let Some(host) = instance.http1_host() {
        headers.insert(header::HOST, host.clone());
    }
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}
