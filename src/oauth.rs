//! A person's login for Web and Public App tenants (authorization code).
//!
//! `start` builds the `/v2/authorize` URL with a fresh random `state`; the
//! browser comes back to the package's `redirect_uri` with a code. SFMC accepts
//! only https redirect URIs (`https://127.0.0.1:PORT/` locally), so the code is
//! received either by [`bind_callback`] — a short-lived TLS listener on that
//! address with a certificate made on the spot (the browser warns once) — or
//! by pasting the final URL from the address bar ([`code_from_callback`]).
//! The `state` is checked either way (CSRF); the code exchange itself is the
//! token client's (`SfmcTokenClient::exchange_code`).
//!
//! With `pkce` (the default) the login also sends PKCE (RFC 7636): an S256
//! `code_challenge` on `/v2/authorize`, and its `code_verifier` (32 random
//! bytes, base64url) on the exchange, so a code intercepted on its way back
//! is useless to anyone else. SFMC's docs do not list these parameters: a
//! refusal that names them tells the user to set `pkce = false`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use tokio::time::Instant;

use crate::config::{Grant, Secret, Tenant};
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{FetchedToken, TokenFailure};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "tenant `{0}` uses client credentials; only grant = \"authorization_code\" tenants log in"
    )]
    NotALoginTenant(String),
    #[error(
        "the answer's state does not match this login (a stale or forged redirect); start the login again"
    )]
    StateMismatch,
    #[error("SFMC refused the login: {0}{hint}", hint = pkce_hint(.0).unwrap_or_default())]
    Denied(String),
    #[error("the URL has no code: paste the whole address the browser ended on")]
    NoCode,
    #[error("cannot receive the redirect on {uri}: {reason}")]
    Listener { uri: String, reason: String },
    #[error("cannot make random state: {0}")]
    Random(#[from] rustls::Error),
    #[error("the code exchange failed: {0}")]
    Exchange(String),
}

/// A login in progress: where to send the browser, and what must come back.
pub struct LoginStart {
    pub authorize_url: String,
    pub state: String,
    pub redirect_uri: String,
    /// The PKCE verifier the code exchange must send (`None`: `pkce = false`).
    pub code_verifier: Option<Secret>,
}

pub fn start(tenant: &Tenant) -> Result<LoginStart, LoginError> {
    let Grant::AuthorizationCode {
        redirect_uri, pkce, ..
    } = &tenant.grant
    else {
        return Err(LoginError::NotALoginTenant(tenant.name.to_string()));
    };
    let state = crate::tls::random_hex(16)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &tenant.client_id)
        .append_pair("redirect_uri", redirect_uri);
    if let Some(scope) = &tenant.scope {
        query.append_pair("scope", scope);
    }
    query.append_pair("state", &state);
    let code_verifier = if *pkce {
        let verifier = crate::tls::base64url(&crate::tls::random_bytes(32)?);
        query
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Some(Secret::new(verifier))
    } else {
        None
    };
    Ok(LoginStart {
        authorize_url: format!("{}?{}", tenant.authorize_url, query.finish()),
        state,
        redirect_uri: redirect_uri.clone(),
        code_verifier,
    })
}

/// The S256 challenge of a PKCE verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::tls::base64url(&Sha256::digest(verifier.as_bytes()))
}

/// What to tell a user whose SFMC refused the PKCE parameters, when
/// `refusal` (SFMC's error and description) names them.
pub fn pkce_hint(refusal: &str) -> Option<String> {
    crate::token::names_pkce(refusal).then(|| {
        " — this package seems not to accept PKCE: set `pkce = false` in the tenant's [tenants.NAME] section of proxy.toml and log in again".to_owned()
    })
}

