//! One client connection's life: telling HTTP/2 from HTTP/1.1 by its first
//! bytes, hyper serving it under this module's deadlines, shedding and
//! graceful shutdown, and — HTTP/1.1 — parking it while it is idle.
//!
//! **Parking.** hyper holds an 8 KiB read buffer, an 8 KiB write buffer and
//! about 2 KiB of state for as long as it serves a connection, idle or not,
//! so 10,000 idle keep-alive clients would cost some 200 MiB. A connection
//! waiting for its next request head for [`PARK_AFTER`] is taken back from
//! hyper instead: hyper's graceful shutdown ends an idle HTTP/1.1 connection
//! at once, without closing the socket, and gives back the socket and any
//! bytes it had read but not parsed. Only at a message boundary: its last
//! response written out *and* its last request body read to its end (SFMC
//! may answer an upload before it is all sent) — otherwise the rest of a
//! body would be read as the next request's head. hyper's own end (the
//! client closed, or asked to) is awaited as hyper's future, which writes
//! out what it still buffers and shuts the socket down. The parked
//! connection then waits for the client's next bytes with no buffer at all,
//! and a new hyper connection serves them (nginx, likewise, frees a
//! keep-alive connection's buffers).
//! The client sees nothing of it: the same socket, the same keep-alive
//! deadline (`header_read_timeout` from the end of the last response, see
//! `activity`), the same answers.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::activity::{Activity, Entry as Registered, Registry};
use super::client_io::{ClientIo, Protocol};
use super::limit::Slot;
use super::service::ConnectionService;
use crate::config::ServerSettings;
use crate::gauge::Raised;
use crate::proxy::Entry;
use crate::reload::Live;

/// How long an HTTP/1.1 connection waits for its next request before it is
/// parked. Long enough that a client sending request after request never
/// is (re-serving costs a new hyper connection: a few microseconds), short
/// enough that idle connections hold no buffers within a second.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// hyper's builders for the two protocols, with the `[server]` limits.
#[derive(Clone)]
pub struct Protocols {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

/// One accepted connection: its activity and its slot under `max_connections`.
pub struct Connection {
    pub activity: Arc<Activity>,
    pub slot: Slot,
}

/// A connection's task state besides its socket, its hyper builders and its
/// service. What it holds is released when the task ends, however it ends.
struct Life {
    activity: Arc<Activity>,
    head: Duration,
    idle: Duration,
    parked: Gauge,
    /// The progress mark when the connection was last parked: it is parked
    /// again only after a request made progress, so a client that leaves a
    /// request head half-sent is not parked and re-served over and over.
    parked_at: Option<u64>,
    _open: Raised,
    _registered: Registered,
    _slot: Slot,
}

/// How hyper's serving of an HTTP/1.1 connection ended.
enum Ended {
    /// Done: hyper finished the connection (the client closed it or asked
    /// to, or a graceful shutdown; its last bytes written and the socket
    /// shut down), or it was closed by a deadline, shedding, or an error.
    Closed,
    /// Taken back from hyper while idle at a message boundary: park it.
    Idle(http1::Parts<ClientIo, ConnectionService>),
}

type Http1Connection = http1::Connection<ClientIo, ConnectionService>;

impl Connection {
    /// The connection's task.
    pub fn serve(
        self,
        (socket, peer, entry): (TcpStream, SocketAddr, Entry),
        live: &Arc<Live>,
        protocols: &Arc<Protocols>,
        registry: &Arc<Registry>,
        server: &ServerSettings,
    ) -> impl Future<Output = ()> + Send + 'static {
        let current = live.current();
        let (open, parked) = (
            current.metrics().client_connections(),
            current.metrics().client_connections_parked(),
        );
        drop(current);
        let service = ConnectionService::new(live.clone(), self.activity.clone(), peer, entry);
        let life = Life {
            _open: Raised::new(&open),
            _registered: registry.register(self.activity.clone()),
            activity: self.activity,
            head: server.header_read_timeout,
            idle: server.idle_timeout,
            parked,
            parked_at: None,
            _slot: self.slot,
        };
        life.run(socket, service, protocols.clone())
    }
}

