//! sfmc-fake: an embedded fake SFMC tenant for `sfmc-proxy demo` and the
//! proxy's tests. It is a crate of its own that never depends on the proxy, so
//! the tests check the proxy against an independent reading of what SFMC does.
//!
//! One listener on 127.0.0.1 plays both hosts of a tenant: the auth host
//! (`POST /v2/token`: client credentials, SFMC's token and error bodies, failure
//! on demand) and the REST instance (SFMC's 401 without a valid Bearer token,
//! else an echo of the method, byte-exact path and query, headers, and the body's
//! length and SHA-256, hashed as it streams), which also answers SOAP at
//! `/Service.asmx` (the `fueloauth` checked, SFMC's faults, a Retrieve-style
//! answer). `/fake/*` paths stream, hold back or shape responses, or hang up. Instance
//! responses name the TCP connection they came on (`x-fake-connection`), so
//! tests can watch the proxy's connection pool. It owns its accept loop, its
//! counters and the tokens it issued.
//!
//! Start one with [`FakeTenant::start`] (a [`FakeConfig`]), point a client at
//! [`FakeTenant::auth_url`], and ask the tenant afterwards what it received
//! or make it fail on demand (the `set_*`, `revoke_*` and `expire_*` methods).
//!
//! # Layout
//! - `server`: the accept loop (TCP or TLS), HTTP/1.1 and h2, dispatch by path.
//! - `auth`: `POST /v2/token` (client credentials) and the book of issued tokens.
//! - `login`: `/v2/authorize`'s pages, the code and refresh grants, PKCE.
//! - `instance`: the REST instance: SFMC's 401, the echo, the `/fake/*` paths.
//! - `soap`: `/Service.asmx` with its own envelope reader, SFMC's faults.
//! - `transport`: connection numbers, closes and ended downloads, for tests.
//!
//! This file: the public [`FakeTenant`] and [`FakeConfig`], the state the
//! modules share, and the reply helpers they use.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

mod auth;
mod instance;
mod login;
mod server;
mod soap;
#[cfg(test)]
mod tests;
mod transport;

use auth::{InvalidToken, Issued};
pub use soap::{SoapRequest, reply_field};
pub use transport::CONNECTION_HEADER;
use transport::Transport;

type FakeBody = BoxBody<Bytes, Infallible>;
type Reply = Response<FakeBody>;

const DEFAULT_SCOPE: &str =
    "email_read email_write documents_and_images_read data_extensions_read data_extensions_write";
/// The MID of the business unit that owns the fake's package.
const DEFAULT_MID: &str = "100";
/// SFMC's REST throttling answer (HTTP 429; errorcode 50100 is the one
/// SFMC sends with `Retry-After`).
const THROTTLED: &str = r#"{"message":"Too many requests. Please try again later.","errorcode":50100,"documentation":"https://developer.salesforce.com/docs/marketing/marketing-cloud/guide/error-handling.html"}"#;
const NOT_AUTHORIZED: &str = r#"{"message":"Not Authorized","errorcode":0,"documentation":"https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"}"#;

/// How the token response writes the instance URLs (SFMC uses all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceUrlForm {
    /// `host:port`, as in SFMC's docs.
    Bare,
    /// `scheme://host:port`.
    Https,
    /// `scheme://host:port/`, as in real responses.
    SlashSuffixed,
}

#[derive(Clone)]
pub struct FakeConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Token lifetime in seconds, reported and enforced.
    pub expires_in: u64,
    pub instance_url_form: InstanceUrlForm,
    /// Serve HTTPS with this configuration (ALPN `h2` and `http/1.1` are set on a copy).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Host name in the auth and instance URLs.
    pub instance_host: String,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            client_id: "fake-client-id".to_owned(),
            client_secret: "fake-client-secret".to_owned(),
            expires_in: 1080,
            instance_url_form: InstanceUrlForm::SlashSuffixed,
            tls: None,
            instance_host: "127.0.0.1".to_owned(),
        }
    }
}

