//! What the accept loop knows of each open connection, so it can close the
//! ones that hold a slot without using it: when bytes last moved, whether a
//! request is being handled, and whether one ever arrived. And the open
//! connections themselves ([`Registry`]), which a graceful shutdown asks to
//! finish and waits for.
//!
//! hyper bounds only the HTTP/1 request head; hyper-util's protocol detection
//! (reading the HTTP/2 preface) and hyper's HTTP/2 server have no deadline at
//! all. So each connection gets a deadline, derived from what its requests
//! do — not from raw bytes, which HTTP/2 PINGs or SETTINGS could keep moving
//! for ever while no request makes progress:
//! - no request yet: `header_read_timeout` after the accept, however slowly
//!   bytes trickle in (slowloris, a partial HTTP/2 preface);
//! - a request being handled (waiting for a token or for SFMC's answer), or a
//!   response body waiting for SFMC's next bytes: none here —
//!   `upstream.response_timeout` and `upstream.idle_timeout` bound those, and
//!   a stalled request body is cut by its own idle timer
//!   ([`crate::body::ClientBody`]);
//! - an HTTP/1.1 connection waiting for its next request head (nothing in
//!   flight, its last request body read, its last response written out):
//!   `header_read_timeout` (or `idle_timeout`, if shorter) after that last
//!   write — what hyper's own keep-alive head timer did, kept here because a
//!   parked connection (see `connection`) has no hyper connection to time it;
//! - otherwise `idle_timeout` after the last request's head was handled or a
//!   response body last gave data: between HTTP/2 requests, while the rest
//!   of an upload SFMC has already answered arrives, and when a client stops
//!   reading its response (hyper then stops asking the body for more, on
//!   HTTP/1 and on HTTP/2 alike, whatever control frames keep arriving).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::ReadWatch;

