//! The proxy as a hostile client would try it: nothing is read or said for a
//! caller who has not proved who it is, every connection is reclaimed, and
//! the small doors (two Hosts, duplicate selectors, `*`, cookies, CORS) are
//! closed. Timing tests run on paused tokio time: the runtime jumps to the
//! next deadline whenever every task waits, so "closed after 10 s" is exact.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::soap::{XML, envelope, fuel};
use crate::support::*;

const KEY: &str = "inbound-key-0123456789";
const LOCAL_SECRET: &str = "local-secret-0123456789";

/// Two tenants behind inbound keys, the broker with a local secret for `acme`.
async fn keyed_pair() -> (Setup, FakeTenant) {
    let fake = start_fake().await;
    let beta = start_fake().await;
    let proxy = TestProxy::builder()
        .inbound_keys(&[KEY])
        .broker_client_secret("acme", LOCAL_SECRET)
        .broker_client_secret("beta", LOCAL_SECRET)
        .tenant(
            Tenant::new("acme", &fake)
                .default(true)
                .path_prefix("/acme"),
        )
        .tenant(Tenant::new("beta", &beta).path_prefix("/beta"))
        .start()
        .await;
    let s = Setup {
        fake,
        proxy,
        client: TestClient::new(),
    };
    (s, beta)
}

async fn local_token_for(s: &Setup, tenant: &str) -> String {
    let body = json!({"grant_type": "client_credentials", "client_id": tenant,
                      "client_secret": LOCAL_SECRET});
    let reply = s
        .client
        .post(
            &s.proxy,
            "/v2/token",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// No answer to a stranger names a tenant.
fn names_no_tenant(reply: &Reply) {
    let text = reply.text();
    assert!(
        !text.contains("acme") && !text.contains("beta"),
        "an unauthenticated caller learns tenant names: {text}"
    );
}

#[tokio::test]
async fn an_unauthenticated_soap_upload_is_refused_after_a_small_prefix_not_read_whole() {
    let (s, _beta) = keyed_pair().await;
    // An envelope whose Header never comes: 20 KiB of comment, then the
    // client keeps the body open. Only soap.preauth_limit (8 KiB) is read.
    let (mut tx, body) = channel_body();
    let request = request("POST", &s.proxy, "/Service.asmx", &XML, body);
    let pending = tokio::spawn({
        let client = s.client.clone();
        async move { client.fetch(request).await }
    });
    let start = format!(
        "<s:Envelope xmlns:s=\"{}\"><!--{}",
        crate::support::soap::SOAP11,
        "x".repeat(20 * 1024)
    );
    tx.send_data(start.into()).await.expect("the proxy reads");
    let reply = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered while the body is still open, not after reading it all")
        .expect("client task");
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some("inbound_key_required"));
    assert_eq!((s.fake.token_requests(), s.fake.soap_requests()), (0, 0));
    drop(tx);
}

#[tokio::test]
async fn routing_errors_never_speak_to_an_unauthenticated_caller() {
    let (s, _beta) = keyed_pair().await;
    let soap_unknown = s
        .client
        .post(
            &s.proxy,
            "/Service.asmx",
            &[XML[0], XML[1], ("x-sfmc-tenant", "nosuch")],
            envelope(""),
        )
        .await;
    assert_eq!(soap_unknown.status, 401, "{}", soap_unknown.text());
    names_no_tenant(&soap_unknown);
    let bogus_local = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[
                ("authorization", "Bearer sfmcproxy_bogus"),
                ("x-sfmc-tenant", "nosuch"),
            ],
        )
        .await;
    assert_eq!(bogus_local.status, 401, "{}", bogus_local.text());
    names_no_tenant(&bogus_local);
    let broker_unknown = s
        .client
        .post(
            &s.proxy,
            "/v2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            "grant_type=client_credentials&client_id=nosuch&client_secret=x",
        )
        .await;
    assert_eq!(broker_unknown.status, 401);
    names_no_tenant(&broker_unknown);
    // With the key, the same mistake is explained, tenants named.
    let keyed = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("x-proxy-key", KEY), ("x-sfmc-tenant", "nosuch")],
        )
        .await;
    assert_eq!(keyed.proxy_error(), Some("unknown_tenant"));
    assert!(keyed.text().contains("acme"), "{}", keyed.text());
}

