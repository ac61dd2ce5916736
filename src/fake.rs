//! An embedded fake SFMC tenant, for `sfmc-proxy demo` and the test suite.
//!
//! One server on 127.0.0.1 plays both of a tenant's hosts: the auth host
//! (`POST /v2/token`, answering like SFMC, counting requests, failing on demand)
//! and the REST instance (checks the Bearer token like SFMC and echoes what it
//! received, so tests can see exactly what the proxy forwarded). A few `/fake/*`
//! paths stream, hold back or shape responses for streaming and pass-through
//! tests. Bodies are never buffered whole: uploads are hashed as they arrive.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

type FakeBody = BoxBody<Bytes, Infallible>;

/// The MID the fake reports for tokens requested without `account_id`.
pub const DEFAULT_MID: &str = "100";
const DEFAULT_SCOPE: &str =
    "email_read email_write documents_and_images_read data_extensions_read data_extensions_write";
const NOT_AUTHORIZED: &str = r#"{"message":"Not Authorized","errorcode":0,"documentation":"https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"}"#;

pub struct FakeConfig {
    pub client_id: String,
    pub client_secret: String,
    pub expires_in: u64,
    pub instance_url_form: InstanceUrlForm,
    /// Serve HTTPS with this configuration (ALPN h2 and http/1.1 are added).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Host name used in the auth URL and instance URLs.
    pub instance_host: String,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            client_id: "fake-client-id".into(),
            client_secret: "fake-client-secret".into(),
            expires_in: 1080,
            instance_url_form: InstanceUrlForm::SlashSuffixed,
            tls: None,
            instance_host: "127.0.0.1".into(),
        }
    }
}

/// How the token response writes instance URLs (SFMC uses all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceUrlForm {
    /// `host:port`, as in SFMC's docs.
    Bare,
    /// `scheme://host:port`.
    Https,
    /// `scheme://host:port/`, as in real responses.
    SlashSuffixed,
}

#[derive(Debug, Clone)]
pub enum TokenFailure {
    /// Answer `/v2/token` with this status and SFMC's error JSON.
    Reject {
        status: u16,
        error: String,
        description: String,
    },
    /// HTTP 500 with a non-JSON body.
    ServerError,
    /// Never answer.
    Hang,
}

struct Issued {
    number: u64,
    account_id: String,
    scope: String,
    issued_at: Instant,
    revoked: bool,
}

struct State {
    client_id: String,
    client_secret: String,
    expires_in: u64,
    instance_url: String,
    token_requests: AtomicUsize,
    rest_requests: AtomicUsize,
    next_token: AtomicU64,
    tokens: Mutex<HashMap<String, Issued>>,
    last_token_request: Mutex<Option<(Value, Option<String>)>>,
    failure: Mutex<Option<TokenFailure>>,
    gate: Notify,
    upload_started: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake tenant; dropping it stops the server.
pub struct FakeTenant {
    addr: SocketAddr,
    auth_url: String,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeTenant {
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeTenant> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let authority = format!("{}:{}", config.instance_host, addr.port());
        let instance_url = match config.instance_url_form {
            InstanceUrlForm::Bare => authority.clone(),
            InstanceUrlForm::Https => format!("{scheme}://{authority}"),
            InstanceUrlForm::SlashSuffixed => format!("{scheme}://{authority}/"),
        };
        let state = Arc::new(State {
            client_id: config.client_id,
            client_secret: config.client_secret,
            expires_in: config.expires_in,
            instance_url,
            token_requests: AtomicUsize::new(0),
            rest_requests: AtomicUsize::new(0),
            next_token: AtomicU64::new(1),
            tokens: Mutex::new(HashMap::new()),
            last_token_request: Mutex::new(None),
            failure: Mutex::new(None),
            gate: Notify::new(),
            upload_started: Notify::new(),
        });
        let (tx, rx) = oneshot::channel();
        let tls = config.tls.map(|tls| {
            let mut tls = (*tls).clone();
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(tls))
        });
        tokio::spawn(accept_loop(listener, tls, state.clone(), rx));
        Ok(FakeTenant {
            addr,
            auth_url: format!("{scheme}://{authority}/"),
            state,
            shutdown: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://host:port/`: the auth base URL (also the instance).
    pub fn auth_url(&self) -> String {
        self.auth_url.clone()
    }

    /// `POST /v2/token` requests received, failed ones included.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The last token request's body as JSON (form bodies become an object of strings).
    pub fn last_token_request(&self) -> Option<Value> {
        lock(&self.state.last_token_request)
            .as_ref()
            .map(|(body, _)| body.clone())
    }

    pub fn last_token_content_type(&self) -> Option<String> {
        lock(&self.state.last_token_request)
            .as_ref()
            .and_then(|(_, ct)| ct.clone())
    }

    pub fn set_token_failure(&self, failure: Option<TokenFailure>) {
        *lock(&self.state.failure) = failure;
    }

    /// Every token issued so far is rejected from now on.
    pub fn revoke_all_tokens(&self) {
        for issued in lock(&self.state.tokens).values_mut() {
            issued.revoked = true;
        }
    }

    /// Requests to the REST instance (every path but `/v2/token`).
    pub fn rest_requests(&self) -> usize {
        self.state.rest_requests.load(Ordering::SeqCst)
    }

    /// Lets `/fake/gated` send its second chunk.
    pub fn release_gate(&self) {
        self.state.gate.notify_one();
    }

    /// Resolves once `/fake/upload-gated` has received body bytes.
    pub async fn upload_started(&self) {
        self.state.upload_started.notified().await;
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for FakeTenant {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let (state, tls) = (state.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_io(TokioIo::new(stream), state).await;
                    }
                }
                None => serve_io(TokioIo::new(stream), state).await,
            }
        });
    }
}

