//! The upstream connection pool, as the fake sees it: every instance response
//! names the TCP connection it came on (`x-fake-connection`), so these tests
//! check which connection served each request. Kept-alive connections are
//! reused, concurrent requests get one each, and a connection that is closed,
//! half-read or half-written never serves another request.
//!
//! Nothing here sleeps: the tests wait for events the fake reports (a
//! connection closed, a download stream ended). A timeout only turns a hang
//! into a failure with a message.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::task::JoinSet;

use crate::support::*;

/// How long a test waits for something that happens at once when all is well.
const HANG: Duration = Duration::from_secs(30);

/// The upstream connection that served a response, by the fake's number.
fn connection_of(headers: &http::HeaderMap) -> u64 {
    let value = headers
        .get(CONNECTION_HEADER)
        .unwrap_or_else(|| panic!("an instance response names its connection: {headers:?}"));
    let value = value.to_str().expect("ASCII connection number");
    value.parse().expect("numeric connection number")
}

fn connection(response: &Response<Incoming>) -> u64 {
    connection_of(response.headers())
}

/// A REST echo through the proxy: asserts it succeeded and returns its connection.
async fn echo(client: &TestClient, s: &Setup, path: &str) -> u64 {
    let reply = client.get(&s.proxy, path, &[]).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    let echo = reply.json();
    assert_eq!(
        echo["path"], path,
        "the echo of this request, not another's"
    );
    let number = connection_of(&reply.headers);
    assert_eq!(echo["connection"], number, "header and body agree");
    number
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("still waiting after {HANG:?}: {what}"))
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let s = setup().await;
    let mut used = HashSet::new();
    for i in 0..20 {
        used.insert(echo(&s.client, &s, &format!("/hub/v1/seq/{i}")).await);
    }
    assert_eq!(used.len(), 1, "one kept-alive connection, reused: {used:?}");
    // The token came over its own connection; the echoes opened only one more.
    assert!(
        s.fake.connections_opened() <= 2,
        "{}",
        s.fake.connections_opened()
    );
}

/// `n` gated responses in flight at once, each holding its upstream connection
/// (head and first chunk sent, the second held back), then released one by one
/// and read to the end. Returns the connections they came on.
async fn gated_round(s: &Setup, n: usize) -> HashSet<u64> {
    let mut heads = JoinSet::new();
    for _ in 0..n {
        let client = s.client.clone();
        let request = request("GET", &s.proxy, "/fake/gated", &[], empty());
        heads.spawn(async move {
            let response = client.send(request).await;
            assert_eq!(response.status(), 200);
            let number = connection(&response);
            let mut body = response.into_body();
            let first = body.frame().await.expect("a frame").expect("no error");
            assert_eq!(first.into_data().expect("data"), "first\n");
            (number, body)
        });
    }
    let (mut in_flight, mut bodies) = (HashSet::new(), JoinSet::new());
    while let Some(head) = within("all heads at once", heads.join_next()).await {
        let (number, body) = head.expect("head task");
        in_flight.insert(number);
        bodies.spawn(async move { body.collect().await.map(|c| c.to_bytes()) });
    }
    // One release at a time, each waiting for a body to end: a release is then
    // never stored while another is pending (the gate keeps one at most).
    for _ in 0..n {
        s.fake.release_gate();
        let rest = within("a released body", bodies.join_next()).await;
        let rest = rest.expect("a body").expect("task").expect("body");
        assert_eq!(rest, "second\n");
    }
    in_flight
}

