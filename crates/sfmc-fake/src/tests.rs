//! The fake on its own, driven by a plain HTTP client: tokens, the echo, the
//! `/fake/*` helpers, TLS and the transport counters.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::auth::parse_token_body;
use crate::{
    AuthFailure, CONNECTION_HEADER, DEFAULT_SCOPE, FakeBody, FakeConfig, FakeTenant,
    InstanceUrlForm, NOT_AUTHORIZED, query_pairs,
};

/// A whole response: status, headers, body.
struct Got(u16, HeaderMap, Bytes);

impl Got {
    async fn read(response: Response<Incoming>) -> Got {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Got(parts.status.as_u16(), parts.headers, body)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.2).expect("JSON body")
    }
}

fn client(h2: bool) -> Client<HttpConnector, FakeBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http()
}

fn full(body: &str) -> FakeBody {
    Full::new(Bytes::from(body.to_owned())).boxed()
}

fn req(
    fake: &FakeTenant,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: FakeBody,
) -> Request<FakeBody> {
    let uri = format!("http://{}{target}", fake.addr());
    let builder = headers
        .iter()
        .fold(Request::builder().method(method).uri(uri), |b, h| {
            b.header(h.0, h.1)
        });
    builder.body(body).expect("request")
}

async fn fetch(req: Request<FakeBody>) -> Got {
    Got::read(client(false).request(req).await.expect("response")).await
}

async fn get(fake: &FakeTenant, target: &str, auth: &str) -> Got {
    fetch(req(
        fake,
        "GET",
        target,
        &[("authorization", auth)],
        full(""),
    ))
    .await
}

async fn post_token(fake: &FakeTenant, content_type: &str, body: &str) -> Got {
    let headers = [("content-type", content_type)];
    fetch(req(fake, "POST", "/v2/token", &headers, full(body))).await
}

fn creds() -> Value {
    let (id, secret) = ("fake-client-id", "fake-client-secret");
    json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret})
}

async fn token(fake: &FakeTenant, body: &Value) -> Got {
    post_token(fake, "application/json", &body.to_string()).await
}

async fn bearer(fake: &FakeTenant) -> String {
    let reply = token(fake, &creds()).await.json();
    format!("Bearer {}", reply["access_token"].as_str().expect("token"))
}

async fn start(config: FakeConfig) -> FakeTenant {
    FakeTenant::start(config).await.expect("start")
}