async fn serve_io<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(state.clone(), request));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<FakeBody>, Infallible> {
    if request.uri().path() == "/v2/token" {
        return Ok(token_endpoint(&state, request).await);
    }
    state.rest_requests.fetch_add(1, Ordering::SeqCst);
    let Some((number, account_id, scope)) = authenticate(&state, request.headers()) else {
        return Ok(json_response(
            StatusCode::UNAUTHORIZED,
            NOT_AUTHORIZED.to_owned(),
        ));
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/fake/download") => download(&query),
        (&Method::GET, "/fake/gated") => gated(state.clone()),
        (&Method::GET, "/fake/respond") => shaped(&query),
        (&Method::POST, "/fake/upload-gated") => {
            echo(&state, request, (number, account_id, scope), true).await
        }
        _ => echo(&state, request, (number, account_id, scope), false).await,
    };
    Ok(response)
}

/// `(token number, MID, scope)` of a valid Bearer token, or `None`.
fn authenticate(state: &State, headers: &HeaderMap) -> Option<(u64, String, String)> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let tokens = lock(&state.tokens);
    let issued = tokens.get(token)?;
    let expired = issued.issued_at + Duration::from_secs(state.expires_in) <= Instant::now();
    if issued.revoked || expired {
        return None;
    }
    Some((
        issued.number,
        issued.account_id.clone(),
        issued.scope.clone(),
    ))
}

async fn token_endpoint(state: &State, request: Request<Incoming>) -> Response<FakeBody> {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    if request.method() != Method::POST {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"invalid_request"}"#.into(),
        );
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(collected) = Limited::new(request.into_body(), 64 * 1024).collect().await else {
        return oauth_error(
            400,
            "invalid_request",
            "The request body could not be read.",
        );
    };
    let bytes = collected.to_bytes();
    let is_form = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        form_to_json(&String::from_utf8_lossy(&bytes))
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    *lock(&state.last_token_request) = Some((body.clone(), content_type));
    let failure = lock(&state.failure).clone();
    match failure {
        Some(TokenFailure::Reject {
            status,
            error,
            description,
        }) => oauth_error(status, &error, &description),
        Some(TokenFailure::ServerError) => text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html>Internal Server Error</html>",
        ),
        Some(TokenFailure::Hang) => std::future::pending().await,
        None => issue_token(state, &body),
    }
}