#[tokio::test]
async fn concurrent_requests_get_one_connection_each_then_stay_pooled() {
    const N: usize = 6;
    let s = setup().await;
    let first = gated_round(&s, N).await;
    assert_eq!(
        first.len(),
        N,
        "one connection per request in flight: {first:?}"
    );

    let opened = s.fake.connections_opened();
    for i in 0..2 * N {
        let number = echo(&s.client, &s, &format!("/hub/v1/after/{i}")).await;
        assert!(
            first.contains(&number),
            "request {i} used connection {number}, not one of the pooled {first:?}"
        );
    }
    // A connection busy with a response still streaming is not handed out,
    // and rejoins the pool when that response ends.
    let held = s
        .client
        .send(request("GET", &s.proxy, "/fake/gated", &[], empty()))
        .await;
    let busy = connection(&held);
    assert!(first.contains(&busy), "{busy} from the pool {first:?}");
    let mut held = held.into_body();
    let head = held.frame().await.expect("a frame").expect("no error");
    assert_eq!(head.into_data().expect("data"), "first\n");
    for i in 0..N {
        let number = echo(&s.client, &s, &format!("/hub/v1/beside/{i}")).await;
        assert_ne!(number, busy, "request {i} got the busy connection");
        assert!(first.contains(&number), "{number} from the pool {first:?}");
    }
    s.fake.release_gate();
    let rest = within("the held body", held.collect()).await;
    assert_eq!(rest.expect("body").to_bytes(), "second\n");
    // All N were kept, not just the last one used: N at once again reuse them all.
    let second = gated_round(&s, N).await;
    assert_eq!(second, first, "the same N connections, from the pool");
    assert_eq!(s.fake.connections_opened(), opened, "no new connection");
}

#[tokio::test]
async fn connection_close_from_upstream_is_honoured_and_the_next_request_reconnects() {
    let s = setup().await;
    let pooled = echo(&s.client, &s, "/hub/v1/before").await;
    let closing = s
        .client
        .get(&s.proxy, "/fake/respond?header=Connection:close", &[])
        .await;
    assert_eq!(closing.status, 200, "{}", closing.text());
    assert_eq!(closing.json()["status"], 200);
    assert_eq!(
        connection_of(&closing.headers),
        pooled,
        "the pooled one served it"
    );
    assert!(
        closing.headers.get("connection").is_none(),
        "hop-by-hop: not passed on"
    );
    // At once, with no wait for the fake's close to arrive.
    let next = echo(&s.client, &s, "/hub/v1/after").await;
    assert_ne!(next, pooled, "a connection announced closed is not reused");
    within(
        "the closed connection ends",
        s.fake.connection_closed(pooled),
    )
    .await;
    for i in 0..5 {
        let number = echo(&s.client, &s, &format!("/hub/v1/later/{i}")).await;
        assert_eq!(number, next, "the new connection is pooled in turn");
    }
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_an_error() {
    let s = setup().await;
    let idle = echo(&s.client, &s, "/hub/v1/first").await;
    // As when SFMC's keep-alive timeout ends a pooled connection: unannounced.
    s.fake.close_connection(idle);
    within("the idle connection closes", s.fake.connection_closed(idle)).await;
    let next = echo(&s.client, &s, "/hub/v1/after-close").await;
    assert_ne!(next, idle);
    for i in 0..3 {
        let number = echo(&s.client, &s, &format!("/hub/v1/later/{i}")).await;
        assert_eq!(number, next, "the new connection is pooled in turn");
    }
}

#[tokio::test]
async fn responses_without_a_body_leave_the_connection_reusable() {
    let s = setup().await;
    let pooled = echo(&s.client, &s, "/hub/v1/first").await;
    // HEAD's answer announces a length it does not send; 204 and 304 have none.
    let cases = [
        ("HEAD", "/hub/v1/head", 200),
        ("GET", "/fake/respond?status=204", 204),
        ("GET", "/fake/respond?status=304&header=ETag:%22v1%22", 304),
        ("DELETE", "/fake/respond?status=204", 204),
    ];
    for (method, target, status) in cases {
        let reply = s
            .client
            .fetch(request(method, &s.proxy, target, &[], empty()))
            .await;
        assert_eq!(reply.status, status, "{method} {target}");
        assert!(reply.body.is_empty(), "{method} {target}: {}", reply.text());
        if method == "HEAD" {
            let length = reply.headers.get("content-length");
            assert!(length.is_some_and(|l| l != "0"), "{:?}", reply.headers);
        }
        assert_eq!(
            connection_of(&reply.headers),
            pooled,
            "{method} {target}: served by the pooled connection"
        );
        let next = echo(&s.client, &s, "/hub/v1/next").await;
        assert_eq!(next, pooled, "after {method} {target}: still reusable");
    }
}

#[tokio::test]
async fn a_client_leaving_a_large_download_half_way_does_not_break_later_requests() {
    let s = setup().await;
    let size = 256 * 1024 * 1024;
    for (ended, framing) in [(1, ""), (2, "&chunked")] {
        // A client of its own: dropping the body closes its proxy connection.
        let quitter = TestClient::new();
        let target = format!("/fake/download?bytes={size}{framing}");
        let response = quitter
            .send(request("GET", &s.proxy, &target, &[], empty()))
            .await;
        assert_eq!(response.status(), 200, "{target}");
        assert_eq!(
            response.headers().contains_key("content-length"),
            framing.is_empty(),
            "{target}"
        );
        let mut body = response.into_body();
        for _ in 0..4 {
            let frame = body.frame().await.expect("a frame").expect("no error");
            assert!(frame.is_data());
        }
        drop(body);
        drop(quitter);
        // The fake stops streaming once the proxy stops reading: by closing the
        // connection, or by reading the rest to keep it. A connection pooled
        // with the rest unread would leave this stream stuck.
        within(
            "the abandoned download stops streaming upstream",
            s.fake.downloads_ended(ended),
        )
        .await;
        // New or reused connection: either way each answer must be whole.
        for i in 0..5 {
            echo(&s.client, &s, &format!("/hub/v1/after/{ended}/{i}")).await;
        }
    }
}

/// How the client ends an upload that the instance answered before reading it.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Sends the rest and ends the body normally.
    Finishes,
    /// Fails the body half-way (a client that gives up).
    Abandons,
}

