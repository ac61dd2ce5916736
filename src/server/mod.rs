//! Accepting connections: HTTP/1.1 and h2c on one listener, every connection
//! bounded in time and size, a connection limit that sheds the longest-idle
//! connection rather than locking new clients out, and graceful shutdown that
//! lets in-flight requests finish. Start-up work (the token prefetch) is begun
//! here, so the binary and the tests that call [`run`] both do it.
//!
//! Limits per connection: `header_read_timeout` until its first request head
//! (hyper bounds later HTTP/1 heads itself), `idle_timeout` while nothing is
//! in flight and no bytes move (see `activity`), `max_concurrent_streams`
//! HTTP/2 streams, and flow-control windows and read buffers that bound what a
//! client can make the proxy hold before a request is handled.

mod activity;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{ServerSettings, Settings};
use crate::proxy::{BuildError, Entry, Proxy};
use activity::{Activity, Registry, Streaming};

/// How often a full accept loop looks again for a connection to shed.
const SHED_RETRY: Duration = Duration::from_millis(100);

/// How long in-flight requests may run after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The largest request head (HTTP/1 read buffer, HTTP/2 header list): far
/// above any SFMC call, and a bound on what a client can park per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// HTTP/2 flow control: how much request body one stream, and one connection,
/// may send before the proxy reads it. The connection window bounds what all
/// of a connection's streams together can make the proxy buffer.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Builds the proxy from `settings` and serves `listener` until `shutdown`
/// resolves. The caller binds, so tests can pass a listener on port 0.
pub async fn run(
    listener: TcpListener,
    settings: Arc<Settings>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BuildError> {
    run_with_admin(listener, None, settings, shutdown).await
}

/// [`run`] with `admin` (bound for `server.admin_listen`) beside it.
pub async fn run_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    settings: Arc<Settings>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BuildError> {
    let proxy = Arc::new(Proxy::new(settings)?);
    serve_with_admin(listener, admin, proxy, shutdown).await;
    Ok(())
}

fn builder(server: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.max_concurrent_streams)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    builder
}

/// Serves an already-built proxy (the demo and `check` share one). The
/// start-up prefetch (`token.prefetch`) is begun before the first connection
/// is accepted, so the first readiness probe sees it.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    serve_with_admin(listener, None, proxy, shutdown).await;
}

/// [`serve`], and `admin` (`server.admin_listen`) beside it: its connections
/// are served `/_proxy/*` alone, without the inbound key, under the same
/// connection limit and deadlines.
pub async fn serve_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) {
    if proxy.settings().token.prefetch {
        crate::prefetch::start(proxy.settings(), proxy.tokens());
    }
    let server = proxy.settings().server.clone();
    let builder = Arc::new(builder(&server));
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let registry = Arc::new(Registry::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (accepted, entry) = tokio::select! {
            accepted = listener.accept() => (accepted, Entry::Main),
            accepted = accept(admin.as_ref()) => (accepted, Entry::Admin),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: pause rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: make room by closing the connection idle the longest
                // (a silent socket first of all), so a new client — a health
                // probe — is served. When every connection is busy, wait.
                if registry.shed_longest_idle() {
                    tracing::debug!(
                        "server.max_connections reached; closing the longest-idle connection"
                    );
                } else {
                    tracing::warn!(
                        max_connections = server.max_connections,
                        "server.max_connections reached and every connection is busy; new connections wait"
                    );
                }
                // Look again now and then: a connection busy now may be
                // between requests a moment later.
                let waited = loop {
                    tokio::select! {
                        permit = connections.clone().acquire_owned() => break permit.ok(),
                        () = tokio::time::sleep(SHED_RETRY) => {
                            registry.shed_longest_idle();
                        }
                        () = &mut shutdown => break None,
                    }
                };
                match waited {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            activity: Activity::new(),
            permit,
        };
        connection.spawn(
            (stream, peer, entry),
            &proxy,
            &builder,
            &registry,
            &graceful,
            &server,
        );
    }
    drop(listener);
    drop(admin);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("shut down cleanly"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; dropping open connections"),
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// One accepted connection: its activity and its slot under `max_connections`.
struct Connection {
    activity: Arc<Activity>,
    permit: OwnedSemaphorePermit,
}

impl Connection {
    fn spawn(
        self,
        (stream, peer, entry): (TcpStream, SocketAddr, Entry),
        proxy: &Arc<Proxy>,
        builder: &auto::Builder<TokioExecutor>,
        registry: &Arc<Registry>,
        graceful: &GracefulShutdown,
        server: &ServerSettings,
    ) {
        let open = proxy.metrics().client_connections();
        let (proxy, activity) = (proxy.clone(), self.activity.clone());
        let service = service_fn(move |request| {
            let (proxy, activity) = (proxy.clone(), activity.clone());
            // Busy from the moment hyper has the head until the response
            // head is ready; the body then streams under the idle deadline.
            let busy = activity.begin_request();
            async move {
                let response = proxy.handle(request, peer, entry).await;
                drop(busy);
                Ok::<_, Infallible>(response.map(|body| Streaming::new(body, activity)))
            }
        });
        let io = TokioIo::new(stream);
        let connection = builder.serve_connection(io, service).into_owned();
        let connection = graceful.watch(connection);
        let entry = registry.register(self.activity.clone());
        let (head, idle) = (server.header_read_timeout, server.idle_timeout);
        open.inc();
        tokio::spawn(async move {
            tokio::pin!(connection);
            loop {
                let deadline = self.activity.deadline(head, idle);
                let wake = deadline.unwrap_or_else(|| Instant::now() + idle);
                tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!(error = %crate::error::error_chain(&*error), "connection ended with an error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(wake) => {
                        // Bytes may have moved since `wake` was computed.
                        let due = self.activity.deadline(head, idle);
                        if due.is_some_and(|due| due <= Instant::now()) {
                            tracing::debug!("closing a connection that sent no request head in server.header_read_timeout, or was idle for server.idle_timeout");
                            break;
                        }
                    }
                    () = self.activity.shed_requested() => {
                        // A request may have started since it was picked.
                        if self.activity.is_between_requests() {
                            tracing::debug!("closed to make room under server.max_connections");
                            break;
                        }
                    }
                }
            }
            drop(entry);
            drop(self.permit);
            open.dec();
        });
    }
}
