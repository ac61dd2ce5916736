//! Through an egress proxy: TCP to the proxy (and TLS, for an `https://`
//! proxy), then, for an https target, `CONNECT host:port` with the proxy's
//! `Proxy-Authorization`. What comes back is a byte stream to the target
//! (TLS to SFMC goes on top, in `connect`) or, for a plain-http target, to
//! the proxy itself, which then takes requests in absolute form.
//!
//! The proxy's refusal is kept word for word (`407 Proxy Authentication
//! Required`) with what to change, since the user cannot see the proxy.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::connect::{ConnectError, tcp};
use crate::config::EgressProxy;
use crate::error::error_chain;

/// A CONNECT answer is a status line and a few headers; a proxy that sends
/// more before the blank line is not one to trust with the tunnel.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// A stream to a proxy: TCP, or TLS over TCP. Boxed: proxied connections
/// are the rare case, and direct ones keep their concrete type.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TCP and, for an `https://` proxy, TLS to `proxy`, by `deadline`.
pub(super) async fn to_proxy(
    proxy: &EgressProxy,
    tls: &TlsConnector,
    deadline: Instant,
) -> Result<Box<dyn Io>, ConnectError> {
    let unreachable = |reason: String| ConnectError::ProxyUnreachable {
        proxy: proxy.to_string(),
        reason,
    };
    let stream = match tcp(proxy.host(), proxy.port(), deadline).await {
        Ok(stream) => stream,
        Err(Some(error)) => return Err(unreachable(error.to_string())),
        Err(None) => return Err(unreachable("the connection timed out".into())),
    };
    if !proxy.tls() {
        return Ok(Box::new(stream));
    }
    let name = ServerName::try_from(proxy.host().to_owned())
        .map_err(|e| unreachable(format!("not a valid TLS server name: {e}")))?;
    let stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| ConnectError::ProxyTls {
            proxy: proxy.to_string(),
            reason: error_chain(&e),
        })?;
    Ok(Box::new(stream))
}