#[tokio::test]
async fn an_upload_answered_early_does_not_break_later_requests() {
    let s = setup().await;
    for ending in [Ending::Finishes, Ending::Abandons] {
        let uploader = TestClient::new();
        let (mut tx, upload) = channel_body();
        let target = "/fake/respond?status=413";
        let request = request("POST", &s.proxy, target, &[], upload);
        tx.send_data(Bytes::from(vec![b'a'; 64 * 1024]))
            .await
            .expect("send");
        // The head comes while the upload is still open: the fake never read it.
        let response = within("the early answer", uploader.send(request)).await;
        assert_eq!(response.status(), 413, "{ending:?}");
        let early = connection(&response);
        // And its body, whole, still before the upload ends.
        let body = within("the early answer's body", response.into_body().collect()).await;
        let body = body.expect("the early answer's body").to_bytes();
        assert_eq!(&body[..], br#"{"status":413}"#, "{ending:?}");
        match ending {
            Ending::Finishes => {
                for _ in 0..4 {
                    // The proxy may have stopped reading (its upstream is gone):
                    // then the sends fail, which is fine.
                    if tx
                        .send_data(Bytes::from(vec![b'b'; 64 * 1024]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                drop(tx);
            }
            Ending::Abandons => tx.abort("the client gives up".into()),
        }
        drop(uploader);
        // The fake closes a connection whose request body it left unread; the
        // requests after that must not be handed it.
        let closed = s.fake.connection_closed(early);
        within("the early-answered connection closes", closed).await;
        for i in 0..5 {
            echo(&s.client, &s, &format!("/hub/v1/{ending:?}/{i}")).await;
        }
    }
}

#[tokio::test]
async fn an_upload_answered_early_but_sent_whole_does_not_break_later_requests() {
    let s = setup().await;
    let pooled = echo(&s.client, &s, "/hub/v1/first").await;
    // Small enough for the proxy to hold and send in one go; the instance
    // answers without reading it (and may read it to keep the connection).
    let reply = s
        .client
        .post(&s.proxy, "/fake/respond?status=413", &[], vec![b'x'; 4096])
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["status"], 413);
    assert_eq!(connection_of(&reply.headers), pooled);
    for i in 0..5 {
        echo(&s.client, &s, &format!("/hub/v1/after/{i}")).await;
    }
}

#[tokio::test]
async fn a_chunked_response_read_to_the_end_leaves_the_connection_reusable() {
    let s = setup().await;
    let pooled = echo(&s.client, &s, "/hub/v1/first").await;
    let size = 3 * 1024 * 1024 + 7;
    let target = format!("/fake/download?bytes={size}&chunked");
    let response = s
        .client
        .send(request("GET", &s.proxy, &target, &[], empty()))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        !response.headers().contains_key("content-length"),
        "no length: the end is the last chunk: {:?}",
        response.headers()
    );
    assert_eq!(connection(&response), pooled);
    let body = response.into_body().collect().await.expect("whole body");
    let body = body.to_bytes();
    assert_eq!(body.len(), size);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i % 251)
    );
    for i in 0..5 {
        let number = echo(&s.client, &s, &format!("/hub/v1/after/{i}")).await;
        assert_eq!(number, pooled, "request {i} after the chunked body");
    }
}

