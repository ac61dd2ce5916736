//! Idle HTTP/1.1 keep-alive connections are parked (taken back from hyper,
//! holding no buffers) and woken by their next bytes: the client sees the
//! same socket, the same answers, and the same keep-alive deadline. Paused
//! time: the proxy parks a connection idle for 250 ms.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::*;

/// Long enough for any connection waiting for its next request to be parked.
const PARKED: Duration = Duration::from_secs(2);

fn health(s: &Setup) -> String {
    format!(
        "GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        s.proxy.addr.port()
    )
}

fn forwarded(s: &Setup, n: usize) -> String {
    format!(
        "GET /hub/v1/x?n={n} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        s.proxy.addr.port()
    )
}

/// One response read to its end (Content-Length or chunked): its status and
/// body. `pending` keeps what was read past it (a pipelined next answer).
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a response head: {pending:?}");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("status");
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|n| n.trim().parse::<usize>().expect("length"));
    pending.drain(..head_end);
    let mut body = Vec::new();
    match length {
        Some(length) => {
            while pending.len() < length {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed inside a body");
                pending.extend_from_slice(&buf[..n]);
            }
            body.extend(pending.drain(..length));
        }
        None => loop {
            // Chunked: size line, data, CRLF; a zero size ends it.
            let line_end = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed inside a chunked body");
                pending.extend_from_slice(&buf[..n]);
            };
            let size = String::from_utf8_lossy(&pending[..line_end]);
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            while pending.len() < line_end + 2 + size + 2 {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed inside a chunk");
                pending.extend_from_slice(&buf[..n]);
            }
            body.extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
            pending.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        },
    }
    (status, body)
}

/// A new connection that has had one request answered, and what was read
/// past its answer.
async fn served_once(s: &Setup) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    // Each write its own segment at once: no Nagle wait for an ACK, which
    // the kernel sends in real time while the paused clock races ahead.
    stream.set_nodelay(true).expect("nodelay");
    let mut pending = Vec::new();
    stream.write_all(health(s).as_bytes()).await.expect("write");
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    (stream, pending)
}

async fn parked_connections(s: &Setup) -> u64 {
    let metrics = s.client.get(&s.proxy, "/_proxy/metrics", &[]).await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("sfmc_proxy_client_connections_parked "))
        .unwrap_or_else(|| panic!("the parked gauge is exported: {metrics}"))
        .parse()
        .expect("a number")
}

/// Reads until the proxy closes the connection.
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_parked_and_serves_its_next_requests() {
    let s = Setup::builder().start().await;
    let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    let mut pending = Vec::new();
    stream
        .write_all(forwarded(&s, 1).as_bytes())
        .await
        .expect("write");
    let (status, first) = read_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));

    tokio::time::sleep(PARKED).await;
    assert_eq!(parked_connections(&s).await, 1, "idle, it is parked");

    // Woken by its next bytes: two pipelined requests, answered in order.
    let two = format!("{}{}", forwarded(&s, 2), health(&s));
    stream.write_all(two.as_bytes()).await.expect("write");
    let (status, second) = read_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&second).expect("the fake's echo");
    assert_eq!(
        seen["query"], "n=2",
        "the second request reached SFMC whole"
    );
    let (status, _) = read_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200, "the pipelined health answer");
    assert!(pending.is_empty());
    assert_eq!(s.fake.rest_requests(), 2);

    tokio::time::sleep(PARKED).await;
    assert_eq!(parked_connections(&s).await, 1, "parked again");
    drop(stream);
    tokio::time::sleep(PARKED).await;
    assert_eq!(parked_connections(&s).await, 0, "a closed client is let go");
}