/// How `/v2/token` fails instead of issuing a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// This status with SFMC's `{"error","error_description","error_uri"}`.
    Reject {
        status: u16,
        error: String,
        description: String,
    },
    /// 500 with a small HTML body.
    ServerError,
    /// Never answer (until shutdown).
    Hang,
}

#[derive(Default)]
struct State {
    client_id: String,
    client_secret: String,
    expires_in: u64,
    instance_url: String,
    token_requests: AtomicUsize,
    rest_requests: AtomicUsize,
    soap_requests: AtomicUsize,
    /// SOAP requests still to be answered `Rate Limited` (`usize::MAX`: all).
    soap_rate_limited: AtomicUsize,
    /// REST requests still to be answered 429, and the `Retry-After` they carry.
    rest_throttled: AtomicUsize,
    rest_retry_after: Mutex<Option<String>>,
    /// The faultstrings for an expired and an unknown token, when not SFMC's
    /// usual `Token Expired` / `Login failed`.
    soap_refusal_wording: Mutex<Option<(String, String)>>,
    last_soap: Mutex<Option<SoapRequest>>,
    /// Body (as JSON) and content type of the last `/v2/token` request.
    last_token: Mutex<Option<(Value, Option<String>)>>,
    failure: Mutex<Option<AuthFailure>>,
    tokens: Mutex<HashMap<String, Issued>>,
    /// Login codes not yet exchanged, and refresh tokens (used ones stay, refused).
    codes: Mutex<HashMap<String, login::Code>>,
    refresh_tokens: Mutex<HashMap<String, login::RefreshGrant>>,
    /// Set by `set_pkce_supported(false)`: the exchange refuses `code_verifier`
    /// as an unknown parameter (what an SFMC without PKCE might do).
    pkce_unsupported: AtomicBool,
    gate: Notify,
    upload: Notify,
    /// Connection numbers, closes and ended downloads, for the tests.
    transport: Transport,
    /// Set at shutdown: hung token requests and held-back responses end then.
    stop: watch::Sender<bool>,
}

impl State {
    /// Whether this request is one that `counter` says to refuse (then one
    /// fewer is left; `usize::MAX` stays).
    fn refuse_one(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                usize::MAX => Some(usize::MAX),
                left => Some(left - 1),
            })
            .is_ok()
    }

    async fn stopped(&self) {
        let _ = self.stop.subscribe().wait_for(|stop| *stop).await;
    }
}