/// SFMC over https may speak HTTP/2: a burst of first requests must share
/// one connection (one TLS handshake), not open one each.
#[tokio::test]
async fn a_burst_of_first_requests_over_http2_shares_one_connection() {
    let dir = temp_dir("pool-h2-burst");
    let TlsServer {
        server_config,
        ca: ca_path,
        ..
    } = tls_server_with_ca(&dir);
    let fake = start_fake_with(tls_fake(&server_config)).await;
    let proxy = TestProxy::builder()
        .ca_file(&ca_path)
        .tenant(Tenant::new("acme", &fake))
        .start()
        .await;
    let mut burst = JoinSet::new();
    for n in 0..16 {
        let get = request("GET", &proxy, &format!("/hub/v1/burst/{n}"), &[], empty());
        burst.spawn(async move {
            let reply = TestClient::new().fetch(get).await;
            (reply.status, reply.json())
        });
    }
    let mut served_by = HashSet::new();
    while let Some(joined) = within("the burst", burst.join_next()).await {
        let (status, echo) = joined.expect("request task");
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["version"], "HTTP/2.0", "HTTP/2 negotiated by ALPN");
        served_by.insert(echo["connection"].as_u64().expect("connection number"));
    }
    assert_eq!(served_by.len(), 1, "one shared connection: {served_by:?}");
    assert_eq!(
        fake.connections_opened(),
        2,
        "the token request's connection and the one shared instance connection"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// SFMC may end a kept-alive connection just as a request goes out on it:
/// the request is written, no answer comes. An idempotent request with its
/// body held goes out once more on a new connection; anything else gets the
/// 502, since SFMC may have acted on it.
#[tokio::test]
async fn an_idempotent_request_a_closing_pooled_connection_drops_is_sent_again() {
    let s = setup().await;
    let pooled = echo(&s.client, &s, "/hub/v1/first").await;
    let reply = s.client.get(&s.proxy, "/fake/hangup-once", &[]).await;
    assert_eq!(reply.status, 200, "sent again: {}", reply.text());
    assert_eq!(reply.json()["path"], "/fake/hangup-once");
    let again = connection_of(&reply.headers);
    assert_ne!(again, pooled, "on a new connection");
    within(
        "the dropped connection ends",
        s.fake.connection_closed(pooled),
    )
    .await;
    assert_eq!(
        echo(&s.client, &s, "/hub/v1/after").await,
        again,
        "pooled in turn"
    );
}

#[tokio::test]
async fn a_post_a_closing_pooled_connection_drops_is_a_502_not_sent_twice() {
    let s = setup().await;
    echo(&s.client, &s, "/hub/v1/first").await;
    let before = s.fake.rest_requests();
    let reply = s
        .client
        .post(
            &s.proxy,
            "/fake/hangup-once",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some("upstream_unavailable"));
    assert_eq!(
        s.fake.rest_requests(),
        before + 1,
        "the POST reached SFMC once"
    );
}

#[tokio::test]
async fn a_new_connection_dropped_under_a_get_is_a_502_not_a_retry_loop() {
    let s = setup().await;
    // The first instance request goes out on a new connection: a hang-up
    // there is SFMC failing, not a stale pooled connection.
    let reply = s.client.get(&s.proxy, "/fake/hangup-once", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some("upstream_unavailable"));
    assert_eq!(s.fake.rest_requests(), 1);
}
