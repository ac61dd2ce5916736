//! The upstream connection pool: idle HTTP/1.1 connections per instance (most
//! recently used first, dropped after `IDLE_TIMEOUT`), one shared HTTP/2
//! connection per instance (also dropped after `IDLE_TIMEOUT` unused; a
//! sweep closes expired ones of a quiet instance too), the
//! gate that lets one https connect at a time through until the instance's
//! protocol is known, and the response body that gives its HTTP/1.1
//! connection back when the response has been read to the end (and the
//! connection is fit for another request: `h1` decides).
//!
//! Why not hyper-util's pooled client: per request it hashes the pool key,
//! spawns a task that waits for the connection to become idle again, and
//! passes messages between tasks; that was a quarter of the proxy's
//! instructions per request. Here a connection goes back to the pool from the
//! response body's `Drop` (no task) and the instance is found by comparing a
//! few authorities.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use tokio::time::Instant;

use super::{InstanceBase, RequestBody, h1};
use crate::idle::{BodyError, IdleTimeout};

/// Idle connections kept per instance: enough for a busy ETL job's
/// concurrency without reconnecting (TLS handshakes are the expensive part).
const MAX_IDLE_PER_HOST: usize = 256;
/// An idle connection older than this is not reused: SFMC, or a NAT on the
/// way, may have dropped it without a word.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection taken from the pool, or none to take.
pub enum Checkout<B> {
    Http1(h1::Connection),
    Http2(http2::SendRequest<B>),
    Empty,
}

pub struct Pool<B> {
    hosts: Arc<Mutex<Vec<HostPool<B>>>>,
}

// By hand: derived impls would ask `B: Clone` / `B: Default`.
impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            hosts: self.hosts.clone(),
        }
    }
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Self {
            hosts: Arc::default(),
        }
    }
}

/// One instance's connections. Instances come from token responses, so there
/// are as many as tenants at most; a linear search beats hashing here.
struct HostPool<B> {
    scheme: Scheme,
    authority: Authority,
    idle: VecDeque<Idle>,
    http2: Option<Shared<B>>,
    /// Set once an https connect to the instance negotiated HTTP/1.1: from
    /// then on, connects need not wait for each other.
    http1_only: bool,
    connect_gate: Arc<tokio::sync::Mutex<()>>,
}

/// The instance's HTTP/2 connection, shared by every request to it.
struct Shared<B> {
    sender: http2::SendRequest<B>,
    last_used: Instant,
}

impl<B> Shared<B> {
    /// Closed, or unused for `IDLE_TIMEOUT`: a NAT may have forgotten it.
    fn expired(&self, now: Instant) -> bool {
        self.sender.is_closed() || now.duration_since(self.last_used) > IDLE_TIMEOUT
    }
}

/// What a request waiting at the connect gate finds when its turn comes.
pub enum AfterGate<B> {
    /// Another request connected with HTTP/2 meanwhile: use that.
    Http2(http2::SendRequest<B>),
    /// The instance speaks HTTP/1.1: connect without holding the gate.
    Http1Only,
    /// Still unknown (or the HTTP/2 connection went): connect through the gate.
    Connect,
}

struct Idle {
    connection: h1::Connection,
    since: Instant,
}

