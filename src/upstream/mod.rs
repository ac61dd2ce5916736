//! The upstream client: sends a rewritten request to an SFMC instance over a
//! pooled connection (HTTP/1.1, or HTTP/2 where TLS negotiates it), within
//! `upstream.response_timeout`, and returns the response with its body still
//! streaming.
//!
//! HTTP/1.1 goes through the proxy's own client (`h1`), HTTP/2 through
//! hyper's.
//!
//! A request goes out on an idle connection when there is one. A pooled
//! connection the server has closed is passed over before anything is
//! written (HTTP/1.1: its socket's readiness at checkout, a non-blocking
//! read if it became readable; HTTP/2: hyper hands the request back), and the request goes out on a new connection — safe
//! for any method, since nothing reached SFMC. If it was written and the
//! connection closed with no answer, only a request the caller marks as
//! repeatable goes out once more ([`Upstream::send_or_resend`]).

mod connect;
mod h1;
mod instance;
mod pool;
mod tunnel;

use std::time::Duration;

use http::{Request, Response, Uri, header};

use crate::config::{EgressProxy, Route, UpstreamSettings};
use crate::error::{ProxyError, error_chain};
use crate::idle::{IdleTimeout, Sender};
pub use connect::ConnectError;
use connect::{Connector, Handle};
use pool::{AfterGate, Checkout, Pool, Received};

pub(crate) use h1::read_response;
pub use instance::{InstanceBase, InstanceRefused};
pub use pool::UpstreamBody;
pub use tunnel::probe as probe_egress;

/// What the pool sends as a request body: any body hyper can write from a
/// spawned connection task (the proxy's own `ProxyBody` in practice; this
/// module does not name it, so it depends on no body type of the crate).
pub trait RequestBody:
    http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + 'static
{
}

impl<T> RequestBody for T where
    T: http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

pub struct Upstream<B> {
    pool: Pool<B>,
    connector: Connector,
    response_timeout: Duration,
    /// A response body that sends nothing this long is cut.
    idle_timeout: Duration,
}

impl<B: RequestBody> Upstream<B> {
    /// `open` counts the connections to SFMC open (the metrics' gauge).
    pub fn new(
        settings: &UpstreamSettings,
        tls: rustls::ClientConfig,
        open: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        Self {
            pool: Pool::with_sweeper(),
            connector: Connector::new(tls, settings.connect_timeout, settings.egress.clone())
                .counting(open),
            response_timeout: settings.response_timeout,
            idle_timeout: settings.idle_timeout,
        }
    }