#[tokio::test]
async fn json_and_form_token_requests_get_sfmc_shaped_tokens() {
    let fake = start(FakeConfig::default()).await;
    let reply = token(&fake, &creds()).await.json();
    let access = reply["access_token"].as_str().unwrap_or_default();
    assert!(access.starts_with("fake-1-") && (100..=512).contains(&access.len()));
    let url = fake.auth_url();
    let expected = json!({"access_token": access, "token_type": "Bearer", "expires_in": 1080,
        "scope": DEFAULT_SCOPE, "rest_instance_url": url, "soap_instance_url": url});
    assert_eq!(reply, expected);
    assert_eq!(fake.last_token_request(), Some(creds()));
    assert_eq!(
        fake.last_token_content_type().as_deref(),
        Some("application/json")
    );

    let form = "grant_type=client_credentials&client_id=fake-client-id&client_secret=fake%2Dclient%2dsecret&account_id=200&scope=email_read+data_extensions_read";
    let reply = post_token(
        &fake,
        "application/x-www-form-urlencoded; charset=utf-8",
        form,
    )
    .await;
    assert_eq!(reply.json()["scope"], "email_read data_extensions_read");
    let recorded = fake.last_token_request().expect("recorded");
    assert_eq!(recorded["client_secret"], "fake-client-secret");
    let auth = format!(
        "Bearer {}",
        reply.json()["access_token"].as_str().unwrap_or_default()
    );
    let echo = get(&fake, "/x", &auth).await.json();
    assert_eq!(
        (&echo["account_id"], &echo["token_number"]),
        (&json!("200"), &json!(2))
    );
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn bad_credentials_grant_mid_body_or_method_get_sfmc_errors() {
    let fake = start(FakeConfig::default()).await;
    let cases = [
        ("client_secret", "wrong", 401, "invalid_client"),
        ("client_id", "other", 401, "invalid_client"),
        ("grant_type", "password", 400, "unsupported_grant_type"),
        ("account_id", "12a", 401, "unauthorized_client"),
    ];
    for (field, value, status, error) in cases {
        let mut body = creds();
        body[field] = json!(value);
        let got = token(&fake, &body).await;
        let reply = got.json();
        assert_eq!((got.0, &reply["error"]), (status, &json!(error)), "{field}");
        assert!(reply["error_description"].is_string() && reply["error_uri"].is_string());
    }
    assert_eq!(post_token(&fake, "application/json", "{no").await.0, 400);
    let got = get(&fake, "/v2/token", "").await;
    assert_eq!(got.0, 405);
    assert_eq!(got.1["allow"], "POST");
    assert_eq!((fake.token_requests(), fake.rest_requests()), (5, 0));
}

#[tokio::test]
async fn echo_reports_path_query_headers_and_body_byte_exact() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let target = "/data/v1/customobjectdata/key/My%20DE/rowset?$filter=Email%20eq%20'a@b.c'&x=a+b";
    let headers = [
        ("authorization", auth.as_str()),
        ("x-multi", "a"),
        ("X-Multi", "b"),
    ];
    let got = fetch(req(&fake, "PATCH", target, &headers, full("hello"))).await;
    let echo = got.json();
    assert_eq!((got.0, &echo["method"]), (200, &json!("PATCH")));
    assert_eq!(echo["path"], "/data/v1/customobjectdata/key/My%20DE/rowset");
    assert_eq!(echo["query"], "$filter=Email%20eq%20'a@b.c'&x=a+b");
    let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert_eq!(
        (&echo["body_len"], &echo["body_sha256"]),
        (&json!(5), &json!(sha))
    );
    assert_eq!(echo["headers"]["x-multi"], "a, b");
    assert_eq!(echo["headers"]["authorization"], "Bearer <fake token #1>");
    assert!(
        !echo.to_string().contains(&auth[7..]),
        "the token is never echoed"
    );
    assert_eq!(
        (&echo["account_id"], &echo["token_number"]),
        (&json!("100"), &json!(1))
    );
    assert_eq!(echo["scope"], DEFAULT_SCOPE);
    for path in ["//hub/v1/x", "/hub/v1/dataevents/key:MyDE/rowset"] {
        let echo = get(&fake, path, &auth).await.json();
        assert_eq!(
            (&echo["path"], &echo["query"]),
            (&json!(path), &Value::Null)
        );
    }
    let h2 = req(
        &fake,
        "GET",
        "/h2?a=%20",
        &[("authorization", &auth)],
        full(""),
    );
    let response = client(true).request(h2).await.expect("h2 response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let echo = Got::read(response).await.json();
    assert_eq!(
        (&echo["path"], &echo["query"]),
        (&json!("/h2"), &json!("a=%20"))
    );
}

#[tokio::test(start_paused = true)]
async fn missing_unknown_revoked_and_expired_tokens_get_sfmcs_401() {
    let fake = start(FakeConfig {
        expires_in: 60,
        ..FakeConfig::default()
    })
    .await;
    let (first, target) = (bearer(&fake).await, "/fake/download?bytes=1");
    assert_eq!(get(&fake, target, &first).await.0, 200);
    fake.revoke_all_tokens();
    for auth in [first.as_str(), "Bearer fake-1-unknown", "Basic abc", ""] {
        let got = get(&fake, target, auth).await;
        assert_eq!(
            (got.0, &got.2),
            (401, &Bytes::from_static(NOT_AUTHORIZED.as_bytes()))
        );
        assert_eq!(got.1["content-type"], "application/json");
    }
    let second = bearer(&fake).await;
    assert_eq!(get(&fake, target, &second).await.0, 200);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(get(&fake, target, &second).await.0, 401);
    assert_eq!(fake.rest_requests(), 7);
}

#[tokio::test]
async fn download_streams_the_pattern_with_its_length() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let got = get(&fake, "/fake/download?bytes=200003", &auth).await;
    assert_eq!((got.0, got.2.len()), (200, 200_003));
    assert_eq!(got.1["content-length"], "200003");
    assert!(
        got.2
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i % 251)
    );
    assert_eq!(get(&fake, "/fake/download?bytes=0", &auth).await.2.len(), 0);
    assert_eq!(get(&fake, "/fake/download?bytes=x", &auth).await.0, 400);
}