impl<B: Send + 'static> Pool<B> {
    /// The instance's slot number, and a live connection if one is idle.
    pub fn checkout(&self, instance: &InstanceBase) -> (usize, Checkout<B>) {
        let (slot, mut candidate) = {
            let mut hosts = self.lock();
            let slot = slot_in(&mut hosts, instance);
            let host = &mut hosts[slot];
            let now = Instant::now();
            if let Some(sender) = host.shared_http2(now) {
                return (slot, Checkout::Http2(sender));
            }
            (slot, host.newest_idle(now))
        };
        // Each candidate is looked at outside the lock (the look may be a
        // system call, or TLS work); the lock is taken again only to replace
        // one the server has closed.
        while let Some(mut idle) = candidate {
            // The server has not closed it (as far as we know yet).
            if idle.connection.is_open() {
                return (slot, Checkout::Http1(idle.connection));
            }
            candidate = self
                .lock()
                .get_mut(slot)
                .and_then(|host| host.newest_idle(Instant::now()));
        }
        (slot, Checkout::Empty)
    }

    /// The instance's slot number, without taking a connection.
    pub fn slot(&self, instance: &InstanceBase) -> usize {
        slot_in(&mut self.lock(), instance)
    }

    /// The gate new connections to an https instance pass one at a time
    /// until the instance is known to speak HTTP/1.1: without it, a burst of
    /// first requests would each open (and handshake) a connection of their
    /// own where one HTTP/2 connection serves them all. `None`: no need.
    pub fn connect_gate(&self, slot: usize) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let hosts = self.lock();
        let host = hosts.get(slot)?;
        (host.scheme == Scheme::HTTPS && !host.http1_only).then(|| host.connect_gate.clone())
    }

    pub fn after_gate(&self, slot: usize) -> AfterGate<B> {
        let mut hosts = self.lock();
        let Some(host) = hosts.get_mut(slot) else {
            return AfterGate::Connect;
        };
        if let Some(sender) = host.shared_http2(Instant::now()) {
            AfterGate::Http2(sender)
        } else if host.http1_only {
            AfterGate::Http1Only
        } else {
            AfterGate::Connect
        }
    }

    /// Keeps a new HTTP/2 connection for every later request to the instance.
    pub fn share_http2(&self, slot: usize, sender: &http2::SendRequest<B>) {
        if let Some(host) = self.lock().get_mut(slot) {
            host.http2 = Some(Shared {
                sender: sender.clone(),
                last_used: Instant::now(),
            });
        }
    }

    /// Notes that an https connect to the instance negotiated HTTP/1.1.
    pub fn mark_http1_only(&self, slot: usize) {
        if let Some(host) = self.lock().get_mut(slot) {
            host.http1_only = true;
        }
    }

    /// Puts an HTTP/1.1 connection whose exchange ended cleanly back.
    pub(super) fn keep_idle(&self, slot: usize, connection: h1::Connection) {
        let now = Instant::now();
        let mut hosts = self.lock();
        let Some(host) = hosts.get_mut(slot) else {
            return;
        };
        // Drop those that expired, and the oldest if the pool is full.
        host.drop_expired_idle(now);
        if host.idle.len() >= MAX_IDLE_PER_HOST {
            host.idle.pop_front();
        }
        host.idle.push_back(Idle {
            connection,
            since: now,
        });
    }

    fn lock(&self) -> MutexGuard<'_, Vec<HostPool<B>>> {
        crate::sync::lock(&self.hosts)
    }

    /// Whether a shared HTTP/2 connection is kept for the instance (for tests).
    #[cfg(test)]
    pub fn has_http2(&self, slot: usize) -> bool {
        self.lock().get(slot).is_some_and(|h| h.http2.is_some())
    }

    /// Idle HTTP/1.1 connections kept for the instance (for tests).
    #[cfg(test)]
    pub fn idle_count(&self, instance: &InstanceBase) -> usize {
        self.lock()
            .iter()
            .find(|h| h.authority == *instance.authority() && h.scheme == *instance.scheme())
            .map_or(0, |h| h.idle.len())
    }
}

impl<B: Send + 'static> Pool<B> {
    /// A pool that also closes expired connections when no request comes:
    /// otherwise a quiet instance would keep up to `MAX_IDLE_PER_HOST`
    /// sockets (and their tasks) open until its next request. A task sweeps
    /// every half `IDLE_TIMEOUT` for as long as the pool lives (outside a
    /// runtime, there is no sweep; expiry on use still applies).
    pub fn with_sweeper() -> Self {
        let pool = Self::default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let hosts = Arc::downgrade(&pool.hosts);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(hosts) = hosts.upgrade() else {
                        return;
                    };
                    let now = Instant::now();
                    for host in crate::sync::lock(&hosts).iter_mut() {
                        host.drop_expired_idle(now);
                        if host
                            .http2
                            .as_ref()
                            .is_some_and(|shared| shared.expired(now))
                        {
                            host.http2 = None;
                        }
                    }
                }
            });
        }
        pool
    }
}