#[tokio::test]
async fn a_local_token_in_fueloauth_still_proves_a_soap_caller_without_a_key() {
    let (s, _beta) = keyed_pair().await;
    let local = local_token_for(&s, "acme").await;
    let body = envelope(&format!("<s:Header>{}</s:Header>", fuel(&local)));
    let reply = s.client.post(&s.proxy, "/Service.asmx", &XML, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(s.fake.soap_requests(), 1);
}

#[tokio::test]
async fn a_local_token_for_one_tenant_is_never_served_as_another() {
    let (s, beta) = keyed_pair().await;
    let local = local_token_for(&s, "acme").await;
    let bearer = format!("Bearer {local}");
    let own = s
        .client
        .get(&s.proxy, "/acme/hub/v1/x", &[("authorization", &bearer)])
        .await;
    assert_eq!(own.status, 200, "its own tenant's prefix is fine");
    assert_eq!(own.json()["path"], "/hub/v1/x");
    let by_prefix = s
        .client
        .get(&s.proxy, "/beta/hub/v1/x", &[("authorization", &bearer)])
        .await;
    assert_eq!(by_prefix.status, 400, "{}", by_prefix.text());
    assert_eq!(by_prefix.proxy_error(), Some("bad_request"));
    let by_header = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("authorization", &bearer), ("x-sfmc-tenant", "beta")],
        )
        .await;
    assert_eq!(by_header.status, 400, "{}", by_header.text());
    assert_eq!(
        s.fake.rest_requests(),
        1,
        "only the call under acme's prefix"
    );
    assert_eq!(beta.rest_requests(), 0);
}