    /// Sends `request` (origin-form URI, no `Host`) to `instance`; the
    /// response body is not awaited (it streams).
    pub async fn send(
        &self,
        instance: &InstanceBase,
        request: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, ProxyError> {
        self.send_or_resend(instance, request, None::<fn() -> _>)
            .await
    }

    /// Like [`Upstream::send`], and when a pooled connection closes under
    /// the request after it was written but before any answer (SFMC ended
    /// the kept-alive connection at that moment), sends `resend()` once more
    /// on a new connection. Only for requests that may be repeated: an
    /// idempotent method and a body held in memory, as nginx's
    /// `proxy_next_upstream` does.
    pub async fn send_or_resend(
        &self,
        instance: &InstanceBase,
        request: Request<B>,
        resend: Option<impl FnOnce() -> Result<Request<B>, ProxyError>>,
    ) -> Result<Response<UpstreamBody<B>>, ProxyError> {
        let attempts = async {
            match (self.exchange(instance, request, false).await, resend) {
                (Ok(response), _) => Ok(response),
                (Err(failed), Some(resend)) if failed.stale_connection => {
                    tracing::debug!(error = %failed.error, "pooled upstream connection closed under the request; sending it again on a new one");
                    let again = resend()?;
                    self.exchange(instance, again, true)
                        .await
                        .map_err(|failed| failed.error)
                }
                (Err(failed), _) => Err(failed.error),
            }
        };
        match tokio::time::timeout(self.response_timeout, attempts).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ProxyError::UpstreamTimeout(self.response_timeout)),
        }
    }

    /// SFMC's response body, cut if SFMC stops sending mid-way.
    fn timed(&self, body: Received<B>) -> IdleTimeout<Received<B>> {
        IdleTimeout::new(body, self.idle_timeout, Sender::Sfmc)
    }

    /// One request over a pooled or (`fresh`, or none idle) new connection.
    async fn exchange(
        &self,
        instance: &InstanceBase,
        mut request: Request<B>,
        fresh: bool,
    ) -> Result<Response<UpstreamBody<B>>, Failed> {
        loop {
            let (slot, checkout) = match fresh {
                true => (self.pool.slot(instance), Checkout::Empty),
                false => self.pool.checkout(instance),
            };
            let (handle, reused) = match checkout {
                Checkout::Http1(sender) => (Handle::Http1(sender), true),
                Checkout::Http2(sender) => (Handle::Http2(sender), true),
                // Boxed: a new connection (TCP, TLS, HTTP/2 handshakes) is
                // the rare path, and inline its state (about 8 KiB) would
                // make every request's future that much larger, to be
                // copied into place on each request.
                Checkout::Empty => Box::pin(self.connect(instance, slot)).await?,
            };
            let sent = match handle {
                Handle::Http1(connection) => {
                    // HTTP/1.1 wants the origin form and a Host header; a
                    // forward proxy for a plain-http instance the absolute
                    // form and its credentials.
                    request
                        .headers_mut()
                        .insert(header::HOST, instance.host_header().clone());
                    let forwarded = self.forwarded_by(instance);
                    if let Some(proxy) = forwarded {
                        *request.uri_mut() = absolute(instance, request.uri())?;
                        if let Some(authorization) = proxy.authorization() {
                            request
                                .headers_mut()
                                .insert(header::PROXY_AUTHORIZATION, authorization.clone());
                        }
                    }
                    return match connection.send(request).await {
                        Ok(response) => {
                            if let Some(proxy) = forwarded {
                                refused_by_proxy(proxy, instance, response.status())?;
                            }
                            Ok(response.map(|body| {
                                UpstreamBody::pooled(
                                    self.timed(Received::Http1(body)),
                                    &self.pool,
                                    slot,
                                )
                            }))
                        }
                        Err(failure) => Err(Failed {
                            stale_connection: reused && failure.unanswered,
                            error: ProxyError::UpstreamUnavailable(failure.message),
                        }),
                    };
                }
                Handle::Http2(mut sender) => {
                    // HTTP/2 takes `:scheme` and `:authority` from the URI.
                    request.headers_mut().remove(header::HOST);
                    *request.uri_mut() = absolute(instance, request.uri())?;
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            return Ok(response.map(|body| {
                                UpstreamBody::unpooled(self.timed(Received::Http2(body)))
                            }));
                        }
                        Err(error) => error,
                    }
                }
            };
            let mut failed = sent;
            match failed.take_message() {
                // Never written: the pooled HTTP/2 connection had just closed.
                Some(unsent) if reused => {
                    tracing::debug!(error = %error_chain(failed.error()), "pooled upstream connection closed; sending on a new one");
                    request = unsent;
                    if let Some(origin) = unsent_origin_form(&request) {
                        *request.uri_mut() = origin;
                    }
                }
                _ => {
                    let error = failed.into_error();
                    return Err(Failed {
                        stale_connection: reused && error.is_incomplete_message(),
                        error: ProxyError::UpstreamUnavailable(error_chain(&error)),
                    });
                }
            }
        }
    }

    /// The egress proxy that takes requests for `instance` in absolute
    /// form: a plain-http instance's, when the route has one.
    fn forwarded_by(&self, instance: &InstanceBase) -> Option<&EgressProxy> {
        // Every HTTP/1.1 request asks: https (SFMC's instances) answers
        // without a route lookup.
        if instance.scheme() == &http::uri::Scheme::HTTPS {
            return None;
        }
        match self.connector.route(instance) {
            Route::Proxy(proxy) => Some(proxy),
            Route::Direct | Route::Unusable(_) => None,
        }
    }

    /// A new connection to the instance, or, for https, the HTTP/2 one a
    /// request ahead at the connect gate opened; whether it was reused.
    async fn connect(
        &self,
        instance: &InstanceBase,
        slot: usize,
    ) -> Result<(Handle<B>, bool), ProxyError> {
        let gate = self.pool.connect_gate(slot);
        let mut turn = match &gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        if turn.is_some() {
            match self.pool.after_gate(slot) {
                AfterGate::Http2(sender) => return Ok((Handle::Http2(sender), true)),
                AfterGate::Http1Only => turn = None,
                AfterGate::Connect => {}
            }
        }
        let handle = self
            .connector
            .connect(instance)
            .await
            .map_err(|error| ProxyError::UpstreamUnavailable(error.to_string()))?;
        match &handle {
            Handle::Http2(sender) => self.pool.share_http2(slot, sender),
            Handle::Http1(_) if turn.is_some() => self.pool.mark_http1_only(slot),
            Handle::Http1(_) => {}
        }
        drop(turn);
        Ok((handle, false))
    }
}