/// The instance's place in `hosts`, added at the end if it is new (slots are
/// never removed, so a slot number stays valid).
fn slot_in<B>(hosts: &mut Vec<HostPool<B>>, instance: &InstanceBase) -> usize {
    // Byte-equal first: instances of one host come from the same token
    // responses, and `Authority`'s own `==` compares case-insensitively, a
    // byte at a time (some 100 instructions on every request).
    let same = |h: &HostPool<B>| {
        let authority = instance.authority();
        (h.authority.as_str() == authority.as_str() || h.authority == *authority)
            && h.scheme == *instance.scheme()
    };
    if let Some(slot) = hosts.iter().position(same) {
        return slot;
    }
    hosts.push(HostPool {
        scheme: instance.scheme().clone(),
        authority: instance.authority().clone(),
        idle: VecDeque::new(),
        http2: None,
        http1_only: false,
        connect_gate: Arc::default(),
    });
    hosts.len() - 1
}

impl<B> HostPool<B> {
    /// The most recently used idle connection, unless too old.
    fn newest_idle(&mut self, now: Instant) -> Option<Idle> {
        let idle = self.idle.pop_back()?;
        if now.duration_since(idle.since) > IDLE_TIMEOUT {
            // The newest is too old, so are all the others.
            self.idle.clear();
            return None;
        }
        Some(idle)
    }

    /// Drops the idle connections older than `IDLE_TIMEOUT` (the oldest are
    /// at the front).
    fn drop_expired_idle(&mut self, now: Instant) {
        while self
            .idle
            .front()
            .is_some_and(|idle| now.duration_since(idle.since) > IDLE_TIMEOUT)
        {
            self.idle.pop_front();
        }
    }

    /// The shared HTTP/2 connection, unless it expired (without this, every
    /// request would wait for `response_timeout` on a dead connection).
    fn shared_http2(&mut self, now: Instant) -> Option<http2::SendRequest<B>> {
        let shared = self.http2.as_mut()?;
        if shared.expired(now) {
            self.http2 = None;
            return None;
        }
        shared.last_used = now;
        Some(shared.sender.clone())
    }
}

/// SFMC's response body, as the protocol delivers it.
pub enum Received<B> {
    Http1(h1::ResponseBody<B>),
    Http2(Incoming),
}

impl<B: RequestBody> Body for Received<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(body) => body.is_end_stream(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(body) => body.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

/// An upstream response body. An HTTP/1.1 connection goes back to the pool
/// when this is dropped after the body was read to the end and the
/// connection is fit for more; dropped earlier (the client went away), the
/// connection is closed instead, since the rest of that response would
/// still arrive on it.
pub struct UpstreamBody<B: RequestBody> {
    inner: IdleTimeout<Received<B>>,
    give_back: Option<GiveBack<B>>,
}

struct GiveBack<B> {
    pool: Pool<B>,
    slot: usize,
}

impl<B: RequestBody> UpstreamBody<B> {
    /// An HTTP/1.1 body, whose connection goes back to `pool` at `slot`.
    pub fn pooled(inner: IdleTimeout<Received<B>>, pool: &Pool<B>, slot: usize) -> Self {
        Self {
            inner,
            give_back: Some(GiveBack {
                pool: pool.clone(),
                slot,
            }),
        }
    }

    /// A body whose connection needs no giving back (HTTP/2 streams).
    pub fn unpooled(inner: IdleTimeout<Received<B>>) -> Self {
        Self {
            inner,
            give_back: None,
        }
    }
}

impl<B: RequestBody> Drop for UpstreamBody<B> {
    fn drop(&mut self) {
        let Some(back) = self.give_back.take() else {
            return;
        };
        let Received::Http1(body) = self.inner.get_mut() else {
            return;
        };
        match body.take_idle() {
            Some(h1::AfterBody::Idle(connection)) => back.pool.keep_idle(back.slot, connection),
            // SFMC answered before the upload's end: the client is still
            // sending it (bounded by the client's own idle timeout).
            Some(h1::AfterBody::Drain(rest)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(rest);
                }
            }
            None => {}
        }
    }
}

impl<B: RequestBody> Body for UpstreamBody<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
