//! The client against a scripted server on an in-memory pipe: the bytes it
//! writes, and what it makes of the bytes it reads.

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

type Fixed = Full<Bytes>;

/// A body of unknown length made of these frames, all ready at once.
struct Frames(std::collections::VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

fn connection() -> (Connection, DuplexStream) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    (Connection::new(client, &Gauge::default()), server)
}

/// Reads from the server's end until what arrived ends with `end`.
async fn read_until(server: &mut DuplexStream, end: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.ends_with(end) {
        let n = server.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "the client closed early; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

fn request(method: &str, uri: &str, body: &'static str) -> Request<Fixed> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "mc.example")
        .body(Fixed::from(body))
        .expect("request")
}

/// Sends `request`, the server reading it up to `end` and answering
/// `answer`; the bytes the server read, and the response with its body
/// read whole (or why it failed).
async fn exchange(
    request: Request<Fixed>,
    end: &'static [u8],
    answer: &'static [u8],
) -> (
    Vec<u8>,
    Result<(Response<Bytes>, Option<http::HeaderMap>, bool), String>,
) {
    let (connection, mut server) = connection();
    let server = tokio::spawn(async move {
        let seen = read_until(&mut server, end).await;
        server.write_all(answer).await.expect("answer");
        // Held open: only a close the answer asks for counts.
        (seen, server)
    });
    let result = match connection.send(request).await {
        Ok(response) => {
            let (parts, mut body) = response.into_parts();
            let mut data = Vec::new();
            let mut trailers = None;
            let mut failed = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(piece) => data.extend_from_slice(&piece),
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    },
                    Err(error) => {
                        failed = Some(error.to_string());
                        break;
                    }
                }
            }
            match failed {
                Some(error) => Err(error),
                None => Ok((
                    Response::from_parts(parts, Bytes::from(data)),
                    trailers,
                    matches!(body.take_idle(), Some(AfterBody::Idle(_))),
                )),
            }
        }
        Err(failure) => Err(failure.message),
    };
    let (seen, _server) = server.await.expect("server");
    (seen, result)
}

#[tokio::test]
async fn the_request_goes_out_byte_for_byte_and_the_answer_comes_back_whole() {
    let (seen, result) = exchange(
        request("POST", "/hub/v1/x?a=%2F&b=%zz", "hello"),
        b"hello",
        b"HTTP/1.1 201 Made\r\nContent-Length: 3\r\nX-Odd:  spaced \r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\nabc",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "POST /hub/v1/x?a=%2F&b=%zz HTTP/1.1\r\nhost: mc.example\r\ncontent-length: 5\r\n\r\nhello"
    );
    let (response, trailers, reusable) = result.expect("answered");
    assert_eq!(response.status(), 201);
    let reason = response.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(
        reason.map(|r| r.as_bytes()),
        Some(&b"Made"[..]),
        "SFMC's words kept"
    );
    assert_eq!(response.headers()["x-odd"], "spaced");
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a", "b"]);
    assert_eq!(response.body(), "abc");
    assert!(trailers.is_none());
    assert!(reusable, "length-delimited, HTTP/1.1, no close");
}

