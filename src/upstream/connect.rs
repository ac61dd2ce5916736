//! Opening one upstream connection: DNS, TCP (with `TCP_NODELAY`), the
//! egress proxy's tunnel when the route has one (`tunnel`), and TLS with
//! ALPN for https instances, all within `upstream.connect_timeout`; then, for
//! HTTP/2, hyper's handshake on top and its connection task spawned here.
//! What comes back is the handle requests are sent through: for HTTP/1.1
//! the connection itself (`h1`), which needs neither.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::InstanceBase;
use super::RequestBody;
use super::h1;
use super::tunnel;
use crate::config::{Egress, Route};
use crate::error::error_chain;
use crate::gauge::Raised;

const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection to an instance could not be opened; each says what to
/// check. Shown to the client in a `502 upstream_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("`{host}` resolved to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr} failed: {source}")]
    Refused {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "connecting to {host}:{port}{via} (DNS, TCP and TLS) timed out after upstream.connect_timeout ({timeout:?}); check the network path to SFMC (firewall, proxy) or raise the timeout"
    )]
    TimedOut {
        host: String,
        port: u16,
        /// " through the egress proxy …", or empty when direct.
        via: String,
        timeout: Duration,
    },
    #[error("{proxy} cannot be reached: {reason}; is it running, and is its address right?")]
    ProxyUnreachable { proxy: String, reason: String },
    #[error(
        "TLS with {proxy} failed: {reason}; if it uses a private CA, add the CA's certificate with upstream.ca_file"
    )]
    ProxyTls { proxy: String, reason: String },
    #[error("{proxy} answered {status} {reason} (asked for {target}): {hint}")]
    ProxyRefused {
        proxy: String,
        target: String,
        status: u16,
        reason: String,
        hint: String,
    },
    #[error("{proxy} gave no usable answer to CONNECT {target}: {reason}")]
    ProxyProtocol {
        proxy: String,
        target: String,
        reason: String,
    },
    #[error("{0}")]
    UnusableProxy(String),
    #[error("cannot set TCP_NODELAY: {0}")]
    Socket(std::io::Error),
    #[error("`{host}` is not a valid TLS server name: {reason}")]
    ServerName { host: String, reason: String },
    #[error(
        "TLS with {host} failed: {reason}; if a TLS-inspecting proxy or a private CA is in the way, add its certificate with upstream.ca_file"
    )]
    Tls { host: String, reason: String },
    #[error("HTTP handshake failed: {0}")]
    Handshake(String),
}

/// A fresh connection's request handle, by the protocol the server chose.
pub enum Handle<B> {
    Http1(h1::Connection),
    Http2(http2::SendRequest<B>),
}

pub struct Connector {
    tls: TlsConnector,
    /// The same trust without ALPN, for TLS to an `https://` egress proxy.
    proxy_tls: TlsConnector,
    egress: Egress,
    connect_timeout: Duration,
    /// Connections open now (the metrics' `upstream_connections`).
    open: Gauge,
}