impl Life {
    // Not an `async fn`: that would copy `self` and every argument into a
    // second slot of the task for its whole life.
    #[allow(clippy::manual_async_fn)]
    fn run(
        mut self,
        socket: TcpStream,
        service: ConnectionService,
        protocols: Arc<Protocols>,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let Some((protocol, io)) = self.detect(socket).await else {
                return;
            };
            if protocol == Protocol::Http2 {
                // Boxed: it is over a kilobyte, and the task should not be.
                let connection = Box::pin(protocols.http2.serve_connection(io, service));
                return self.http2(connection).await;
            }
            // Boxed, and a new box each time: a parked connection holds none
            // of hyper's state.
            let mut connection = Box::new(protocols.http1.serve_connection(io, service));
            loop {
                // Bound in the pattern: a binding of the whole would keep
                // its room in the task across the park.
                let Ended::Idle(http1::Parts {
                    mut io,
                    read_buf,
                    service,
                    ..
                }) = self.http1(connection).await
                else {
                    return;
                };
                io.give_back(read_buf);
                self.parked_at = Some(self.activity.progress_mark());
                // Bytes of a next request already read: serve them now.
                if !io.has_unread() && !self.park(&io).await {
                    return;
                }
                connection = Box::new(protocols.http1.serve_connection(io, service));
            }
        }
    }

    /// Reads the first bytes, under the first head's deadline.
    async fn detect(&mut self, socket: TcpStream) -> Option<(Protocol, ClientIo)> {
        let deadline = self.activity.deadline(self.head, self.idle)?;
        tokio::select! {
            detected = ClientIo::detect(socket, &self.activity) => match detected {
                Ok(detected) => detected,
                Err(error) => {
                    tracing::debug!(%error, "connection ended before its first request");
                    None
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!("closing a connection that sent no request head in server.header_read_timeout");
                None
            }
            // Shed, or the server is shutting down: nothing was asked yet.
            () = self.activity.asked() => None,
        }
    }

    async fn http1(&mut self, mut connection: Box<Http1Connection>) -> Ended {
        let mut finishing = false;
        loop {
            // Requests do not wake this loop, so it looks again at least
            // every PARK_AFTER for a connection that has become idle.
            // Once asked to end, hyper ends it when what is in flight is done.
            let look_again = (!finishing).then(|| {
                self.park_at()
                    .unwrap_or_else(|| Instant::now() + PARK_AFTER)
            });
            let deadline = self.activity.http1_deadline(self.head, self.idle);
            let wake = [look_again, deadline]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + PARK_AFTER);
            tokio::select! {
                // hyper's own end: it writes out what it has buffered and
                // shuts the socket down before it resolves.
                result = Pin::new(&mut *connection) => {
                    if let Err(error) = result {
                        tracing::debug!(error = %crate::error::error_chain(&error), "connection ended with an error");
                    }
                    return Ended::Closed;
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    // Bytes may have moved since `wake` was computed.
                    let due = self.activity.http1_deadline(self.head, self.idle);
                    if due.is_some_and(|due| due <= now) {
                        tracing::debug!("closing a connection that sent no request head in server.header_read_timeout, or was idle for server.idle_timeout");
                        return Ended::Closed;
                    }
                    if finishing || self.park_at().is_none_or(|at| at > now) {
                        continue;
                    }
                    // Idle at a message boundary, hyper ends at once without
                    // touching the socket, and gives it back. Had it been in
                    // the middle of a message after all, its keep-alive is
                    // now off: it finishes that message and closes.
                    Pin::new(&mut *connection).graceful_shutdown();
                    match poll_fn(|cx| Poll::Ready(connection.poll_without_shutdown(cx))).await {
                        Poll::Ready(Ok(())) => return Ended::Idle(connection.into_parts()),
                        Poll::Ready(Err(_)) => return Ended::Closed,
                        Poll::Pending => finishing = true,
                    }
                }
                () = self.activity.asked() => {
                    if self.activity.finish_requested() {
                        if !finishing {
                            Pin::new(&mut *connection).graceful_shutdown();
                            finishing = true;
                        }
                    } else if self.activity.is_between_requests() {
                        // (A request may have started since it was picked.)
                        tracing::debug!("closed to make room under server.max_connections");
                        return Ended::Closed;
                    }
                }
            }
        }
    }

    /// When the connection is to be parked, as things stand now.
    fn park_at(&self) -> Option<Instant> {
        if self.parked_at == Some(self.activity.progress_mark()) {
            return None;
        }
        self.activity
            .parkable_since()
            .map(|since| since + PARK_AFTER)
    }

    /// Waits, holding no buffer, for the client's next bytes. `false` when
    /// the connection is to close instead (its keep-alive deadline, shed,
    /// shutdown).
    async fn park(&mut self, io: &ClientIo) -> bool {
        let Some(deadline) = self.activity.http1_deadline(self.head, self.idle) else {
            return true;
        };
        let _parked = Raised::new(&self.parked);
        tokio::select! {
            ready = io.socket().readable() => ready.is_ok(),
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!("closing a keep-alive connection that sent no request head in server.header_read_timeout");
                false
            }
            () = self.activity.asked() => {
                if !self.activity.finish_requested() {
                    tracing::debug!("closed to make room under server.max_connections");
                }
                false
            }
        }
    }

    async fn http2(
        &mut self,
        mut connection: Pin<Box<http2::Connection<ClientIo, ConnectionService, TokioExecutor>>>,
    ) {
        let mut finishing = false;
        loop {
            let deadline = self.activity.deadline(self.head, self.idle);
            let wake = deadline.unwrap_or_else(|| Instant::now() + self.idle);
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(error = %crate::error::error_chain(&error), "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake) => {
                    let due = self.activity.deadline(self.head, self.idle);
                    if due.is_some_and(|due| due <= Instant::now()) {
                        tracing::debug!("closing an HTTP/2 connection idle for server.idle_timeout");
                        return;
                    }
                }
                () = self.activity.asked() => {
                    if self.activity.finish_requested() {
                        if !finishing {
                            connection.as_mut().graceful_shutdown();
                            finishing = true;
                        }
                    } else if self.activity.is_between_requests() {
                        tracing::debug!("closed to make room under server.max_connections");
                        return;
                    }
                }
            }
        }
    }
}