#[tokio::test]
async fn two_hosts_a_bad_port_duplicate_selectors_and_asterisk_targets_are_refused() {
    let s = setup_with_business_units(&["100", "200"]).await;
    let port = s.proxy.addr.port();
    let loopback = format!("127.0.0.1:{port}");
    let two_hosts = raw_exchange(
        s.proxy.addr,
        &format!("GET /hub/v1/x HTTP/1.1\r\nHost: {loopback}\r\nHost: evil.example\r\n\r\n"),
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    for host in ["127.0.0.1:0", "127.0.0.1:65536"] {
        let reply = s.client.get(&s.proxy, "/hub/v1/x", &[("host", host)]).await;
        assert_eq!(reply.status, 400, "{host}: {}", reply.text());
    }
    let duplicate_mid = raw_exchange(
        s.proxy.addr,
        &format!(
            "GET /hub/v1/x HTTP/1.1\r\nHost: {loopback}\r\nX-SFMC-Account-Id: 100\r\nX-SFMC-Account-Id: 200\r\n\r\n"
        ),
    )
    .await;
    assert!(duplicate_mid.starts_with("HTTP/1.1 400"), "{duplicate_mid}");
    let star = raw_exchange(
        s.proxy.addr,
        &format!("GET * HTTP/1.1\r\nHost: {loopback}\r\n\r\n"),
    )
    .await;
    assert!(star.starts_with("HTTP/1.1 400"), "{star}");
    let options_star = raw_exchange(
        s.proxy.addr,
        &format!("OPTIONS * HTTP/1.1\r\nHost: {loopback}\r\n\r\n"),
    )
    .await;
    assert!(options_star.starts_with("HTTP/1.1 200"), "{options_star}");
    assert_eq!(s.fake.rest_requests(), 0, "none of these reached SFMC");
}

#[tokio::test]
async fn cookies_stay_here_and_cors_is_answered_by_the_proxy() {
    let s = Setup::builder()
        .proxy(|p| p.allowed_origins(&["http://localhost:3000"]))
        .start()
        .await;
    let preflight = s
        .client
        .fetch(request(
            "OPTIONS",
            &s.proxy,
            "/hub/v1/x",
            &[
                ("origin", "http://localhost:3000"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            empty(),
        ))
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(
        (s.fake.token_requests(), s.fake.rest_requests()),
        (0, 0),
        "a preflight is never sent to SFMC with a real token"
    );
    let real = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[
                ("origin", "http://localhost:3000"),
                ("cookie", "session=browser-secret"),
            ],
        )
        .await;
    assert_eq!(real.status, 200);
    assert_eq!(
        real.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(
        real.headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("Origin")))
    );
    let seen = real.json();
    assert!(seen["headers"].get("cookie").is_none(), "{seen}");
    assert!(!real.text().contains("browser-secret"));
}

/// Writes `head` on a new connection and returns what comes back until close
/// or the end of the first response head.
async fn raw_exchange(addr: std::net::SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Reads until the proxy closes the connection; returns the bytes read.
async fn read_until_closed(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

/// A short head deadline; `server.idle_timeout` and `upstream.idle_timeout`
/// stay at their default, 60 s.
fn timeouts(proxy: ProxyBuilder) -> ProxyBuilder {
    proxy.header_read_timeout(Duration::from_secs(10))
}

#[tokio::test(start_paused = true)]
async fn silent_and_half_sent_connections_are_closed_at_the_header_deadline() {
    let s = Setup::builder().proxy(timeouts).start().await;
    let openings: [&[u8]; 4] = [
        b"",
        b"GET /hub/v1/x HT",
        b"PRI * HTTP/2.0\r\n",
        // A whole HTTP/2 preface and SETTINGS frame, then no request.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ];
    for opening in openings {
        let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
        stream.write_all(opening).await.expect("write");
        let started = Instant::now();
        read_until_closed(&mut stream).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
            "{:?}: closed after {waited:?}",
            String::from_utf8_lossy(opening)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    let s = Setup::builder().proxy(timeouts).start().await;
    let stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/_proxy/health", s.proxy.addr))
        .body(empty())
        .expect("request");
    let response = sender.send_request(request).await.expect("health answers");
    assert_eq!(response.status(), 200);
    drop(response);
    let idle_from = Instant::now();
    let _ = connection.await;
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_secs(59) && idle <= Duration::from_secs(61),
        "closed after {idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_is_cut_after_idle_timeout() {
    let s = Setup::builder().proxy(timeouts).start().await;
    let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    let head = format!(
        "POST /hub/v1/x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 1000\r\n\r\n0123456789",
        s.proxy.addr.port()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let waited = started.elapsed();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 400"), "{seen}");
    assert!(seen.contains("server.idle_timeout"), "{seen}");
    assert!(
        waited >= Duration::from_secs(59) && waited <= Duration::from_secs(61),
        "answered after {waited:?}"
    );
    assert_eq!(s.fake.rest_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_after_idle_timeout() {
    let s = Setup::builder().proxy(timeouts).start().await;
    let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    let size = 512 * 1024 * 1024u64;
    let head = format!(
        "GET /fake/download?bytes={size} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        s.proxy.addr.port()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // Read the head, then nothing: socket buffers fill and the proxy waits.
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("the head arrives");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // An hour passes on the paused clock; the proxy's 60 s deadline fires.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    // By now the proxy has given up on this client: what is left in the
    // buffers drains, then the connection ends far short of the body.
    let read = read_until_closed(&mut stream).await as u64;
    assert!(read < size / 2, "read {read} of {size}");
}

#[tokio::test(start_paused = true)]
async fn an_sfmc_body_that_stops_sending_is_cut_after_upstream_idle_timeout() {
    let s = Setup::builder().proxy(timeouts).start().await;
    let response = s
        .client
        .send(request("GET", &s.proxy, "/fake/gated", &[], empty()))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("a frame")
        .expect("data");
    assert_eq!(first.into_data().ok().as_deref(), Some(&b"first\n"[..]));
    let waiting = Instant::now();
    // SFMC never sends the rest: the client's response ends, truncated.
    let rest = http_body_util::BodyExt::collect(&mut body).await;
    assert!(
        rest.is_err(),
        "the truncated body is an error, not a clean end"
    );
    let waited = waiting.elapsed();
    assert!(
        waited >= Duration::from_secs(59) && waited <= Duration::from_secs(61),
        "cut after {waited:?}"
    );
}

#[tokio::test]
async fn when_connections_run_out_the_longest_idle_one_makes_room_for_a_probe() {
    // Real time with deadlines far away: only shedding can make room.
    let s = Setup::builder()
        .proxy(|p| {
            p.max_connections(2)
                .header_read_timeout(Duration::from_secs(3600))
        })
        .start()
        .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(s.proxy.addr).await.expect("connect"));
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        s.client.get(&s.proxy, "/_proxy/health", &[]),
    )
    .await
    .expect("a probe is served although max_connections silent sockets are open");
    assert_eq!(probe.status, 200);
    // The oldest silent socket was closed to make room.
    let closed = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut silent[0]))
        .await
        .expect("the longest-idle connection is closed");
    assert_eq!(closed, 0);
}

/// The server's first SETTINGS frame on an h2c connection, as (id, value) pairs.
async fn server_settings(addr: std::net::SocketAddr) -> Vec<(u16, u32)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    stream.write_all(preface).await.expect("write");
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.expect("a frame");
    assert_eq!(head[3], 0x4, "the server speaks first with SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("payload");
    payload
        .chunks_exact(6)
        .map(|e| {
            let id = u16::from_be_bytes([e[0], e[1]]);
            (id, u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
        })
        .collect()
}

#[tokio::test]
async fn http2_streams_windows_and_headers_per_connection_are_capped() {
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    let s = setup().await;
    let settings = server_settings(s.proxy.addr).await;
    let value = |id| settings.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
    assert_eq!(value(MAX_CONCURRENT_STREAMS), Some(100), "{settings:?}");
    assert_eq!(value(INITIAL_WINDOW_SIZE), Some(256 * 1024), "{settings:?}");
    assert_eq!(value(MAX_HEADER_LIST_SIZE), Some(64 * 1024), "{settings:?}");
    let custom = Setup::builder()
        .proxy(|p| p.max_concurrent_streams(3))
        .start()
        .await;
    let settings = server_settings(custom.proxy.addr).await;
    assert!(
        settings.contains(&(MAX_CONCURRENT_STREAMS, 3)),
        "{settings:?}"
    );
}

// Regressions from the attacker's review of this work (each failed before
// its fix; see the commit that added it).

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(start_paused = true)]
async fn a_zero_window_http2_client_is_cut_although_it_keeps_pinging() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&[KEY]).max_connections(1))
        .start()
        .await;
    let stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0])); // INITIAL_WINDOW_SIZE = 0
    wr.write_all(&hello).await.expect("preface");
    let mut buf = vec![0u8; 4096];
    let _ = rd.read(&mut buf).await.expect("the server's SETTINGS");
    // GET /hub/v1/x without a key: its 401 body can never be sent.
    let authority = format!("127.0.0.1:{}", s.proxy.addr.port());
    let mut block = vec![0x82, 0x86, 0x04, 9];
    block.extend_from_slice(b"/hub/v1/x");
    block.extend([0x01, u8::try_from(authority.len()).expect("short")]);
    block.extend_from_slice(authority.as_bytes());
    let mut request = h2_frame(0x4, 0x1, 0, &[]);
    request.extend(h2_frame(0x1, 0x5, 1, &block));
    wr.write_all(&request).await.expect("request");
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(50)).await;
            if wr.write_all(&h2_frame(0x6, 0, 0, &[0; 8])).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    while !matches!(rd.read(&mut buf).await, Ok(0) | Err(_)) {}
    let open_for = started.elapsed();
    assert!(
        open_for <= Duration::from_secs(61),
        "PINGs kept it open {open_for:?}"
    );
    pinger.abort();
    let probe = s.client.get(&s.proxy, "/_proxy/health", &[]).await;
    assert_eq!(probe.status, 200);
}