#[tokio::test]
async fn instance_urls_take_the_three_forms() {
    use InstanceUrlForm::{Bare, Https, SlashSuffixed};
    let forms = [
        (Bare, "", ""),
        (Https, "http://", ""),
        (SlashSuffixed, "http://", "/"),
    ];
    for (instance_url_form, scheme, slash) in forms {
        let fake = start(FakeConfig {
            instance_url_form,
            ..FakeConfig::default()
        })
        .await;
        let port = fake.addr().port();
        let reply = token(&fake, &creds()).await.json();
        assert_eq!(
            reply["rest_instance_url"],
            format!("{scheme}127.0.0.1:{port}{slash}")
        );
        assert_eq!(reply["soap_instance_url"], reply["rest_instance_url"]);
        assert_eq!(fake.auth_url(), format!("http://127.0.0.1:{port}/"));
    }
}

#[tokio::test]
async fn gated_response_and_gated_upload_wait_for_the_test() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let auth = [("authorization", auth.as_str())];
    let gated = req(&fake, "GET", "/fake/gated", &auth, full(""));
    let mut body = client(false)
        .request(gated)
        .await
        .expect("response")
        .into_body();
    let first = body.frame().await.expect("frame").expect("ok").into_data();
    assert_eq!(first.expect("data"), "first\n");
    let wait = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
    assert!(wait.is_err(), "the second chunk waits for release_gate");
    fake.release_gate();
    assert_eq!(body.collect().await.expect("rest").to_bytes(), "second\n");

    let (mut tx, upload) = Channel::<Bytes, Infallible>::new(1);
    let upload = req(&fake, "POST", "/fake/upload-gated", &auth, upload.boxed());
    let pending = tokio::spawn(client(false).request(upload));
    tx.send_data(Bytes::from_static(b"part one;"))
        .await
        .expect("send");
    fake.upload_started().await;
    tx.send_data(Bytes::from_static(b"part two"))
        .await
        .expect("send");
    drop(tx);
    let response = pending.await.expect("task").expect("response");
    assert_eq!(Got::read(response).await.json()["body_len"], 17);
}

#[tokio::test]
async fn respond_uses_the_given_status_and_headers() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let target = "/fake/respond?status=429&header=Retry-After:30&header=X-Two:a&header=X-Two:b&header=Keep-Alive:timeout%3D5&header=Content-Type:text/plain";
    let got = get(&fake, target, &auth).await;
    assert_eq!((got.0, got.json()), (429, json!({"status": 429})));
    assert_eq!(got.1["retry-after"], "30");
    assert_eq!(got.1["keep-alive"], "timeout=5");
    assert_eq!(
        got.1.get_all("x-two").iter().collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(got.1.get_all("content-type").iter().count(), 1);
    assert_eq!(got.1["content-type"], "text/plain");
    assert_eq!(get(&fake, "/fake/respond?status=abc", &auth).await.0, 400);
}

#[tokio::test]
async fn token_failures_reject_fail_or_hang_until_shutdown() {
    let fake = start(FakeConfig::default()).await;
    let (error, description) = ("invalid_request".to_owned(), "no".to_owned());
    let reject = AuthFailure::Reject {
        status: 400,
        error,
        description,
    };
    fake.set_auth_failure(Some(reject));
    let got = token(&fake, &creds()).await;
    assert_eq!(
        (got.0, &got.json()["error_description"]),
        (400, &json!("no"))
    );
    fake.set_auth_failure(Some(AuthFailure::ServerError));
    let got = token(&fake, &creds()).await;
    assert_eq!(got.0, 500);
    assert_eq!(got.1["content-type"], "text/html");
    fake.set_auth_failure(Some(AuthFailure::Hang));
    let hung = req(&fake, "POST", "/v2/token", &[], full("{}"));
    let pending = tokio::spawn(client(false).request(hung));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "hangs");
    assert_eq!(fake.token_requests(), 3);
    fake.shutdown().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), pending).await;
    assert!(ended.is_ok(), "shutdown ends the hung request");
}

#[tokio::test]
async fn tls_serves_https_urls_and_negotiates_h2() {
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let server = rustls::ServerConfig::builder().with_no_client_auth();
    let server = server.with_single_cert(vec![cert.cert.der().clone()], key);
    let tls = Some(Arc::new(server.expect("server config")));
    let fake = start(FakeConfig {
        tls,
        instance_host: "localhost".into(),
        ..FakeConfig::default()
    })
    .await;
    let url = format!("https://localhost:{}/", fake.addr().port());
    assert_eq!(fake.auth_url(), url);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut client = client.with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(fake.addr()).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h2 = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls));
    let (mut sender, connection) = h2.await.expect("h2 handshake");
    tokio::spawn(connection);
    let uri = format!("{url}v2/token");
    let token = Request::post(uri).header("content-type", "application/json");
    let token = token.body(full(&creds().to_string())).expect("request");
    let got = Got::read(sender.send_request(token).await.expect("response")).await;
    assert_eq!(got.json()["rest_instance_url"], url);
}