/// A running fake tenant; dropping it stops the server and its connections.
pub struct FakeTenant {
    addr: SocketAddr,
    auth_url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeTenant {
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeTenant> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let scheme = config.tls.as_ref().map_or("http", |_| "https");
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
            ..State::default()
        });
        let tls = config.tls.as_deref().map(server::tls_acceptor);
        let task = tokio::spawn(server::accept_loop(listener, tls, state.clone()));
        let auth_url = format!("{scheme}://{authority}/");
        Ok(FakeTenant {
            addr,
            auth_url,
            state,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://{instance_host}:{port}/`, the auth base URL.
    pub fn auth_url(&self) -> String {
        self.auth_url.clone()
    }

    /// Refuses every refresh token issued so far, as SFMC does after a
    /// revocation or a logout without `offline`.
    pub fn revoke_refresh_tokens(&self) {
        login::revoke_all(&self.state);
    }

    /// The access token the fake issued last (tests check it never leaks).
    pub fn last_issued_token(&self) -> Option<String> {
        auth::last_issued(&self.state)
    }

    /// POSTs to `/v2/token` received, failed ones included.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The last `/v2/token` body as JSON (a form as an object of strings).
    pub fn last_token_request(&self) -> Option<Value> {
        lock(&self.state.last_token)
            .as_ref()
            .map(|(body, _)| body.clone())
    }

    pub fn last_token_content_type(&self) -> Option<String> {
        lock(&self.state.last_token)
            .as_ref()
            .and_then(|(_, ct)| ct.clone())
    }

    /// With `false`, `/v2/authorize` ignores a PKCE challenge and the code
    /// exchange refuses a `code_verifier` as an unknown parameter.
    pub fn set_pkce_supported(&self, supported: bool) {
        self.state
            .pkce_unsupported
            .store(!supported, Ordering::SeqCst);
    }

    pub fn set_auth_failure(&self, failure: Option<AuthFailure>) {
        *lock(&self.state.failure) = failure;
    }

    /// Every token issued so far gets SFMC's 401 (SOAP: `Login failed`) from now on.
    pub fn revoke_all_tokens(&self) {
        self.state.refuse_all(InvalidToken::Unknown);
    }

    /// Every token issued so far is expired from now on, ahead of its
    /// `expires_in` (SFMC's may be): REST gets the 401, SOAP `Token Expired`.
    pub fn expire_all_tokens(&self) {
        self.state.refuse_all(InvalidToken::Expired);
    }

    /// Requests to any path but `/v2/token` and `/Service.asmx`, unauthorised ones included.
    pub fn rest_requests(&self) -> usize {
        self.state.rest_requests.load(Ordering::SeqCst)
    }

    /// Requests to `/Service.asmx` (any case), faulted ones included.
    pub fn soap_requests(&self) -> usize {
        self.state.soap_requests.load(Ordering::SeqCst)
    }

    /// The last SOAP request as it reached the fake: what SFMC would see.
    pub fn last_soap_request(&self) -> Option<SoapRequest> {
        lock(&self.state.last_soap).clone()
    }

    /// While on, SOAP requests with a valid token get SFMC's `Rate Limited` fault.
    pub fn set_soap_rate_limited(&self, on: bool) {
        let remaining = if on { usize::MAX } else { 0 };
        self.state
            .soap_rate_limited
            .store(remaining, Ordering::SeqCst);
    }

    /// The next `count` SOAP requests with a valid token get SFMC's `Rate
    /// Limited` fault; those after them are answered.
    pub fn rate_limit_soap(&self, count: usize) {
        self.state.soap_rate_limited.store(count, Ordering::SeqCst);
    }

    /// The next `count` REST requests with a valid token get SFMC's 429,
    /// with `Retry-After: retry_after` when given; those after them are answered.
    pub fn throttle_rest(&self, count: usize, retry_after: Option<&str>) {
        *lock(&self.state.rest_retry_after) = retry_after.map(str::to_owned);
        self.state.rest_throttled.store(count, Ordering::SeqCst);
    }

    /// From now on SOAP refusals are worded so: the faultstring for an
    /// expired token and for an unknown (revoked) one. SFMC's wording and
    /// case vary (`Login Failed: …`); the proxy must recognise any.
    pub fn set_soap_refusal_wording(&self, expired: &str, unknown: &str) {
        *lock(&self.state.soap_refusal_wording) = Some((expired.to_owned(), unknown.to_owned()));
    }

    /// Lets one `/fake/gated` response (current or next) send its second chunk.
    pub fn release_gate(&self) {
        self.state.gate.notify_one();
    }

    /// Resolves once `/fake/upload-gated` or `/Service.asmx` has received body
    /// bytes (one stored wake-up, as `Notify::notify_one`: use a fresh fake).
    pub async fn upload_started(&self) {
        self.state.upload.notified().await;
    }

    pub async fn shutdown(mut self) {
        self.state.stop.send_replace(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeTenant {
    fn drop(&mut self) {
        self.state.stop.send_replace(true);
        self.task.abort();
    }
}

fn token_error(status: u16, error: &str, description: &str) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    let uri = "https://developer.salesforce.com/docs";
    let body = json!({ "error": error, "error_description": description, "error_uri": uri });
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Reply {
    text_response(status, "application/json", body.to_string())
}

fn text_response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()).boxed());
    *reply.status_mut() = status;
    let content_type = HeaderValue::from_static(content_type);
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    reply
}

/// The query's `name=value` pairs, percent-decoded (`+` stays a `+`: this is
/// a URL's query, not a form); malformed escapes stay as they are.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |text| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let pairs = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty());
    pairs
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(name, value)| (decode(name), decode(value)))
        .collect()
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// XML's escaping, for the fake's SOAP answers and its HTML pages alike.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
