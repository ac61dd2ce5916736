//! Builders for the integration tests: a fake SFMC tenant and a proxy, both on
//! 127.0.0.1 with ephemeral ports, and an HTTP client that sends paths and
//! queries byte for byte (hyper does not normalise them; reqwest's URL parser would).

mod binary;
mod command;
pub mod forward_proxy;
mod proxy;
pub mod redis;
pub mod soap;
pub mod tools;

pub use binary::{ACCESS, Binary};
#[cfg(feature = "demo")]
pub use command::demo_ready;
pub use command::{
    binary_command, config_file, run_binary, run_binary_into, state_dir, stderr_of, stdout_of,
    succeeded,
};
pub use proxy::{ProxyBuilder, Setup, Tenant, TestProxy, setup, setup_with_business_units};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;

pub use sfmc_fake::{
    AuthFailure, CONNECTION_HEADER, FakeConfig, FakeTenant, InstanceUrlForm, SoapRequest,
    reply_field,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret";

pub fn init() {
    sfmc_proxy::tls::install_crypto_provider();
}

pub async fn start_fake() -> FakeTenant {
    start_fake_with(FakeConfig::default()).await
}

pub async fn start_fake_with(config: FakeConfig) -> FakeTenant {
    init();
    FakeTenant::start(config).await.expect("fake tenant starts")
}

/// SFMC's refusal of a wrong client ID, for `set_auth_failure`.
pub fn invalid_client() -> AuthFailure {
    AuthFailure::Reject {
        status: 401,
        error: "invalid_client".into(),
        description: "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages."
            .into(),
    }
}

/// A loopback address where nothing listens (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A whole response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "JSON body expected ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The proxy's own error code, if the proxy made this response.
    pub fn proxy_error(&self) -> Option<&str> {
        self.headers
            .get("x-sfmc-proxy-error")
            .and_then(|v| v.to_str().ok())
    }

    /// The `message` of a proxy-made JSON error ("" when absent).
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|e: Infallible| match e {}).boxed()
}

/// A body the test feeds chunk by chunk.
pub fn channel_body() -> (http_body_util::channel::Sender<Bytes, BoxError>, TestBody) {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
    (tx, body.boxed())
}

#[derive(Clone)]
pub struct TestClient {
    inner: Client<HttpConnector, TestBody>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client that speaks HTTP/2 without TLS (h2c, prior knowledge).
    pub fn http2() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends as is; the response body is left streaming.
    pub async fn send(&self, request: Request<TestBody>) -> Response<Incoming> {
        self.inner
            .request(request)
            .await
            .expect("request reaches the proxy")
    }

    /// Sends and collects the whole response.
    pub async fn fetch(&self, request: Request<TestBody>) -> Reply {
        let response = self.send(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(
        &self,
        proxy: &TestProxy,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.fetch(request("GET", proxy, path_and_query, headers, empty()))
            .await
    }

    pub async fn post(
        &self,
        proxy: &TestProxy,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.fetch(request("POST", proxy, path_and_query, headers, full(body)))
            .await
    }
}

pub fn request(
    method: &str,
    proxy: &TestProxy,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Request<TestBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(proxy.url(path_and_query));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("valid test request")
}

/// A fake tenant served over TLS with `server_config`, its instance URLs
/// naming `localhost` (what the test CA's certificate covers).
pub fn tls_fake(server_config: &Arc<rustls::ServerConfig>) -> FakeConfig {
    FakeConfig {
        tls: Some(server_config.clone()),
        instance_host: "localhost".into(),
        ..FakeConfig::default()
    }
}

/// A test CA's server side, generated on the spot by `tls_server_with_ca`.
pub struct TlsServer {
    /// A rustls server configuration with the leaf certificate and its key.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The CA's certificate, PEM: what a client is told to trust.
    pub ca: PathBuf,
    /// The leaf certificate (for `localhost` and 127.0.0.1), PEM: for a
    /// server outside this process (stunnel's `cert`).
    pub cert: PathBuf,
    /// The leaf's private key, PEM (PKCS#8; stunnel's `key`).
    pub key: PathBuf,
}

/// A CA and a server configuration for `localhost`/127.0.0.1 signed by it,
/// generated on the spot; the CA, the leaf and its key are written as PEM
/// files in `dir`.
pub fn tls_server_with_ca(dir: &Path) -> TlsServer {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    init();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
    std::fs::create_dir_all(dir).expect("temp dir");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        path
    };
    TlsServer {
        server_config: Arc::new(config),
        ca: write("test-ca.pem", ca.pem()),
        cert: write("test-leaf.pem", leaf.pem()),
        key: write("test-leaf-key.pem", leaf_key.serialize_pem()),
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sfmc-proxy-test-{}-{name}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A token endpoint that always answers with `body` (for instance URLs the fake
/// would never produce). Returns its auth URL; serves until the runtime ends.
pub async fn static_auth_server(body: Value) -> String {
    static_auth_answer("application/json", Bytes::from(body.to_string())).await
}

/// A token endpoint that always answers 200 with `body` as `content_type`
/// (a web page where a token was expected, say).
pub async fn static_auth_answer(content_type: &'static str, body: Bytes) -> String {
    static_auth_reply(http::StatusCode::OK, content_type, body).await
}

/// A token endpoint that always answers `status` with `body` as
/// `content_type` (a web server's 404 page, say).
pub async fn static_auth_reply(
    status: http::StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> String {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(Full::new(body))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

/// A TCP listener that accepts connections and never answers (for timeouts).
pub async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A loopback address whose accept queue is full, so a new connection never
/// completes (Linux drops the SYN): what a firewalled or overloaded host looks
/// like to a connector. The pair must be kept alive for as long as it is used.
pub async fn unconnectable() -> (SocketAddr, (tokio::net::TcpListener, tokio::net::TcpStream)) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    // A backlog of 0 leaves room for exactly one queued connection; take it.
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let filler = tokio::net::TcpStream::connect(addr)
        .await
        .expect("filler connects");
    (addr, (listener, filler))
}