/// Sends `head`, then one byte of body every 50 s; returns how long until the
/// proxy answered or closed.
async fn trickle(addr: std::net::SocketAddr, head: String) -> (Duration, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.expect("head");
    let trickler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(50)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = rd.read(&mut buf).await.unwrap_or(0);
    trickler.abort();
    (
        started.elapsed(),
        String::from_utf8_lossy(&buf[..n]).into_owned(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_keyless_body_trickled_byte_by_byte_gets_only_the_head_deadline() {
    let s = Setup::builder()
        .proxy(|p| {
            p.inbound_keys(&[KEY])
                .header_read_timeout(Duration::from_secs(10))
        })
        .start()
        .await;
    let host = format!("127.0.0.1:{}", s.proxy.addr.port());
    let soap = format!(
        "POST /Service.asmx HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml\r\nContent-Length: 8000\r\n\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><!--"
    );
    let broker = format!(
        "POST /v2/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 8000\r\n\r\n{{"
    );
    for (head, status) in [(soap, "401"), (broker, "400")] {
        let (waited, answer) = trickle(s.proxy.addr, head).await;
        assert!(
            waited <= Duration::from_secs(11),
            "answered after {waited:?}"
        );
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    assert_eq!(s.fake.token_requests(), 0);
}

#[tokio::test]
async fn the_preauth_limit_is_kept_to_the_frame() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&[KEY]))
        .start()
        .await;
    let (mut tx, body) = channel_body();
    let request = request("POST", &s.proxy, "/Service.asmx", &XML, body);
    let client = s.client.clone();
    let pending = tokio::spawn(async move { client.fetch(request).await });
    let open = format!(
        "<s:Envelope xmlns:s=\"{}\"><!--",
        crate::support::soap::SOAP11
    );
    tx.send_data(open.clone().into()).await.expect("send");
    let mut sent = open.len();
    // 64-byte frames until the proxy answers: it must stop within a frame of 8 KiB.
    while !pending.is_finished() && sent < 64 * 1024 {
        if tx.send_data("x".repeat(64).into()).await.is_err() {
            break;
        }
        sent += 64;
        tokio::task::yield_now().await;
    }
    let reply = pending.await.expect("client task");
    assert_eq!(reply.status, 401);
    assert!(
        sent <= 8 * 1024 + 64 * 8,
        "read {sent} bytes of a keyless envelope"
    );
}

#[tokio::test]
async fn made_up_scopes_cannot_push_out_a_token_callers_hold() {
    let s = Setup::builder()
        .proxy(|p| {
            p.max_keys(4)
                .rate_burst(2)
                .rate_interval(Duration::from_secs(3600))
        })
        .start()
        .await;
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    for i in 0..8 {
        let scope = format!("junk_{i}");
        let _ = s
            .client
            .get(&s.proxy, "/hub/v1/x", &[("x-sfmc-scope", scope.as_str())])
            .await;
    }
    let again = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        s.fake.token_requests(),
        2,
        "the default token and one junk one"
    );
}