/// Why an exchange failed, and whether only because a pooled connection
/// closed under the request (written, unanswered): then a request that may be
/// repeated can go out once more.
struct Failed {
    error: ProxyError,
    stale_connection: bool,
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Self {
        Self {
            error,
            stale_connection: false,
        }
    }
}

/// `https://host/path?query` for HTTP/2, from the origin-form URI.
fn absolute(instance: &InstanceBase, origin: &Uri) -> Result<Uri, ProxyError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(instance.scheme().clone());
    parts.authority = Some(instance.authority().clone());
    parts.path_and_query = origin.path_and_query().cloned();
    Uri::from_parts(parts)
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))
}

/// A forward proxy's own refusal of a request it was to pass on (SFMC
/// never answers 407): the proxy's error, not SFMC's answer.
fn refused_by_proxy(
    proxy: &EgressProxy,
    instance: &InstanceBase,
    status: http::StatusCode,
) -> Result<(), Failed> {
    if status != http::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return Ok(());
    }
    let target = format!("{}:{}", instance.host(), instance.port());
    let reason = status.canonical_reason().unwrap_or("");
    let refused = ConnectError::proxy_refused(proxy, &target, status.as_u16(), reason);
    Err(ProxyError::UpstreamUnavailable(refused.to_string()).into())
}

/// A request handed back from an HTTP/2 attempt carries the absolute URI; a
/// retry may go out over HTTP/1.1, which wants the origin form.
fn unsent_origin_form<B>(request: &Request<B>) -> Option<Uri> {
    request.uri().scheme()?;
    request.uri().path_and_query().cloned().map(Uri::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The pool does not care what body it sends; the proxy's is not needed here.
    type TestBody = http_body_util::Full<bytes::Bytes>;
    use sfmc_fake::{FakeConfig, FakeTenant};

    fn upstream() -> Upstream<TestBody> {
        crate::tls::install_crypto_provider();
        let settings = UpstreamSettings {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            ca_file: None,
            allowed_instance_hosts: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            egress: Default::default(),
            retry_throttled: false,
            max_retry_wait: Duration::from_secs(10),
        };
        let tls = crate::tls::client_config(None).expect("TLS set-up");
        Upstream::new(&settings, tls, Default::default())
    }

    /// A fake tenant (kept alive by the caller) and its REST instance.
    async fn fake_instance() -> (FakeTenant, InstanceBase) {
        let fake = FakeTenant::start(FakeConfig::default())
            .await
            .expect("fake tenant");
        let instance = InstanceBase::parse(&format!("http://{}/", fake.addr()), &[])
            .expect("loopback instance");
        (fake, instance)
    }

    fn get(path: &str) -> Request<TestBody> {
        Request::builder()
            .uri(path)
            .body(TestBody::default())
            .expect("request")
    }

    #[tokio::test]
    async fn each_response_read_to_the_end_frees_its_connection_for_the_next_request() {
        let (_fake, instance) = fake_instance().await;
        let upstream = upstream();
        for _ in 0..3 {
            let response = upstream
                .send(&instance, get("/hub/v1/x"))
                .await
                .expect("answered");
            assert_eq!(response.status(), 401, "no token: the fake's 401");
            assert_eq!(
                response.headers()["x-fake-connection"],
                "1",
                "one connection, reused"
            );
            let body = http_body_util::BodyExt::collect(response.into_body()).await;
            assert!(
                body.is_ok_and(|b| !b.to_bytes().is_empty()),
                "SFMC's 401 text"
            );
        }
        assert_eq!(upstream.pool.idle_count(&instance), 1);
    }

    /// A pooled connection whose server has just gone, before the client
    /// side has read the close: what a keep-alive timeout on SFMC's side
    /// looks like from here, at the worst moment.
    #[tokio::test]
    async fn a_pooled_connection_the_server_has_just_closed_is_passed_over_for_a_new_one() {
        let (_fake, instance) = fake_instance().await;
        let upstream = upstream();
        let (client_io, server_io) = tokio::io::duplex(1024);
        let dead = h1::Connection::new(client_io, &Default::default());
        let (slot, _) = upstream.pool.checkout(&instance);
        upstream.pool.keep_idle(slot, dead);
        drop(server_io);
        let response = upstream
            .send(&instance, get("/hub/v1/after-close"))
            .await
            .expect("sent on a new connection, not a 502");
        // The fake tenant answered (SFMC's 401: this request has no token),
        // on the one connection it has seen.
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["x-fake-connection"], "1");
    }
}