#[test]
fn decoding_handles_escapes_plus_and_malformed_input() {
    let form = |value: &str| {
        let body = format!("v={value}");
        parse_token_body(body.as_bytes(), Some("application/x-www-form-urlencoded"))["v"].clone()
    };
    let query = |value: &str| query_pairs(Some(&format!("v={value}")))[0].1.clone();
    assert_eq!(form("a+b%20c%2fd%E2%82%AC"), "a b c/d€");
    assert_eq!(query("a+b%3D"), "a+b=");
    assert_eq!(form("100%%zz%4"), "100%%zz%4");
}

mod soap;

#[tokio::test]
async fn instance_responses_name_their_connection_and_its_close_is_seen() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let auth = [("authorization", auth.as_str())];
    // One client, so one pooled connection for sequential requests.
    let client = client(false);
    let mut numbers = Vec::new();
    for target in ["/a", "/b", "/fake/respond?header=Connection:close", "/c"] {
        let response = client.request(req(&fake, "GET", target, &auth, full("")));
        let got = Got::read(response.await.expect("response")).await;
        assert_eq!(got.0, 200, "{target}");
        let number = got.1[CONNECTION_HEADER].to_str().expect("ascii");
        numbers.push(number.parse::<u64>().expect("a number"));
        if !target.starts_with("/fake/") {
            assert_eq!(got.json()["connection"], numbers[numbers.len() - 1]);
        }
    }
    assert_eq!(numbers[0], numbers[1], "kept alive");
    assert_eq!(numbers[1], numbers[2], "kept alive");
    assert_ne!(numbers[2], numbers[3], "closed after Connection: close");
    fake.connection_closed(numbers[2]).await;
    assert!(fake.connections_opened() >= numbers[3]);
}

#[tokio::test]
async fn download_may_be_chunked_and_its_end_is_counted_even_when_cut_off() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let got = get(&fake, "/fake/download?bytes=200003&chunked", &auth).await;
    assert_eq!((got.0, got.2.len()), (200, 200_003));
    assert!(got.1.get("content-length").is_none(), "{:?}", got.1);
    assert_eq!(got.1["transfer-encoding"], "chunked");
    assert!(
        got.2
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i % 251)
    );
    fake.downloads_ended(1).await;

    let auth = [("authorization", auth.as_str())];
    let large = req(
        &fake,
        "GET",
        "/fake/download?bytes=1000000000",
        &auth,
        full(""),
    );
    let response = client(false).request(large).await.expect("response");
    let mut body = response.into_body();
    body.frame().await.expect("frame").expect("ok");
    drop(body);
    // Ends long before a gigabyte could have been sent.
    fake.downloads_ended(2).await;
}

#[tokio::test]
async fn respond_answers_any_method_without_reading_the_body() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let auth = [("authorization", auth.as_str())];
    // An upload that never ends: only an answer that does not wait for it arrives.
    let (mut tx, upload) = Channel::<Bytes, Infallible>::new(1);
    let upload = req(
        &fake,
        "POST",
        "/fake/respond?status=413",
        &auth,
        upload.boxed(),
    );
    let pending = tokio::spawn(client(false).request(upload));
    tx.send_data(Bytes::from_static(b"part one"))
        .await
        .expect("send");
    let response = pending.await.expect("task").expect("response");
    assert_eq!(response.status(), 413);
    assert!(response.headers().contains_key(CONNECTION_HEADER));
    drop(tx);
}

#[tokio::test]
async fn close_connection_ends_an_idle_kept_alive_connection() {
    let fake = start(FakeConfig::default()).await;
    let auth = bearer(&fake).await;
    let auth = [("authorization", auth.as_str())];
    let client = client(false);
    let echo = || async {
        let response = client.request(req(&fake, "GET", "/x", &auth, full("")));
        let got = Got::read(response.await.expect("response")).await;
        got.json()["connection"].as_u64().expect("a number")
    };
    let idle = echo().await;
    fake.close_connection(idle);
    fake.connection_closed(idle).await;
    assert_ne!(echo().await, idle, "a new connection after the close");
}