impl Connector {
    /// `tls` is the proxy's client configuration; ALPN is added here, since
    /// only these connections (not the token client's) may speak HTTP/2.
    pub fn new(mut tls: rustls::ClientConfig, connect_timeout: Duration, egress: Egress) -> Self {
        let mut proxy_tls = tls.clone();
        proxy_tls.alpn_protocols.clear();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            tls: TlsConnector::from(Arc::new(tls)),
            proxy_tls: TlsConnector::from(Arc::new(proxy_tls)),
            egress,
            connect_timeout,
            open: Gauge::default(),
        }
    }

    /// Counts the connections open in `open` (up when one is made, down
    /// when its task ends).
    pub fn counting(mut self, open: Gauge) -> Self {
        self.open = open;
        self
    }

    /// Opens a connection to the instance — DNS, TCP and TLS within
    /// `connect_timeout`; the error text says what failed.
    pub async fn connect<B: RequestBody>(
        &self,
        instance: &InstanceBase,
    ) -> Result<Handle<B>, ConnectError> {
        let deadline = Instant::now() + self.connect_timeout;
        match tokio::time::timeout_at(deadline, self.open(instance, deadline)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(self.timed_out(instance)),
        }
    }

    /// How connections to `instance` leave: direct, or through a proxy.
    pub fn route(&self, instance: &InstanceBase) -> Route<'_> {
        self.egress
            .route(instance.scheme() == &Scheme::HTTPS, instance.host())
    }

    async fn open<B: RequestBody>(
        &self,
        instance: &InstanceBase,
        deadline: Instant,
    ) -> Result<Handle<B>, ConnectError> {
        // `[::1]` in a URL; `::1` to the resolver and as a TLS server name.
        let host = instance.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let https = instance.scheme() == &Scheme::HTTPS;
        match self.route(instance) {
            Route::Direct => {
                let tcp = tcp(host, instance.port(), deadline)
                    .await
                    .map_err(|failed| failed.unwrap_or_else(|| self.timed_out(instance)))?;
                self.over(tcp, host, https).await
            }
            Route::Proxy(proxy) => {
                let io = tunnel::to_proxy(proxy, &self.proxy_tls, deadline).await?;
                if !https {
                    // Plain http (loopback only): the proxy takes each
                    // request in absolute form (`Upstream::exchange`).
                    return handshake(io, false, &self.open).await;
                }
                let authority = format!("{}:{}", instance.host(), instance.port());
                let io = tunnel::connect(io, proxy, &authority).await?;
                self.over(io, host, true).await
            }
            Route::Unusable(unusable) => Err(ConnectError::UnusableProxy(unusable.to_string())),
        }
    }

    /// TLS (for https) and the HTTP handshake over a stream to the instance.
    async fn over<T, B>(&self, io: T, host: &str, https: bool) -> Result<Handle<B>, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: RequestBody,
    {
        // Plain http is reachable only for loopback instances: `InstanceBase`
        // refuses http for every other host before a token is attached.
        if !https {
            return handshake(io, false, &self.open).await;
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|e| ConnectError::ServerName {
            host: host.to_owned(),
            reason: e.to_string(),
        })?;
        let tls = self
            .tls
            .connect(name, io)
            .await
            .map_err(|e| ConnectError::Tls {
                host: host.to_owned(),
                reason: error_chain(&e),
            })?;
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        handshake(tls, http2, &self.open).await
    }

    fn timed_out(&self, instance: &InstanceBase) -> ConnectError {
        let via = match self.route(instance) {
            Route::Proxy(proxy) => format!(" through {proxy}"),
            Route::Direct | Route::Unusable(_) => String::new(),
        };
        ConnectError::TimedOut {
            host: instance.host().to_owned(),
            port: instance.port(),
            via,
            timeout: self.connect_timeout,
        }
    }
}

/// Every address `host` resolves to, in order, until one accepts, by
/// `deadline`. `Err(None)`: the time ran out (the caller says where).
pub(super) async fn tcp(
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, Option<ConnectError>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| {
            Some(ConnectError::Resolve {
                host: host.to_owned(),
                source,
            })
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Some(ConnectError::NoAddress {
            host: host.to_owned(),
        }));
    }
    let stream = connect_first(&addrs, deadline).await?;
    // Requests and responses are written whole; Nagle would only delay
    // the last segment of each.
    stream
        .set_nodelay(true)
        .map_err(|e| Some(ConnectError::Socket(e)))?;
    Ok(stream)
}

/// The first of `addrs` to accept. Each address gets an equal share of the
/// time left, so one that never answers (a filtered IPv6 route, say) leaves
/// time for the next. The error names the last failure, or is `None` when
/// the last attempt timed out.
async fn connect_first(
    addrs: &[SocketAddr],
    deadline: Instant,
) -> Result<TcpStream, Option<ConnectError>> {
    let mut last = None;
    for (index, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempts_left = u32::try_from(addrs.len() - index).unwrap_or(u32::MAX);
        match tokio::time::timeout(left / attempts_left, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(source)) => {
                last = Some(ConnectError::Refused {
                    addr: *addr,
                    source,
                });
            }
            Err(_elapsed) => last = None,
        }
    }
    Err(last)
}