/// The code in a redirect: the whole URL the browser ended on, or its query.
pub fn code_from_callback(input: &str, expected_state: &str) -> Result<String, LoginError> {
    let input = input.trim();
    let query = match input.split_once('?') {
        Some((_, query)) => query,
        None => input,
    };
    let query = query.split('#').next().unwrap_or_default();
    let mut code = None;
    let (mut state, mut error, mut description) = (None, None, None);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "code" => code = Some(value.into_owned()),
            "state" => state = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            "error_description" => description = Some(value.into_owned()),
            _ => {}
        }
    }
    let state_ok = state.is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected_state.as_bytes())));
    if !state_ok {
        return Err(LoginError::StateMismatch);
    }
    if let Some(error) = error {
        return Err(LoginError::Denied(description.unwrap_or(error)));
    }
    code.filter(|c| !c.is_empty()).ok_or(LoginError::NoCode)
}

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

/// Finishes a login with a code: the code exchange, done by the caller.
pub type Exchange = Arc<dyn Fn(String) -> BoxFuture<Result<(), String>> + Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

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
            Err(reason) => {
                let _ = tx.send(Err(LoginError::Exchange(reason.clone()))).await;
                (StatusCode::BAD_GATEWAY, format!("Login failed: {reason}"))
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
    let html = format!(
        "<!doctype html><title>sfmc-proxy login</title><p id=\"result\">{}</p>",
        text.replace('&', "&amp;").replace('<', "&lt;")
    );
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The code exchange both ways of receiving a code use: the refresh token is
/// stored by the exchange; `on_token` gets the first access token (the proxy
/// caches it, so the first request after a login needs no refresh).
pub fn exchanger(
    client: Arc<SfmcTokenClient>,
    tenant: Arc<str>,
    account_id: Option<Arc<str>>,
    code_verifier: Option<Secret>,
    on_token: impl Fn(FetchedToken, Instant) + Send + Sync + 'static,
) -> Exchange {
    let on_token = Arc::new(on_token);
    Arc::new(move |code: String| {
        let (client, tenant, account_id) = (client.clone(), tenant.clone(), account_id.clone());
        let (on_token, verifier) = (on_token.clone(), code_verifier.clone());
        Box::pin(async move {
            let sent_at = Instant::now();
            let verifier = verifier.as_ref().map(Secret::expose);
            match client
                .exchange_code(&tenant, account_id.as_deref(), &code, verifier)
                .await
            {
                Ok(token) => {
                    on_token(token, sent_at);
                    Ok(())
                }
                Err(error) => {
                    let failure = TokenFailure {
                        error,
                        retry_in: std::time::Duration::ZERO,
                    };
                    Err(failure.into_proxy_error(&tenant).to_string())
                }
            }
        })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_comes_from_a_pasted_url_only_with_the_right_state() {
        let url = "https://127.0.0.1:8443/?code=abc%2Fdef&state=s1";
        assert_eq!(code_from_callback(url, "s1").expect("code"), "abc/def");
        assert_eq!(
            code_from_callback("code=abc&state=s1", "s1").expect("query"),
            "abc"
        );
        assert!(matches!(
            code_from_callback(url, "s2"),
            Err(LoginError::StateMismatch)
        ));
        assert!(matches!(
            code_from_callback("https://x/?code=abc", "s1"),
            Err(LoginError::StateMismatch)
        ));
        assert!(matches!(
            code_from_callback("https://x/?error=access_denied&error_description=User%20said%20no&state=s1", "s1"),
            Err(LoginError::Denied(reason)) if reason == "User said no"
        ));
        assert!(matches!(
            code_from_callback("https://x/?state=s1", "s1"),
            Err(LoginError::NoCode)
        ));
    }

    #[test]
    fn a_refused_pkce_challenge_says_to_set_pkce_false() {
        let url = "https://x/?error=invalid_request&error_description=Unknown%20parameter%20code_challenge&state=s1";
        let denied = code_from_callback(url, "s1").expect_err("denied");
        assert!(denied.to_string().contains("pkce = false"), "{denied}");
        let other = code_from_callback("https://x/?error=access_denied&state=s1", "s1")
            .expect_err("denied");
        assert!(!other.to_string().contains("pkce"), "{other}");
    }
}
