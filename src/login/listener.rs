//! The short-lived TLS listener on a login's `redirect_uri` (a loopback IP
//! address): it serves the browser's redirect with a certificate made on the
//! spot, checks the `state`, runs the code exchange and shows the outcome.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::exchange::Exchange;
use super::{LoginError, code_from_callback};

/// The TLS listener for `redirect_uri`, when it names a loopback IP address:
/// the only redirect target a local process can serve.
pub async fn bind_callback(redirect_uri: &str) -> Result<CallbackListener, LoginError> {
    let fail = |reason: String| LoginError::Listener {
        uri: redirect_uri.to_owned(),
        reason,
    };
    let uri: Uri = redirect_uri.parse().map_err(|_| fail("not a URL".into()))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let ip: IpAddr = host
        .parse()
        .ok()
        .filter(IpAddr::is_loopback)
        .ok_or_else(|| {
            fail("its host is not a loopback IP address; paste the final URL instead".into())
        })?;
    let port = uri.port_u16().unwrap_or(443);
    let listener = TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .map_err(|e| fail(format!("{e}; paste the final URL instead")))?;
    let tls = self_signed(ip).map_err(fail)?;
    Ok(CallbackListener {
        listener,
        tls,
        path: uri.path().to_owned(),
    })
}

pub struct CallbackListener {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    path: String,
}

impl CallbackListener {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves the redirect until one carries this login's state and a code
    /// that `exchange` accepts (or SFMC's refusal of the login). The browser's
    /// page tells the real outcome, after the exchange; a request with another
    /// state or path is answered but does not end the wait.
    pub async fn complete(
        self,
        expected_state: &str,
        exchange: Exchange,
    ) -> Result<(), LoginError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let (tx, mut rx) = mpsc::channel::<Result<(), LoginError>>(1);
        let path = Arc::<str>::from(self.path);
        let expected = Arc::<str>::from(expected_state);
        loop {
            tokio::select! {
                Some(outcome) = rx.recv() => return outcome,
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let (acceptor, tx, exchange) = (acceptor.clone(), tx.clone(), exchange.clone());
                    let (path, expected) = (path.clone(), expected.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        let service = service_fn(move |req| {
                            let outcome = callback(&req, &path, &expected);
                            let (tx, exchange) = (tx.clone(), exchange.clone());
                            async move { Ok::<_, Infallible>(answer(outcome, &exchange, &tx).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        }
    }
}

/// `None`: not the redirect (a favicon, say); `Some`: the login's code or error.
fn callback(
    req: &Request<Incoming>,
    path: &str,
    expected: &str,
) -> Option<Result<String, LoginError>> {
    if req.uri().path() != path {
        return None;
    }
    let query = req.uri().query().unwrap_or_default();
    Some(code_from_callback(query, expected))
}

async fn answer(
    outcome: Option<Result<String, LoginError>>,
    exchange: &Exchange,
    tx: &mpsc::Sender<Result<(), LoginError>>,
) -> Response<Full<Bytes>> {
    let (status, text) = match outcome {
        None => (StatusCode::NOT_FOUND, "Not the login redirect.".to_owned()),
        Some(Ok(code)) => match exchange(code).await {
            Ok(()) => {
                let _ = tx.send(Ok(())).await;
                (
                    StatusCode::OK,
                    "Logged in. sfmc-proxy has stored the login; you can close this tab."
                        .to_owned(),
                )
            }
            Err(error) => {
                let text = format!("Login failed: {error}");
                let _ = tx.send(Err(LoginError::Exchange(error))).await;
                (StatusCode::BAD_GATEWAY, text)
            }
        },
        Some(Err(LoginError::Denied(reason))) => {
            let text = format!("Login failed: SFMC refused the login: {reason}");
            let _ = tx.send(Err(LoginError::Denied(reason))).await;
            (StatusCode::BAD_REQUEST, text)
        }
        // A forged or stale redirect is answered but does not end the wait.
        Some(Err(error)) => (StatusCode::BAD_REQUEST, format!("Login failed: {error}")),
    };
    let html = super::outcome_page(&text);
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A certificate for `ip`, made now and never stored: the browser warns once,
/// which the README explains; nothing else ever trusts it.
fn self_signed(ip: IpAddr) -> Result<Arc<rustls::ServerConfig>, String> {
    let certified = rcgen::generate_simple_self_signed(vec![ip.to_string()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| format!("cannot use the certificate key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
