use super::*;

/// The pool does not care what body it sends; the proxy's is not needed here.
type TestBody = http_body_util::Full<bytes::Bytes>;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn instance() -> InstanceBase {
    InstanceBase::parse("http://127.0.0.1:9/", &[]).expect("loopback instance")
}

/// A connection to an in-memory HTTP/1.1 server (hyper's) that answers
/// every request with `hello`.
async fn connection() -> h1::Connection {
    let (client, server_io) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let service = service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(TestBody::from("hello")))
        });
        let _ = server::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .await;
    });
    h1::Connection::new(client, &Default::default())
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_reused_until_the_idle_timeout() {
    let pool = Pool::<TestBody>::default();
    let (slot, first) = pool.checkout(&instance());
    assert!(matches!(first, Checkout::Empty), "nothing pooled yet");
    pool.keep_idle(slot, connection().await);
    assert_eq!(pool.idle_count(&instance()), 1);
    let (_, again) = pool.checkout(&instance());
    let Checkout::Http1(connection) = again else {
        panic!("the idle connection is handed out");
    };
    assert_eq!(pool.idle_count(&instance()), 0, "taken, not copied");

    pool.keep_idle(slot, connection);
    tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
    let (_, expired) = pool.checkout(&instance());
    assert!(matches!(expired, Checkout::Empty), "too old to trust");
    assert_eq!(pool.idle_count(&instance()), 0, "and dropped");
}

#[tokio::test]
async fn a_response_read_to_the_end_gives_its_connection_back_and_a_dropped_one_does_not() {
    let pool = Pool::<TestBody>::default();
    let (slot, _) = pool.checkout(&instance());
    for read_to_end in [true, false] {
        let connection = connection().await;
        let request = http::Request::builder()
            .uri("/")
            .header(http::header::HOST, "127.0.0.1:9")
            .body(TestBody::default())
            .expect("request");
        let response = connection.send(request).await.expect("200");
        let timed = IdleTimeout::new(
            Received::Http1(response.into_body()),
            Duration::from_secs(60),
            crate::idle::Sender::Sfmc,
        );
        let mut body = UpstreamBody::pooled(timed, &pool, slot);
        if read_to_end {
            let read = http_body_util::BodyExt::collect(&mut body).await;
            assert_eq!(read.expect("body").to_bytes(), "hello");
        }
        let before = pool.idle_count(&instance());
        drop(body);
        let after = pool.idle_count(&instance());
        assert_eq!(after - before, usize::from(read_to_end));
    }
}

/// An HTTP/2 connection to an in-memory server that answers `hello`.
async fn http2_connection() -> http2::SendRequest<TestBody> {
    use hyper_util::rt::TokioExecutor;
    let (client, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let service = service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(TestBody::from("hello")))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(server_io), service)
            .await;
    });
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(client))
        .await
        .expect("HTTP/2 handshake over a duplex pipe");
    tokio::spawn(connection);
    sender
}

#[tokio::test(start_paused = true)]
async fn the_shared_http2_connection_is_used_while_busy_and_dropped_when_idle_too_long() {
    let pool = Pool::<TestBody>::default();
    let https = InstanceBase::parse("https://localhost:9/", &[]).expect("loopback");
    let (slot, _) = pool.checkout(&https);
    assert!(
        pool.connect_gate(slot).is_some(),
        "https: protocol unknown yet"
    );
    pool.share_http2(slot, &http2_connection().await);
    for _ in 0..3 {
        // Each use restarts the idle clock.
        tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
        let (_, shared) = pool.checkout(&https);
        assert!(matches!(shared, Checkout::Http2(_)), "shared while in use");
    }
    assert!(matches!(pool.after_gate(slot), AfterGate::Http2(_)));
    tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
    let (_, expired) = pool.checkout(&https);
    assert!(
        matches!(expired, Checkout::Empty),
        "a NAT may have forgotten it"
    );
    assert!(!pool.has_http2(slot));
    assert!(matches!(pool.after_gate(slot), AfterGate::Connect));
    pool.mark_http1_only(slot);
    assert!(matches!(pool.after_gate(slot), AfterGate::Http1Only));
    assert!(
        pool.connect_gate(slot).is_none(),
        "HTTP/1.1 connects need not wait"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_closes_expired_connections_of_a_quiet_instance() {
    let pool = Pool::with_sweeper();
    let (slot, _) = pool.checkout(&instance());
    pool.keep_idle(slot, connection().await);
    let https = InstanceBase::parse("https://localhost:9/", &[]).expect("loopback");
    let (h2_slot, _) = pool.checkout(&https);
    pool.share_http2(h2_slot, &http2_connection().await);
    tokio::time::advance(IDLE_TIMEOUT / 2).await;
    assert_eq!(pool.idle_count(&instance()), 1, "not expired yet");
    // No request comes; a sweep after the timeout (every half timeout)
    // drops both.
    tokio::time::sleep(IDLE_TIMEOUT + IDLE_TIMEOUT / 2).await;
    assert_eq!(pool.idle_count(&instance()), 0);
    assert!(!pool.has_http2(h2_slot));
}

#[tokio::test]
async fn the_pool_keeps_at_most_max_idle_per_host() {
    let pool = Pool::<TestBody>::default();
    let (slot, _) = pool.checkout(&instance());
    for _ in 0..MAX_IDLE_PER_HOST + 3 {
        pool.keep_idle(slot, connection().await);
    }
    assert_eq!(pool.idle_count(&instance()), MAX_IDLE_PER_HOST);
}

#[tokio::test]
async fn a_closed_idle_connection_is_passed_over_for_the_next_one() {
    let pool = Pool::<TestBody>::default();
    let (slot, _) = pool.checkout(&instance());
    pool.keep_idle(slot, connection().await);
    // The newest, whose server has gone.
    let (client, server) = tokio::io::duplex(1024);
    pool.keep_idle(slot, h1::Connection::new(client, &Default::default()));
    drop(server);
    let (_, taken) = pool.checkout(&instance());
    let Checkout::Http1(live) = taken else {
        panic!("the older, live connection is handed out");
    };
    assert_eq!(pool.idle_count(&instance()), 0, "the dead one dropped");
    let request = http::Request::builder()
        .uri("/")
        .header(http::header::HOST, "127.0.0.1:9")
        .body(TestBody::default())
        .expect("request");
    let response = live.send(request).await.expect("it answers");
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    assert_eq!(body.expect("body").to_bytes(), "hello");
}