/// A process allowed fewer open files than `max_connections` (a launchd
/// agent's 256, a shell's 1024): silent sockets would exhaust descriptors
/// before the connection limit sheds any, and lock every client out. The
/// proxy says so at start and, when accept runs out of descriptors, closes
/// the connection idle the longest instead.
#[tokio::test]
async fn silent_sockets_beyond_the_open_files_limit_do_not_lock_clients_out() {
    use tokio::io::AsyncBufReadExt;
    let fake = start_fake().await;
    let listen: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let config = TestProxy::builder()
        .listen(listen)
        .tenant(Tenant::new("acme", &fake));
    let path = config_file("few-files", &config.render());
    // `ulimit -n` sets the hard limit too: the proxy cannot raise it.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" --config \"$1\" --log-format json serve")
        .arg(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("SFMC_PROXY_LISTEN")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut warned, mut addr) = (false, None);
    while addr.is_none() {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("a start-up line");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        warned |= event["message"]
            .as_str()
            .is_some_and(|m| m.contains("may open only 48 files"));
        addr = event["listen"].as_str().map(str::to_owned);
    }
    assert!(warned, "the low limit is said at start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = addr.unwrap_or_default();
    // Twice the limit in silent sockets, held open.
    let mut silent = Vec::new();
    for _ in 0..96 {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let probe = async {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream
            .write_all(
                b"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), probe)
        .await
        .expect("a probe is served although descriptors ran out");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(silent);
}