/// The handle for the chosen protocol, `open` one higher while the
/// connection lives: for HTTP/2 hyper's handshake, the connection then
/// running in its own task until the last handle is dropped or the server
/// closes it; for HTTP/1.1 the connection itself.
async fn handshake<T, B>(io: T, http2: bool, open: &Gauge) -> Result<Handle<B>, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: RequestBody,
{
    if http2 {
        let io = TokioIo::new(io);
        let failed = |e: hyper::Error| ConnectError::Handshake(error_chain(&e));
        // Pings find a connection that died under a request (a NAT that
        // forgot it) in seconds rather than at `response_timeout`.
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_PING_INTERVAL)
            .keep_alive_timeout(HTTP2_PING_TIMEOUT)
            .handshake(io)
            .await
            .map_err(failed)?;
        let open = Raised::new(open);
        tokio::spawn(async move {
            let _open = open;
            if let Err(error) = connection.await {
                tracing::debug!(error = %error_chain(&error), "upstream HTTP/2 connection ended");
            }
        });
        Ok(Handle::Http2(sender))
    } else {
        // Our own client: no handshake, no task; the requests drive it.
        Ok(Handle::Http1(h1::Connection::new(io, open)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Empty = http_body_util::Empty<bytes::Bytes>;

    fn connector(connect_timeout: Duration) -> Connector {
        crate::tls::install_crypto_provider();
        let tls = crate::tls::client_config(None).expect("TLS set-up");
        Connector::new(tls, connect_timeout, Egress::default())
    }

    /// A loopback address whose accept queue is full: a connect to it is
    /// neither accepted nor refused (the SYN goes unanswered), like a
    /// filtered route. Keep the returned pair alive while it is needed.
    async fn unanswered() -> (SocketAddr, (tokio::net::TcpListener, TcpStream)) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        // A backlog of 0 leaves room for exactly one queued connection; take it.
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let filler = TcpStream::connect(addr).await.expect("filler connects");
        (addr, (listener, filler))
    }

    #[tokio::test]
    async fn an_address_that_never_answers_leaves_time_for_the_next() {
        let (silent, _held) = unanswered().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let good = listener.local_addr().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(2);
        let stream = connect_first(&[silent, good], deadline)
            .await
            .expect("the second address within the same deadline");
        assert_eq!(stream.peer_addr().expect("peer"), good);
    }

    #[tokio::test]
    async fn the_last_failure_is_named_or_none_for_a_timeout() {
        let (silent, _held) = unanswered().await;
        let deadline = Instant::now() + Duration::from_millis(200);
        assert!(matches!(
            connect_first(&[silent], deadline).await,
            Err(None)
        ));
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let refused = connect_first(&[closed], deadline).await.err().flatten();
        assert!(
            matches!(refused, Some(ConnectError::Refused { addr, .. }) if addr == closed),
            "{refused:?}"
        );
    }

    /// A server that accepts and then never speaks: the TLS handshake is
    /// part of connecting, so `connect_timeout` ends it.
    #[tokio::test]
    async fn a_tls_handshake_that_never_completes_ends_at_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = tokio::spawn(async move { listener.accept().await.map(|(stream, _)| stream) });
        let instance =
            InstanceBase::parse(&format!("https://localhost:{port}/"), &[]).expect("valid");
        let connector = connector(Duration::from_millis(300));
        let Err(error) = connector.connect::<Empty>(&instance).await else {
            panic!("a silent server cannot complete a TLS handshake");
        };
        assert!(matches!(error, ConnectError::TimedOut { .. }), "{error}");
        assert!(
            error.to_string().contains("upstream.connect_timeout"),
            "{error}"
        );
        drop(held);
    }

    /// A TLS failure says where to add a certificate. (A plain-HTTP server
    /// makes the handshake fail; an untrusted one takes the same path.)
    #[tokio::test]
    async fn a_failed_tls_handshake_names_the_host_and_upstream_ca_file() {
        let fake = sfmc_fake::FakeTenant::start(sfmc_fake::FakeConfig::default())
            .await
            .expect("fake tenant");
        let port = fake.addr().port();
        let instance =
            InstanceBase::parse(&format!("https://localhost:{port}/"), &[]).expect("valid");
        let connector = connector(Duration::from_secs(5));
        let Err(error) = connector.connect::<Empty>(&instance).await else {
            panic!("plain HTTP cannot complete a TLS handshake");
        };
        assert!(
            matches!(&error, ConnectError::Tls { host, .. } if host == "localhost"),
            "{error}"
        );
        assert!(error.to_string().contains("upstream.ca_file"), "{error}");
    }

    #[tokio::test]
    async fn an_ipv6_literal_instance_is_reached() {
        let listener = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("IPv6 loopback (this machine kind has it)");
        let port = listener.local_addr().expect("addr").port();
        let instance = InstanceBase::parse(&format!("http://[::1]:{port}/"), &[]).expect("valid");
        let connector = connector(Duration::from_secs(2));
        let accepted = tokio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
        let handle = connector
            .connect::<Empty>(&instance)
            .await
            .expect("connected to [::1]");
        assert!(matches!(handle, Handle::Http1(_)));
        let peer = accepted.await.expect("accept task").expect("accepted");
        assert!(peer.is_ipv6());
    }
}