/// One connection's activity. Shared by its IO (which stamps progress), its
/// requests (which mark it busy) and the accept loop (which may shed it).
pub struct Activity {
    accepted: Instant,
    /// Nanoseconds after `accepted` that a request last made progress (its
    /// head handled, or its response body gave data).
    last_progress: AtomicU64,
    /// Requests whose response head is not yet returned, plus response
    /// bodies waiting for SFMC's next bytes.
    busy: AtomicUsize,
    /// Response bodies not yet finished (streaming, or waiting for the
    /// client to read them).
    open_bodies: AtomicUsize,
    /// HTTP/1.1: request bodies hyper has not yet read to their end (see
    /// [`crate::body::Inbound`]).
    unread_bodies: AtomicUsize,
    /// HTTP/1.1: a request body was let go of before its end (hyper then
    /// drains it or closes the connection), so the connection may not be
    /// at a message boundary when it looks idle: it is not parked until the
    /// next request head. (A body of the request before, let go of late,
    /// may set it too: that costs a park, nothing else.)
    unparkable: AtomicBool,
    /// Whether a request head ever arrived on this connection.
    served: AtomicBool,
    /// HTTP/1.1: hyper has written bytes it has not yet flushed (the tail of
    /// a response on its way to a slow reader).
    unflushed: AtomicBool,
    /// Set when the server shuts down: finish what is in flight, then close.
    finish: AtomicBool,
    /// Wakes the connection to close (shed for a newer one) or finish.
    asked: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            last_progress: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            open_bodies: AtomicUsize::new(0),
            unread_bodies: AtomicUsize::new(0),
            unparkable: AtomicBool::new(false),
            served: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            finish: AtomicBool::new(false),
            asked: Notify::new(),
        })
    }

    fn stamp(&self) {
        let nanos = self.accepted.elapsed().as_nanos();
        self.last_progress
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last_progress(&self) -> Instant {
        self.accepted + Duration::from_nanos(self.progress_mark())
    }

    /// A value that changes whenever a request makes progress.
    pub fn progress_mark(&self) -> u64 {
        self.last_progress.load(Ordering::Relaxed)
    }

    /// HTTP/1.1: hyper wrote to the socket (see `client_io`).
    pub fn wrote(&self) {
        self.unflushed.store(true, Ordering::Relaxed);
    }

    /// HTTP/1.1: everything hyper wrote is on its way. The end of a
    /// response's last write counts as its progress: the next head's wait,
    /// and the keep-alive deadline, run from here.
    pub fn flushed(&self) {
        if self.unflushed.swap(false, Ordering::Relaxed) {
            self.stamp();
        }
    }

    /// Marks a request as being handled until the returned guard is dropped
    /// (when its response head is ready).
    pub fn begin_request(self: &Arc<Self>) -> Busy {
        self.served.store(true, Ordering::Relaxed);
        // A new head: hyper is past whatever the last request left.
        self.unparkable.store(false, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    /// Nothing in flight at all: no request being handled, no request body
    /// still arriving, no response body on its way. Only such a connection
    /// is shed.
    pub fn is_between_requests(&self) -> bool {
        !self.is_busy()
            && self.open_bodies.load(Ordering::Acquire) == 0
            && self.unread_bodies.load(Ordering::Acquire) == 0
    }

    /// When this connection is due to be closed as things stand now; `None`
    /// while a request is being handled (look again after `idle`).
    pub fn deadline(&self, head: Duration, idle: Duration) -> Option<Instant> {
        if !self.served.load(Ordering::Relaxed) {
            Some(self.accepted + head)
        } else if self.is_busy() {
            None
        } else {
            Some(self.last_progress() + idle)
        }
    }

    /// HTTP/1.1: since when the connection has been waiting for its next
    /// request head, if it is (a request was served before, nothing is in
    /// flight, the last request's body is read and its response written out).
    pub fn waiting_for_next_head(&self) -> Option<Instant> {
        let waiting = self.served.load(Ordering::Relaxed)
            && self.is_between_requests()
            && !self.unflushed.load(Ordering::Relaxed);
        waiting.then(|| self.last_progress())
    }

    /// HTTP/1.1: since when the connection has been idle at a message
    /// boundary, so that taking it back from hyper loses nothing.
    pub fn parkable_since(&self) -> Option<Instant> {
        let since = self.waiting_for_next_head()?;
        (!self.unparkable.load(Ordering::Acquire)).then_some(since)
    }

    /// [`Self::deadline`] for an HTTP/1.1 connection: one waiting for its
    /// next request head has `header_read_timeout` for it (and no longer
    /// than `idle_timeout`).
    pub fn http1_deadline(&self, head: Duration, idle: Duration) -> Option<Instant> {
        match self.waiting_for_next_head() {
            Some(since) => Some(since + head.min(idle)),
            None => self.deadline(head, idle),
        }
    }

    /// Resolves when the accept loop asks this connection to make room, or
    /// to finish ([`Self::finish_requested`] tells which).
    pub async fn asked(&self) {
        self.asked.notified().await;
    }

    /// Whether the server is shutting down: the connection is to finish its
    /// requests in flight and close.
    pub fn finish_requested(&self) -> bool {
        self.finish.load(Ordering::Acquire)
    }
}

impl ReadWatch for Activity {
    fn body_opened(&self) {
        self.unread_bodies.fetch_add(1, Ordering::AcqRel);
    }

    fn body_ended(&self, whole: bool) {
        // Before the count drops, so whoever sees it drop sees this too.
        if !whole {
            self.unparkable.store(true, Ordering::Release);
        }
        self.unread_bodies.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request in progress on a connection (see [`Activity::begin_request`]).
pub struct Busy(Arc<Activity>);

impl Busy {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.0
    }
}

/// A response body on its way to the client: each frame it gives stamps the
/// connection's activity, and while it waits for SFMC the connection counts
/// as busy, not idle.
pub struct Streaming<B> {
    inner: B,
    activity: Arc<Activity>,
    waiting: bool,
}

impl<B> Streaming<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> Self {
        activity.open_bodies.fetch_add(1, Ordering::AcqRel);
        Self {
            inner,
            activity,
            waiting: false,
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        if waiting {
            self.activity.busy.fetch_add(1, Ordering::AcqRel);
        } else {
            self.activity.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<B: Body + Unpin> Body for Streaming<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.activity.stamp();
        }
        self.set_waiting(polled.is_pending());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Streaming<B> {
    fn drop(&mut self) {
        self.set_waiting(false);
        self.activity.open_bodies.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.stamp();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections: for shedding the longest-idle one when full, and
/// for a graceful shutdown. (hyper-util's `GracefulShutdown` would see
/// hyper's connections only, and a parked connection is not one.)
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Activity>>>,
    /// Notified when the last connection ends.
    emptied: Notify,
}

impl Registry {
    /// Registers a connection; it is removed when the returned entry drops.
    pub fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        Entry {
            registry: self.clone(),
            id,
        }
    }

    /// Asks the connection between requests whose bytes moved longest ago to
    /// close (as nginx reuses keep-alive connections when `worker_connections`
    /// run out); a download in progress is never cut for a newcomer. Returns
    /// whether one was asked; `false` when every connection has a request or
    /// a response in flight.
    pub fn shed_longest_idle(&self) -> bool {
        let live = self.lock();
        let idlest = live
            .values()
            .filter(|activity| activity.is_between_requests())
            .min_by_key(|activity| activity.last_progress());
        match idlest {
            Some(activity) => {
                activity.asked.notify_one();
                true
            }
            None => false,
        }
    }

    /// Asks every open connection to finish: those with a request in flight
    /// finish it, the others close.
    pub fn finish_all(&self) {
        for activity in self.lock().values() {
            activity.finish.store(true, Ordering::Release);
            activity.asked.notify_one();
        }
    }

    /// Resolves when no connection is open.
    pub async fn all_ended(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before looking, so an end in between is not missed.
            emptied.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        crate::sync::lock(&self.live)
    }
}

pub struct Entry {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        live.remove(&self.id);
        if live.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_connection_through_its_states() {
        let activity = Activity::new();
        let accepted = Instant::now();
        assert_eq!(
            activity.deadline(HEAD, IDLE),
            Some(accepted + HEAD),
            "no head yet"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        let busy = activity.begin_request();
        assert_eq!(activity.deadline(HEAD, IDLE), None, "handling a request");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(busy);
        let answered = Instant::now();
        assert_eq!(activity.deadline(HEAD, IDLE), Some(answered + IDLE));
        // A response body waiting for SFMC keeps it busy; one the client does
        // not read does not.
        let (mut tx, channel) = Channel::<bytes::Bytes, std::convert::Infallible>::new(1);
        let mut body = Streaming::new(channel, activity.clone());
        let waiting = tokio::spawn(async move {
            let frame = body.frame().await.map(|f| f.is_ok());
            (body, frame)
        });
        tokio::task::yield_now().await;
        assert_eq!(activity.deadline(HEAD, IDLE), None, "waiting for SFMC");
        tx.send_data("x".into()).await.expect("send");
        let (body, frame) = waiting.await.expect("reader");
        assert_eq!(frame, Some(true));
        let read = Instant::now();
        assert_eq!(
            activity.deadline(HEAD, IDLE),
            Some(read + IDLE),
            "waiting for the client"
        );
        assert!(!activity.is_between_requests(), "a response is still open");
        drop(body);
        assert!(activity.is_between_requests());
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_picks_the_longest_idle_connection_between_requests() {
        let registry = Arc::new(Registry::default());
        let oldest = Activity::new();
        let _a = registry.register(oldest.clone());
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = Activity::new();
        let _b = registry.register(newer.clone());
        // The oldest has a response open (a slow download): never cut for a newcomer.
        let (_tx, channel) = Channel::<bytes::Bytes, std::convert::Infallible>::new(1);
        let download = Streaming::new(channel, oldest.clone());
        assert!(registry.shed_longest_idle());
        let asked = tokio::time::timeout(Duration::from_secs(1), newer.asked()).await;
        assert!(asked.is_ok(), "the idle one is asked to close");
        let spared = tokio::time::timeout(Duration::from_secs(1), oldest.asked()).await;
        assert!(spared.is_err(), "the busy one is spared");
        let _busy = newer.begin_request();
        assert!(
            !registry.shed_longest_idle(),
            "nothing between requests: nobody is shed"
        );
        drop(download);
    }

    #[tokio::test(start_paused = true)]
    async fn finishing_asks_every_connection_and_waits_for_the_last() {
        let registry = Arc::new(Registry::default());
        let (first, second) = (Activity::new(), Activity::new());
        let entries = [
            registry.register(first.clone()),
            registry.register(second.clone()),
        ];
        assert!(!first.finish_requested());
        registry.finish_all();
        for activity in [&first, &second] {
            let asked = tokio::time::timeout(Duration::from_secs(1), activity.asked()).await;
            assert!(asked.is_ok() && activity.finish_requested());
        }
        let [one, other] = entries;
        drop(one);
        let ended = tokio::time::timeout(Duration::from_secs(1), registry.all_ended()).await;
        assert!(ended.is_err(), "one connection is still open");
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move { registry.all_ended().await }
        });
        tokio::task::yield_now().await;
        drop(other);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the last end is seen")
            .expect("joined");
    }
}