#[tokio::test(start_paused = true)]
async fn a_request_head_half_sent_around_parking_is_served_whole() {
    let s = Setup::builder().start().await;
    let head = forwarded(&s, 7);
    let (early, late) = head.split_at(20);
    // Half a head before the connection is parked (hyper has read it), and
    // half a head while it is parked (it wakes it).
    for before_parking in [true, false] {
        let (mut stream, mut pending) = served_once(&s).await;
        if !before_parking {
            tokio::time::sleep(PARKED).await;
        }
        stream.write_all(early.as_bytes()).await.expect("write");
        tokio::time::sleep(PARKED).await;
        stream.write_all(late.as_bytes()).await.expect("write");
        let (status, body) = read_response(&mut stream, &mut pending).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("the fake's echo");
        assert_eq!(seen["query"], "n=7");
    }
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_keeps_the_keep_alive_head_deadline() {
    let s = Setup::builder()
        .proxy(|p| p.header_read_timeout(Duration::from_secs(10)))
        .start()
        .await;
    // Silent after its response, or a head begun and never finished (before
    // parking, or while parked): closed `header_read_timeout` after the
    // response, however often it was woken.
    for opening in [None, Some(0), Some(3)] {
        let (mut stream, _) = served_once(&s).await;
        let answered = Instant::now();
        if let Some(after) = opening {
            tokio::time::sleep(Duration::from_secs(after)).await;
            stream.write_all(b"GET /hub/v1/x HT").await.expect("write");
        }
        closed(&mut stream).await;
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
            "{opening:?}: closed {waited:?} after the response"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn parked_connections_are_shed_for_newcomers_and_closed_at_shutdown() {
    let s = Setup::builder()
        .proxy(|p| {
            p.max_connections(3)
                .header_read_timeout(Duration::from_secs(3600))
        })
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
        stream
            .write_all(health(&s).as_bytes())
            .await
            .expect("write");
        assert_eq!(read_response(&mut stream, &mut Vec::new()).await.0, 200);
        held.push(stream);
        tokio::time::sleep(PARKED).await;
    }
    // Full: the longest-idle parked connection makes room for a probe.
    let probe = s.client.get(&s.proxy, "/_proxy/health", &[]).await;
    assert_eq!(probe.status, 200);
    tokio::time::timeout(Duration::from_secs(1), closed(&mut held[0]))
        .await
        .expect("the longest-idle connection is closed");
    // Shutting down closes parked connections at once.
    let Setup { proxy, .. } = s;
    drop(proxy);
    for stream in &mut held[1..] {
        tokio::time::timeout(Duration::from_secs(1), closed(stream))
            .await
            .expect("closed at shutdown");
    }
}

/// A proxy that streams every request body to SFMC as it arrives (none is
/// held for a replay), so SFMC can answer one before it is all sent.
async fn streaming_uploads() -> Setup {
    Setup::builder()
        .proxy(|p| p.replay_body_limit(0))
        .start()
        .await
}

/// An upload that SFMC answers before it is all sent, and keeps reading:
/// its head and first bytes, then (`rest`) the remainder of the body, sent
/// once the connection has looked idle long enough to be parked.
fn early_answered_upload(s: &Setup, connection: &str, rest: &str) -> (String, String) {
    let first = "{\"part\": 1}";
    let head = format!(
        "POST /fake/respond?drain HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n{first}",
        s.proxy.addr.port(),
        first.len() + rest.len(),
    );
    (head, rest.to_owned())
}

#[tokio::test(start_paused = true)]
async fn an_upload_answered_early_keeps_its_connection_until_it_is_read() {
    let s = streaming_uploads().await;
    let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (head, rest) = early_answered_upload(&s, "", " and the rest of the body");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    let (status, body) = read_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Answered, but hyper is still reading the body: not idle, not parked.
    tokio::time::sleep(PARKED).await;
    assert_eq!(
        parked_connections(&s).await,
        0,
        "mid-body, it is not parked"
    );
    stream.write_all(rest.as_bytes()).await.expect("write");
    // The body read, the connection is kept alive, and then parked.
    stream
        .write_all(health(&s).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    tokio::time::sleep(PARKED).await;
    assert_eq!(
        parked_connections(&s).await,
        1,
        "idle at last, it is parked"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rest_of_an_upload_is_never_read_as_a_request() {
    let s = streaming_uploads().await;
    // A body whose bytes look like a request of their own, on a connection
    // the client asked to close: after the answer, the only way to read
    // them is as the body they are.
    let smuggled = health(&s);
    for connection in ["Connection: close\r\n", ""] {
        let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (head, rest) = early_answered_upload(&s, connection, &smuggled);
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut pending = Vec::new();
        assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
        tokio::time::sleep(PARKED).await;
        stream.write_all(rest.as_bytes()).await.expect("write");
        if connection.is_empty() {
            // Kept alive: the next bytes are a request of their own.
            stream
                .write_all(forwarded(&s, 3).as_bytes())
                .await
                .expect("write");
            let (status, body) = read_response(&mut stream, &mut pending).await;
            assert_eq!(status, 200);
            let seen: serde_json::Value = serde_json::from_slice(&body).expect("the fake's echo");
            assert_eq!(
                seen["query"], "n=3",
                "the answer is to the real next request"
            );
            drop(stream.shutdown().await);
        }
        let mut after = Vec::new();
        stream.read_to_end(&mut after).await.expect("read");
        pending.extend(after);
        assert!(
            pending.is_empty(),
            "{connection:?}: nothing but the answers: {}",
            String::from_utf8_lossy(&pending)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_all_of_the_last_response() {
    let s = Setup::builder().start().await;
    let length = 4_000_000;
    for (version, connection) in [("1.1", "Connection: close\r\n"), ("1.0", "")] {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // A small window, so the proxy's writes wait for the reader.
        socket.set_recv_buffer_size(16 * 1024).expect("buffer");
        let mut stream = socket.connect(s.proxy.addr).await.expect("connect");
        let request = format!(
            "GET /fake/download?bytes={length} HTTP/{version}\r\nHost: 127.0.0.1:{}\r\n{connection}\r\n",
            s.proxy.addr.port()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        // Reads a little at a time, letting the proxy fill the socket again
        // before each read (paused time: the wait ends when all else waits),
        // so its last bytes are still in its buffers when the body ends.
        let mut received = Vec::with_capacity(length + 1024);
        let mut buf = [0u8; 16 * 1024];
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        let head_end = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        assert_eq!(
            received.len() - head_end,
            length,
            "HTTP/{version}: the whole body, then the close"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_chunked_upload_answered_early_is_parked_once_it_is_read() {
    let s = streaming_uploads().await;
    // Its end with trailers or without. (hyper hands trailers over only
    // once the next request head has arrived; until then the body is not
    // read, and the connection is not parked.)
    for end in ["0\r\n\r\n", "0\r\nX-Checksum: 1\r\n\r\n"] {
        let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let head = format!(
            "POST /fake/respond?drain HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            s.proxy.addr.port()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut pending = Vec::new();
        assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
        tokio::time::sleep(PARKED).await;
        assert_eq!(
            parked_connections(&s).await,
            0,
            "mid-body, it is not parked"
        );
        let rest = format!("4\r\nlast\r\n{end}{}", health(&s));
        stream.write_all(rest.as_bytes()).await.expect("write");
        assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
        tokio::time::sleep(PARKED).await;
        assert_eq!(
            parked_connections(&s).await,
            1,
            "{end:?}: read, it is parked"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_upload_answered_early_is_not_shed_while_it_arrives() {
    let s = Setup::builder()
        .proxy(|p| {
            p.max_connections(2)
                .replay_body_limit(0)
                .header_read_timeout(Duration::from_secs(3600))
        })
        .start()
        .await;
    let mut uploading = TcpStream::connect(s.proxy.addr).await.expect("connect");
    uploading.set_nodelay(true).expect("nodelay");
    let (head, rest) = early_answered_upload(&s, "", " and the rest of the body");
    uploading.write_all(head.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut uploading, &mut pending).await.0, 200);
    tokio::time::sleep(PARKED).await;
    // Answered longer ago than the idle one was, but its body still arrives:
    // the idle connection makes room for the newcomer, not the upload.
    let (mut idle, _) = served_once(&s).await;
    tokio::time::sleep(PARKED).await;
    let probe = s.client.get(&s.proxy, "/_proxy/health", &[]).await;
    assert_eq!(probe.status, 200);
    tokio::time::timeout(Duration::from_secs(1), closed(&mut idle))
        .await
        .expect("the idle connection is closed");
    uploading.write_all(rest.as_bytes()).await.expect("write");
    uploading
        .write_all(health(&s).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut uploading, &mut pending).await.0, 200);
}