/// Asks `proxy`, over `io`, for a tunnel to `authority` (`host:port`, IPv6
/// in brackets); `io` is then that tunnel.
pub(super) async fn connect<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    proxy: &EgressProxy,
    authority: &str,
) -> Result<T, ConnectError> {
    let broken = |reason: String| ConnectError::ProxyProtocol {
        proxy: proxy.to_string(),
        target: authority.to_owned(),
        reason,
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(authorization) = proxy.authorization() {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(authorization.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(
        concat!(
            "User-Agent: sfmc-proxy/",
            env!("CARGO_PKG_VERSION"),
            "\r\n\r\n"
        )
        .as_bytes(),
    );
    io.write_all(&request)
        .await
        .map_err(|e| broken(format!("sending CONNECT failed: {e}")))?;
    io.flush()
        .await
        .map_err(|e| broken(format!("sending CONNECT failed: {e}")))?;

    // Nothing follows the proxy's answer until the client speaks (TLS's
    // ClientHello), so reading in chunks cannot take bytes of the tunnel.
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = io
            .read(&mut chunk)
            .await
            .map_err(|e| broken(format!("reading its answer failed: {e}")))?;
        if read == 0 {
            return Err(broken("it closed the connection without an answer".into()));
        }
        head.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(length)) => {
                let status = response.code.unwrap_or(0);
                if (200..300).contains(&status) {
                    if length < head.len() {
                        return Err(broken("it sent bytes after its 2xx answer".into()));
                    }
                    return Ok(io);
                }
                let reason = printable(response.reason.unwrap_or(""));
                return Err(ConnectError::proxy_refused(
                    proxy, authority, status, &reason,
                ));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_CONNECT_RESPONSE => {}
            Ok(httparse::Status::Partial) => {
                return Err(broken(format!(
                    "its answer's head is over {MAX_CONNECT_RESPONSE} bytes"
                )));
            }
            Err(e) => return Err(broken(format!("its answer is not HTTP ({e})"))),
        }
    }
}

impl ConnectError {
    /// `proxy` said `status reason` to a request for `target`.
    pub fn proxy_refused(proxy: &EgressProxy, target: &str, status: u16, reason: &str) -> Self {
        Self::ProxyRefused {
            proxy: proxy.to_string(),
            target: target.to_owned(),
            status,
            reason: reason.to_owned(),
            hint: refusal_hint(status, proxy, target),
        }
    }
}

/// What to change when the proxy said no, by its status.
fn refusal_hint(status: u16, proxy: &EgressProxy, target: &str) -> String {
    match status {
        // tinyproxy answers wrong credentials with 401, missing ones with 407.
        401 | 407 => format!(
            "check the proxy credentials in {}",
            proxy.credentials_source()
        ),
        403 => format!(
            "the proxy does not allow {target}; ask its operators to allow it, or list the host in upstream.no_proxy if it is reachable directly"
        ),
        502..=504 => format!("the proxy could not reach {target} itself"),
        _ => "see the egress proxy's log".to_owned(),
    }
}

/// A reason phrase for an error text: printable ASCII only, bounded.
fn printable(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(80)
        .collect()
}

/// For the token client (reqwest, whose tunnel errors drop the proxy's
/// status): opens a tunnel to `authority` the same way, only to say why
/// reqwest's failed. `Ok` when the tunnel opens (the failure was beyond it).
pub async fn probe(
    proxy: &EgressProxy,
    authority: &str,
    tls: Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> Result<(), ConnectError> {
    let mut tls = Arc::unwrap_or_clone(tls);
    tls.alpn_protocols.clear();
    let attempt = async {
        let io = to_proxy(proxy, &TlsConnector::from(Arc::new(tls)), deadline).await?;
        connect(io, proxy, authority).await.map(drop)
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ConnectError::ProxyUnreachable {
            proxy: proxy.to_string(),
            reason: "it did not answer CONNECT in time".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

    use super::*;
    use crate::config::{Route, Settings};

    fn settings(proxy: &str) -> Settings {
        let toml = format!(
            "[upstream]\nproxy = \"{proxy}\"\n[tenants.a]\nauth_url = \"https://a.auth.marketingcloudapis.com/\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n"
        );
        Settings::from_toml(&toml, |_| None, std::path::Path::new(".")).expect("settings")
    }

    fn proxy_of(settings: &Settings) -> &EgressProxy {
        match settings.upstream.egress.route(true, "x.example") {
            Route::Proxy(proxy) => proxy,
            other => panic!("a proxy, not {other:?}"),
        }
    }

    /// The proxy's side of a duplex pipe: reads the request head, sends
    /// `answer`, and returns what it read.
    async fn answer(server: DuplexStream, answer: &'static [u8]) -> String {
        let mut reader = BufReader::new(server);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.expect("read") == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        reader.get_mut().write_all(answer).await.expect("answer");
        head
    }

    #[tokio::test]
    async fn a_2xx_answer_opens_the_tunnel_with_the_credentials_sent() {
        let settings = settings("http://user:pw@127.0.0.1:3128");
        let proxy = proxy_of(&settings);
        let (client, server) = tokio::io::duplex(4096);
        let server = tokio::spawn(answer(
            server,
            b"HTTP/1.1 200 Connection established\r\n\r\n",
        ));
        connect(client, proxy, "mc1.rest.marketingcloudapis.com:443")
            .await
            .expect("tunnel");
        let head = server.await.expect("server");
        assert!(
            head.starts_with("CONNECT mc1.rest.marketingcloudapis.com:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dXNlcjpwdw==\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_refusal_keeps_the_proxys_words_and_says_what_to_change() {
        let settings = settings("http://user:pw@127.0.0.1:3128");
        let proxy = proxy_of(&settings);
        for (reply, expected) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
                    [..],
                "the egress proxy http://127.0.0.1:3128 (from upstream.proxy) answered 407 Proxy Authentication Required (asked for h.example:443): check the proxy credentials in upstream.proxy",
            ),
            (
                b"HTTP/1.0 403 Filtered\r\n\r\n",
                "answered 403 Filtered (asked for h.example:443): the proxy does not allow h.example:443",
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "could not reach h.example:443 itself",
            ),
        ] {
            let (client, server) = tokio::io::duplex(4096);
            let server = tokio::spawn(answer(server, reply));
            let error = connect(client, proxy, "h.example:443")
                .await
                .expect_err("refused")
                .to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("pw"), "{error}");
            server.await.expect("server");
        }
    }

    #[tokio::test]
    async fn no_answer_or_a_non_http_one_is_named() {
        let settings = settings("http://127.0.0.1:3128");
        let proxy = proxy_of(&settings);
        let (client, server) = tokio::io::duplex(4096);
        // The proxy reads the request and hangs up (its end is dropped).
        let server = tokio::spawn(answer(server, b""));
        let error = connect(client, proxy, "h.example:443")
            .await
            .expect_err("no tunnel")
            .to_string();
        assert!(error.contains("without an answer"), "{error}");
        server.await.expect("server");

        let (client, server) = tokio::io::duplex(4096);
        let server = tokio::spawn(answer(server, b"SSH-2.0-OpenSSH\r\n\r\n"));
        let error = connect(client, proxy, "h.example:443")
            .await
            .expect_err("not HTTP")
            .to_string();
        assert!(error.contains("not HTTP"), "{error}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_named_with_its_source() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let settings = settings(&format!("http://127.0.0.1:{port}"));
        let proxy = proxy_of(&settings);
        crate::tls::install_crypto_provider();
        let tls = crate::tls::client_config(None).expect("TLS");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let error = probe(proxy, "h.example:443", Arc::new(tls), deadline)
            .await
            .expect_err("nothing listens")
            .to_string();
        assert!(
            error.starts_with(&format!(
                "the egress proxy http://127.0.0.1:{port} (from upstream.proxy) cannot be reached"
            )),
            "{error}"
        );
    }
}