/// A client's trailers could carry what the head may not (credentials, the
/// proxy's control headers, framing): they are not sent, as hyper, given
/// no `Trailer` header (hop-by-hop, stripped), sent none either.
#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked_and_its_trailers_stay_behind() {
    let (connection, mut server) = connection();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sum", http::HeaderValue::from_static("9"));
    trailers.insert(
        "authorization",
        http::HeaderValue::from_static("Bearer smuggled"),
    );
    let body = Frames(
        [
            http_body::Frame::data(Bytes::from("abc")),
            http_body::Frame::data(Bytes::new()),
            http_body::Frame::data(Bytes::from("0123456789abcdef!")),
            http_body::Frame::trailers(trailers),
        ]
        .into(),
    );
    let request = Request::builder()
        .method("PUT")
        .uri("/x")
        .body(body)
        .expect("request");
    let server = tokio::spawn(async move {
        // The last chunk, then whatever trailer section follows it.
        let mut seen = Vec::new();
        let last_chunk = |seen: &[u8]| seen.windows(5).any(|w| w == b"\r\n0\r\n");
        while !(last_chunk(&seen) && seen.ends_with(b"\r\n\r\n")) {
            seen.extend(read_until(&mut server, b"\n").await);
        }
        server
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .expect("answer");
        (seen, server)
    });
    let response = connection.send(request).await.expect("answered");
    assert_eq!(response.status(), 204);
    let mut body = response.into_body();
    assert!(body.is_end_stream(), "a 204 has no body");
    assert!(matches!(body.take_idle(), Some(AfterBody::Idle(_))));
    let (seen, _server) = server.await.expect("server");
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "PUT /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n11\r\n0123456789abcdef!\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn each_framing_ends_where_it_says_and_only_a_clean_end_keeps_the_connection() {
    let get = || request("GET", "/", "");
    let end = b"\r\n\r\n";
    // Chunked, with trailers: kept.
    let (_, result) = exchange(
        get(),
        end,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\nx-t: 1\r\n\r\n",
    )
    .await;
    let (response, trailers, reusable) = result.expect("chunked");
    assert_eq!(response.body(), "wiki");
    assert_eq!(trailers.expect("trailers")["x-t"], "1");
    assert!(reusable);
    // Both framings: chunked wins, Content-Length goes, the connection too.
    let (_, result) = exchange(
        get(),
        end,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let (response, _, reusable) = result.expect("chunked over length");
    assert_eq!(response.body(), "ok");
    assert!(!response.headers().contains_key("content-length"));
    assert!(!reusable, "a possible smuggling attempt");
    // Connection: close, HTTP/1.0, bytes after the body: not kept.
    for answer in [
        &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ] {
        let (_, result) = exchange(get(), end, answer).await;
        let (response, _, reusable) = result.expect("answered");
        assert_eq!(response.body(), "ok");
        assert!(!reusable, "{:?}", String::from_utf8_lossy(answer));
    }
    // HEAD: no body, whatever Content-Length says; 100 Continue skipped.
    let (_, result) = exchange(
        request("HEAD", "/", ""),
        end,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
    )
    .await;
    let (response, _, reusable) = result.expect("head");
    assert_eq!(response.status(), 200);
    assert!(response.body().is_empty());
    assert!(reusable);
}

#[tokio::test]
async fn a_body_delimited_by_close_reads_to_the_end_and_the_connection_goes() {
    let (connection, mut server) = connection();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            .await
            .expect("answer");
    });
    let response = connection
        .send(request("GET", "/", ""))
        .await
        .expect("answered");
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        data.extend_from_slice(&frame.expect("data").into_data().expect("data"));
    }
    assert_eq!(data, b"until the end");
    assert!(body.take_idle().is_none());
}