fn issue_token(state: &State, body: &Value) -> Response<FakeBody> {
    let field = |name: &str| body.get(name).and_then(Value::as_str);
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "Use grant_type client_credentials.",
        );
    }
    if field("client_id") != Some(state.client_id.as_str())
        || field("client_secret") != Some(state.client_secret.as_str())
    {
        return oauth_error(
            401,
            "invalid_client",
            "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.",
        );
    }
    let account_id = match field("account_id") {
        Some(mid) if mid.is_empty() || !mid.bytes().all(|b| b.is_ascii_digit()) => {
            return oauth_error(
                401,
                "unauthorized_client",
                "The client is not enabled for this business unit.",
            );
        }
        Some(mid) => mid.to_owned(),
        None => DEFAULT_MID.to_owned(),
    };
    let scope = field("scope").unwrap_or(DEFAULT_SCOPE).to_owned();
    let number = state.next_token.fetch_add(1, Ordering::SeqCst);
    let token = format!(
        "fake-{number}-{:016x}{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..),
        fastrand::u64(..)
    );
    lock(&state.tokens).insert(
        token.clone(),
        Issued {
            number,
            account_id,
            scope: scope.clone(),
            issued_at: Instant::now(),
            revoked: false,
        },
    );
    let body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.expires_in,
        "scope": scope,
        "rest_instance_url": state.instance_url,
        "soap_instance_url": state.instance_url,
    });
    json_response(StatusCode::OK, body.to_string())
}

/// Reads the body as it streams, reporting its length, digest and what arrived.
async fn echo(
    state: &State,
    request: Request<Incoming>,
    token: (u64, String, String),
    gated: bool,
) -> Response<FakeBody> {
    let (parts, mut body) = request.into_parts();
    let (mut hasher, mut len, mut notified) = (Sha256::new(), 0u64, false);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text_response(StatusCode::BAD_REQUEST, "body could not be read");
        };
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            len += data.len() as u64;
            if gated && !notified && !data.is_empty() {
                state.upload_started.notify_one();
                notified = true;
            }
        }
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (number, account_id, scope) = token;
    let reply = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "account_id": account_id,
        "scope": scope,
        "token_number": number,
        "body_len": len,
        "body_sha256": digest,
        "headers": headers_json(&parts.headers),
    });
    json_response(StatusCode::OK, reply.to_string())
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(map)
}

/// `GET /fake/download?bytes=N`: N pattern bytes (`i % 251`), generated lazily.
fn download(query: &str) -> Response<FakeBody> {
    let total: u64 = query_values(query, "bytes")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(2);
    tokio::spawn(async move {
        const CHUNK: u64 = 64 * 1024;
        let mut offset = 0u64;
        while offset < total {
            let len = CHUNK.min(total - offset);
            let chunk: Vec<u8> = (offset..offset + len).map(|i| (i % 251) as u8).collect();
            if tx.send_data(Bytes::from(chunk)).await.is_err() {
                return;
            }
            offset += len;
        }
    });
    let mut response = Response::new(body.boxed());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `GET /fake/gated`: `first\n` now, `second\n` after `release_gate()`.
fn gated(state: Arc<State>) -> Response<FakeBody> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        if tx.send_data(Bytes::from_static(b"first\n")).await.is_err() {
            return;
        }
        state.gate.notified().await;
        let _ = tx.send_data(Bytes::from_static(b"second\n")).await;
    });
    Response::new(body.boxed())
}

/// `GET /fake/respond?status=S&header=Name:Value…`: a response of that shape.
fn shaped(query: &str) -> Response<FakeBody> {
    let status = query_values(query, "status")
        .first()
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = json_response(status, json!({ "status": status.as_u16() }).to_string());
    for pair in query_values(query, "header") {
        let Some((name, value)) = pair.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn form_to_json(form: &str) -> Value {
    let map: Map<String, Value> = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), Value::String(percent_decode(v))))
        .collect();
    Value::Object(map)
}

/// Decodes `%XX` and `+` (form encoding); malformed escapes are kept as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: StatusCode, body: String) -> Response<FakeBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text_response(status: StatusCode, body: &'static str) -> Response<FakeBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<FakeBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({
        "error": error,
        "error_description": description,
        "error_uri": "https://developer.salesforce.com/docs",
    });
    json_response(status, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_plus_escapes_and_malformed_input() {
        assert_eq!(percent_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("timeout%3D5"), "timeout=5");
    }

    #[test]
    fn form_bodies_become_json_objects() {
        let body = form_to_json("grant_type=client_credentials&client_id=a%2Bb&scope=x+y");
        assert_eq!(body["grant_type"], "client_credentials");
        assert_eq!(body["client_id"], "a+b");
        assert_eq!(body["scope"], "x y");
    }
}
