//! Opening one upstream connection: DNS, TCP (with `TCP_NODELAY`, within
//! `upstream.connect_timeout`), TLS with ALPN for https instances, and hyper's
//! HTTP/1.1 or HTTP/2 handshake on top. The connection's task is spawned here;
//! what comes back is the handle requests are sent through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::ProxyBody;
use crate::error::error_chain;
use crate::token::InstanceBase;

/// A fresh connection's request handle, by the protocol the server chose.
pub enum Handle {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

pub struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl Connector {
    /// `tls` is the proxy's client configuration; ALPN is added here, since
    /// only these connections (not the token client's) may speak HTTP/2.
    pub fn new(mut tls: rustls::ClientConfig, connect_timeout: Duration) -> Self {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout,
        }
    }

    /// Opens a connection to the instance; the error text says what failed.
    pub async fn connect(&self, instance: &InstanceBase) -> Result<Handle, String> {
        let tcp = self.tcp(instance.host(), instance.port()).await?;
        // Plain http is reachable only for loopback instances: `InstanceBase`
        // refuses http for every other host before a token is attached.
        if instance.scheme() != &Scheme::HTTPS {
            return handshake(tcp, false).await;
        }
        let name = ServerName::try_from(instance.host().to_owned())
            .map_err(|e| format!("`{}` is not a valid TLS server name: {e}", instance.host()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {} failed: {}", instance.host(), error_chain(&e)))?;
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        handshake(tls, http2).await
    }

    /// Every address the name resolves to, in order, until one accepts; all
    /// of it within `connect_timeout`.
    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let attempt = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
                .collect();
            let mut last = format!("`{host}` resolved to no address");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = format!("connecting to {addr} ({host}) failed: {e}"),
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_elapsed| {
                format!(
                    "connecting to {host}:{port} timed out after upstream.connect_timeout ({:?}); check the network path to SFMC (firewall, proxy) or raise the timeout",
                    self.connect_timeout
                )
            })??;
        // Requests and responses are written whole; Nagle would only delay
        // the last segment of each.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        Ok(stream)
    }
}

/// hyper's handshake for the chosen protocol; the connection then runs in its
/// own task until the last handle is dropped or the server closes it.
async fn handshake<T>(io: T, http2: bool) -> Result<Handle, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let failed = |e: hyper::Error| format!("HTTP handshake failed: {}", error_chain(&e));
    if http2 {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(failed)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error_chain(&error), "upstream HTTP/2 connection ended");
            }
        });
        Ok(Handle::Http2(sender))
    } else {
        let (sender, connection) = http1::handshake(io).await.map_err(failed)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error_chain(&error), "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Handle::Http1(sender))
    }
}