#[tokio::test]
async fn what_sfmc_gets_wrong_is_a_clear_error() {
    let get = || request("GET", "/", "");
    let end = b"\r\n\r\n";
    for (answer, expected) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"[..],
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "switched protocols",
        ),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not valid HTTP/1.1"),
        (b"NOT HTTP\r\n\r\n", "not valid HTTP/1.1"),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.0 response with Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "chunked response body is malformed",
        ),
    ] {
        let (_, result) = exchange(get(), end, answer).await;
        let error = result.expect_err("refused");
        assert!(
            error.contains(expected),
            "{error:?} for {:?}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_unanswered_and_one_closed_mid_head_is_not() {
    for (answer, unanswered, expected) in [
        (&b""[..], true, "closed the connection without answering"),
        (b"HTTP/1.1 200", false, "in the middle of its response head"),
        // SFMC read the request (it said so): not to be sent again.
        (
            b"HTTP/1.1 100 Continue\r\n\r\n",
            false,
            "in the middle of its response head",
        ),
    ] {
        let (connection, mut server) = connection();
        tokio::spawn(async move {
            read_until(&mut server, b"\r\n\r\n").await;
            server.write_all(answer).await.expect("answer");
            drop(server);
        });
        let failure = connection
            .send(request("GET", "/", ""))
            .await
            .expect_err("no answer");
        assert_eq!(failure.unanswered, unanswered, "{}", failure.message);
        assert!(failure.message.contains(expected), "{}", failure.message);
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_not_a_shorter_body() {
    let (connection, mut server) = connection();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .expect("answer");
        drop(server);
    });
    let response = connection
        .send(request("GET", "/", ""))
        .await
        .expect("head");
    let error = response.into_body().collect().await.expect_err("cut short");
    assert_eq!(
        error.to_string(),
        "SFMC closed the connection 7 bytes before the end of its response body"
    );
}

/// SFMC answers (a 413) while the upload is still coming: the answer
/// reaches the client at once, not after an upload that may never end. The
/// rest of the client's body is read (its connection would break otherwise)
/// but not sent: SFMC might not read it, or read it as a request of its own
/// on a connection used again, so the connection is closed instead.
#[tokio::test]
async fn an_early_answer_comes_back_at_once_and_the_rest_of_the_upload_is_drained_not_sent() {
    let (connection, mut server) = connection();
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
    let request = Request::builder()
        .method("POST")
        .uri("/upload")
        .header("content-length", "10")
        .body(body)
        .expect("request");
    tx.send_data(Bytes::from_static(b"first"))
        .await
        .expect("queued");
    let server = tokio::spawn(async move {
        read_until(&mut server, b"first").await;
        // Keep-alive, as far as this answer says.
        server
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
            .await
            .expect("answer");
        // Reading on, until the proxy closes.
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        rest
    });
    let response = connection.send(request).await.expect("answered early");
    assert_eq!(response.status(), 413);
    let mut body = response.into_body();
    let read = (&mut body).collect().await.expect("body").to_bytes();
    assert_eq!(read, "big!");
    let Some(AfterBody::Drain(drain)) = body.take_idle() else {
        panic!("the client's body is still to be read");
    };
    let drained = tokio::spawn(drain);
    tx.send_data(Bytes::from_static(b"rest!"))
        .await
        .expect("read by the drain");
    drop(tx);
    drained.await.expect("drained to the end");
    assert_eq!(
        server.await.expect("server"),
        b"",
        "nothing more reached SFMC"
    );
}

#[tokio::test]
async fn a_request_body_that_breaks_its_content_length_is_refused() {
    let (connection, mut server) = connection();
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = server.read_to_end(&mut sink).await;
    });
    let request = Request::builder()
        .method("POST")
        .uri("/x")
        .header("content-length", "2")
        .body(Fixed::from("three"))
        .expect("request");
    let failure = connection.send(request).await.expect_err("refused");
    assert!(
        failure.message.contains("longer than its Content-Length"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_is_seen_closed_before_use() {
    let (mut connection, server) = connection();
    assert!(connection.is_open());
    drop(server);
    assert!(!connection.is_open());
}

/// Two exchanges on one connection, the second's answer read into the
/// buffer the first's was (its pieces having been passed on).
#[tokio::test]
async fn a_kept_connection_carries_the_next_request_and_reuses_its_read_buffer() {
    let (connection, mut server) = connection();
    tokio::spawn(async move {
        for body in ["one", "two"] {
            read_until(&mut server, b"\r\n\r\n").await;
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{body}");
            server.write_all(answer.as_bytes()).await.expect("answer");
        }
        let mut sink = Vec::new();
        let _ = server.read_to_end(&mut sink).await;
    });
    let mut connection = connection;
    let mut starts = Vec::new();
    for expected in ["one", "two"] {
        assert!(connection.is_open());
        let response = connection
            .send(request("GET", "/", ""))
            .await
            .expect("answered");
        let mut body = response.into_body();
        let data = (&mut body).collect().await.expect("body").to_bytes();
        assert_eq!(data, expected);
        drop(data);
        let Some(AfterBody::Idle(kept)) = body.take_idle() else {
            panic!("kept");
        };
        connection = kept;
        connection.read.reserve(READ_BUFFER);
        starts.push(connection.read.as_ptr() as usize);
    }
    assert_eq!(starts[0], starts[1], "the same read buffer, in place");
}

/// Over TCP the check reads the socket's readiness (no system call while
/// nothing came) and sees a close once the runtime has learnt of it.
#[tokio::test]
async fn a_tcp_connection_the_server_closed_is_seen_closed_and_an_idle_one_open() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let mut connection = Connection::new(client, &Gauge::default());
    assert!(connection.is_open(), "nothing sent, nothing closed");
    drop(server);
    // The close is seen once the runtime's I/O driver has run: yielding
    // lets it poll, without waiting on a clock.
    let mut seen = false;
    for _ in 0..10_000 {
        if !connection.is_open() {
            seen = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(seen, "the server's close was never seen");
}

/// The fuzz target's driver: the real exchange over a scripted socket
/// gives one outcome however the bytes are split.
#[test]
fn the_scripted_exchange_reads_alike_however_the_bytes_arrive() {
    let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n";
    for step in 1..=chunked.len() {
        let (status, body, trailers, kept) =
            super::read_response(chunked, false, step).expect("read");
        assert_eq!(
            (status, &body[..], kept),
            (200, &b"hello"[..], true),
            "step {step}"
        );
        assert_eq!(trailers.expect("trailers")["x-t"], "1");
    }
    // A byte after the body: not kept, split or not.
    let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX";
    for step in [1, 3, extra.len()] {
        let outcome = super::read_response(extra, false, step).expect("read");
        assert!(!outcome.3, "step {step}");
    }
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok";
    assert_eq!(
        super::read_response(cut, false, 1),
        Err("SFMC closed the connection 7 bytes before the end of its response body".into())
    );
}
