//! What the tests can see of the transport: the fake numbers every TCP
//! connection it accepts (1, 2, … in accept order, token connections included)
//! and stamps that number on each instance response, notes when each one
//! closes, and counts the `/fake/download` streams that have ended. With these a
//! test can tell which upstream connection the proxy's pool used for a request,
//! and wait for an event instead of sleeping.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::HeaderValue;
use tokio::sync::watch;

use crate::{FakeTenant, Reply};

/// The response header naming the connection an instance request arrived on.
pub const CONNECTION_HEADER: &str = "x-fake-connection";

/// The number of the connection a request arrived on (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnectionId(pub(super) u64);

#[derive(Default)]
pub(super) struct Transport {
    opened: AtomicU64,
    /// Numbers of the connections that have ended: a set, not a count, so a
    /// test can wait for one given connection. It grows by one number per
    /// connection, which is nothing for a fake.
    closed: watch::Sender<BTreeSet<u64>>,
    /// Numbers of the connections a test asked the fake to close.
    close: watch::Sender<BTreeSet<u64>>,
    /// `/fake/download` bodies that stopped streaming, in full or cut off.
    downloads_ended: watch::Sender<usize>,
    /// Whether `/fake/hangup-once` has hung up already.
    hung_up: AtomicBool,
}

/// Marks a reply the fake does not send: the connection is closed instead,
/// after the request was read and before any byte of an answer.
#[derive(Clone, Copy)]
pub(super) struct HangUp;

impl Transport {
    pub(super) fn opened(&self) -> ConnectionId {
        ConnectionId(self.opened.fetch_add(1, Ordering::SeqCst) + 1)
    }

    pub(super) fn closed(&self, id: ConnectionId) {
        self.closed.send_modify(|closed| {
            closed.insert(id.0);
        });
    }

    /// Resolves once a test asked for connection `id` to be closed.
    pub(super) async fn close_requested(&self, id: ConnectionId) {
        let mut close = self.close.subscribe();
        let _ = close.wait_for(|close| close.contains(&id.0)).await;
    }

    /// True the first time only: `/fake/hangup-once` hangs up once, then
    /// answers like the echo.
    pub(super) fn hang_up_once(&self) -> bool {
        !self.hung_up.swap(true, Ordering::SeqCst)
    }

    pub(super) fn download_ended(&self) {
        self.downloads_ended.send_modify(|ended| *ended += 1);
    }
}

/// Stamps the connection number on an instance response.
pub(super) fn stamp(reply: &mut Reply, id: Option<ConnectionId>) {
    if let Some(ConnectionId(number)) = id {
        let value = HeaderValue::from(number);
        reply.headers_mut().insert(CONNECTION_HEADER, value);
    }
}

impl FakeTenant {
    /// Connections accepted so far, token requests' included.
    pub fn connections_opened(&self) -> u64 {
        self.state.transport.opened.load(Ordering::SeqCst)
    }

    /// Resolves once connection `number` (an `x-fake-connection` value) has
    /// ended on the fake's side.
    pub async fn connection_closed(&self, number: u64) {
        let mut closed = self.state.transport.closed.subscribe();
        let _ = closed.wait_for(|closed| closed.contains(&number)).await;
    }

    /// Closes idle connection `number` unannounced, as a server whose
    /// keep-alive timeout ran out does: how a connection in a client's pool
    /// goes stale. (A busy one would end after its response, which hyper then
    /// marks `Connection: close` if its head is not yet sent.)
    pub fn close_connection(&self, number: u64) {
        self.state.transport.close.send_modify(|close| {
            close.insert(number);
        });
    }

    /// Resolves once `count` `/fake/download` bodies have stopped streaming:
    /// sent in full, or cut off because their reader went away.
    pub async fn downloads_ended(&self, count: usize) {
        let mut ended = self.state.transport.downloads_ended.subscribe();
        let _ = ended.wait_for(|ended| *ended >= count).await;
    }
}
