//! The egress tests' rig on its own (`support::forward_proxy`): tinyproxy
//! with Basic auth tunnels to the fake tenant and logs it, refuses without
//! credentials, forwards an absolute-form request, and stunnel puts TLS in
//! front of it. Raw HTTP/1.1 over sockets: nothing of the proxy under test.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::forward_proxy::{ForwardProxy, TlsFront, basic};
use crate::support::*;

/// Longest wait for an answer before the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(20);

const USER: &str = "alice";
const PASS: &str = "s3cret";

/// Reads up to the end of a response head (byte by byte: nothing after it
/// is consumed, so a tunnel's first bytes stay in the stream).
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let read = async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.expect("read the answer");
            assert_ne!(
                n,
                0,
                "closed before the head ended: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    };
    tokio::time::timeout(HANG, read)
        .await
        .unwrap_or_else(|_| panic!("no answer within {HANG:?}"))
}

/// Sends `request` (a head, no body) and reads the answer's head.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> String {
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream.flush().await.expect("flush the request");
    read_head(stream).await
}

/// `CONNECT authority`, with `Proxy-Authorization: authorization` if given.
async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    authority: &str,
    authorization: Option<&str>,
) -> String {
    let credentials = authorization
        .map(|value| format!("Proxy-Authorization: {value}\r\n"))
        .unwrap_or_default();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{credentials}\r\n");
    exchange(stream, &request).await
}

/// An origin-form GET to the fake's REST instance (no token: its 401).
async fn get_rest<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, fake: &FakeTenant) -> String {
    let request = format!(
        "GET /hub/v1/x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        fake.addr()
    );
    exchange(stream, &request).await
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"))
}

async fn tcp(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

#[tokio::test]
async fn connect_with_credentials_tunnels_to_the_fake_and_is_logged() {
    let dir = temp_dir("forward-proxy-connect");
    let fake = start_fake().await;
    let egress = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let authority = fake.addr().to_string();
    let mut stream = tcp(egress.addr()).await;
    let answer = connect(&mut stream, &authority, Some(&egress.proxy_authorization())).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let through = get_rest(&mut stream, &fake).await;
    assert_eq!(
        status(&through),
        401,
        "the fake's REST instance answered through the tunnel: {through}"
    );
    assert!(egress.tunnels_to(&authority), "{}", egress.log());
    assert_eq!(egress.connections_to("127.0.0.1"), 1, "{}", egress.log());
    assert_eq!(
        egress.url_with_credentials(),
        format!("http://{USER}:{PASS}@{}", egress.addr())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn connect_without_credentials_is_refused_with_407_and_opens_nothing() {
    let dir = temp_dir("forward-proxy-407");
    let fake = start_fake().await;
    let egress = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let authority = fake.addr().to_string();
    let mut stream = tcp(egress.addr()).await;
    let answer = connect(&mut stream, &authority, None).await;
    assert_eq!(status(&answer), 407, "{answer}");
    assert!(
        answer.contains("Proxy-Authenticate: Basic"),
        "a Basic challenge: {answer}"
    );
    assert!(
        egress.tunnels_to(&authority),
        "asked for, though refused: {}",
        egress.log()
    );
    assert_eq!(egress.connections_to("127.0.0.1"), 0, "{}", egress.log());
    let _ = std::fs::remove_dir_all(dir);
}

/// tinyproxy's quirk the egress tests must expect: wrong credentials are a
/// 401 (with `WWW-Authenticate`), not a 407, for CONNECT too.
#[tokio::test]
async fn connect_with_wrong_credentials_is_refused_with_401() {
    let dir = temp_dir("forward-proxy-401");
    let fake = start_fake().await;
    let egress = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let mut stream = tcp(egress.addr()).await;
    let wrong = basic(USER, "wrong");
    let answer = connect(&mut stream, &fake.addr().to_string(), Some(&wrong)).await;
    assert_eq!(status(&answer), 401, "{answer}");
    assert_eq!(egress.connections_to("127.0.0.1"), 0, "{}", egress.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_absolute_form_request_is_forwarded_and_logged() {
    let dir = temp_dir("forward-proxy-absolute");
    let fake = start_fake().await;
    let egress = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let url = format!("http://{}/hub/v1/x?a=1", fake.addr());
    let mut stream = tcp(egress.addr()).await;
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: {}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
        fake.addr(),
        egress.proxy_authorization()
    );
    let answer = exchange(&mut stream, &request).await;
    assert_eq!(status(&answer), 401, "the fake's 401: {answer}");
    assert!(egress.requested("GET", &url), "{}", egress.log());
    assert!(!egress.tunnels_to(&fake.addr().to_string()));
    assert_eq!(egress.connections_to("127.0.0.1"), 1, "{}", egress.log());
    let _ = std::fs::remove_dir_all(dir);
}

/// An `https://` egress proxy: TLS to stunnel (trusting the test CA, as the
/// proxy's own client config does), CONNECT inside it to tinyproxy.
#[tokio::test]
async fn a_tls_front_before_tinyproxy_tunnels_to_the_fake() {
    let dir = temp_dir("forward-proxy-tls-front");
    let tls = tls_server_with_ca(&dir);
    let fake = start_fake().await;
    let egress = ForwardProxy::start(&dir, Some((USER, PASS))).await;
    let front = TlsFront::start(&dir, egress.addr(), &tls.cert, &tls.key).await;
    assert_eq!(
        front.url(),
        format!("https://localhost:{}", front.addr().port())
    );
    assert_eq!(
        front.url_with_credentials("a@b", "p:w/"),
        format!("https://a%40b:p%3Aw%2F@localhost:{}", front.addr().port())
    );
    let config = sfmc_proxy::tls::client_config(Some(&tls.ca)).expect("client config");
    let server_name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp(front.addr()).await)
        .await
        .expect("TLS handshake with the front, its leaf trusted by the test CA");
    let authority = fake.addr().to_string();
    let answer = connect(&mut stream, &authority, Some(&egress.proxy_authorization())).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let through = get_rest(&mut stream, &fake).await;
    assert_eq!(status(&through), 401, "{through}");
    assert!(egress.tunnels_to(&authority), "{}", egress.log());
    assert!(
        front.log().contains("Service [front] accepted connection"),
        "{}",
        front.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_basic_auth_a_loopback_client_tunnels_without_credentials() {
    let dir = temp_dir("forward-proxy-open");
    let fake = start_fake().await;
    let egress = ForwardProxy::start(&dir, None).await;
    assert_eq!(egress.url(), format!("http://{}", egress.addr()));
    let mut stream = tcp(egress.addr()).await;
    let answer = connect(&mut stream, &fake.addr().to_string(), None).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(status(&get_rest(&mut stream, &fake).await), 401);
    let _ = std::fs::remove_dir_all(dir);
}
