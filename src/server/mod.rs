//! Accepting connections: HTTP/1.1 and h2c on one listener, every connection
//! bounded in time and size, a connection limit that sheds the longest-idle
//! connection rather than locking new clients out, and graceful shutdown that
//! lets in-flight requests finish (for `server.shutdown_timeout`). Start-up
//! work (the token prefetch) is begun here, so the binary and the tests that
//! call [`run`] both do it.
//!
//! A reload (see `reload`) reaches connections accepted after it: each is
//! served with the `[server]` limits in force when it was accepted, and each
//! of its requests with the generation current when the request began.
//!
//! Limits per connection: `header_read_timeout` until its first request head
//! (hyper bounds later HTTP/1 heads itself), `idle_timeout` while nothing is
//! in flight and no bytes move (see `activity`), `max_concurrent_streams`
//! HTTP/2 streams, and flow-control windows and read buffers that bound what a
//! client can make the proxy hold before a request is handled.

mod activity;
mod limit;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::config::{ServerSettings, Settings};
use crate::proxy::{BuildError, Entry};
use crate::reload::Live;
use crate::telemetry::Logged;
use activity::{Activity, Registry, Streaming};
pub use limit::raise_open_files_limit;
use limit::{ConnectionLimit, Slot};

/// How often a full accept loop looks again for a connection to shed.
const SHED_RETRY: Duration = Duration::from_millis(100);

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
    let live = Arc::new(Live::new(settings)?);
    serve_with_admin(vec![listener], admin, live, shutdown).await;
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

/// Serves an already-built proxy (the binary's, the demo's, a test's), and
/// whatever generation a reload makes of it. The start-up prefetch
/// (`token.prefetch`) is begun before the first connection is accepted, so
/// the first readiness probe sees it.
pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: impl Future<Output = ()>) {
    serve_with_admin(vec![listener], None, live, shutdown).await;
}

/// [`serve`], and `admin` (`server.admin_listen`) beside it: its connections
/// are served `/_proxy/*` alone, without the inbound key, under the same
/// connection limit and deadlines.
pub async fn serve_with_admin(
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
) {
    let mut listening: Vec<(TcpListener, Entry)> = listeners
        .into_iter()
        .map(|listener| (listener, Entry::Main))
        .collect();
    listening.extend(admin.map(|admin| (admin, Entry::Admin)));
    let mut turn = 0;
    let first = live.current();
    if first.settings().token.prefetch {
        crate::prefetch::start(first.settings(), first.tokens());
    }
    drop(first);
    let mut limits = Limits::new(live.settings());
    let registry = Arc::new(Registry::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (accepted, entry) = tokio::select! {
            accepted = accept_any(&listening, &mut turn) => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (EMFILE, ENFILE): the process may
                // open fewer files than max_connections, so idle sockets
                // would lock every client out. Make room as at the
                // connection limit — close the connection idle the longest —
                // and pause rather than spin.
                let out_of_files = matches!(error.raw_os_error(), Some(23 | 24));
                let shed = out_of_files && registry.shed_longest_idle();
                tracing::warn!(
                    %error,
                    closed_an_idle_connection = shed,
                    "accept failed{}",
                    if out_of_files {
                        " (out of file descriptors: raise the open-files limit, e.g. ulimit -n or LimitNOFILE=, or lower server.max_connections)"
                    } else {
                        ""
                    }
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A reload since the last accept applies to this connection.
        limits.follow(live.settings());
        let slot = match limits.connections.try_acquire() {
            Some(slot) => slot,
            None => {
                // Full: make room by closing the connection idle the longest
                // (a silent socket first of all), so a new client — a health
                // probe — is served. When every connection is busy, wait.
                if registry.shed_longest_idle() {
                    tracing::debug!(
                        "server.max_connections reached; closing the longest-idle connection"
                    );
                } else {
                    tracing::warn!(
                        max_connections = limits.connections.size(),
                        "server.max_connections reached and every connection is busy; new connections wait"
                    );
                }
                // Look again now and then: a connection busy now may be
                // between requests a moment later.
                let waited = loop {
                    tokio::select! {
                        slot = limits.connections.acquire() => break slot,
                        () = tokio::time::sleep(SHED_RETRY) => {
                            registry.shed_longest_idle();
                        }
                        () = &mut shutdown => break None,
                    }
                };
                match waited {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            activity: Activity::new(),
            slot,
        };
        connection.spawn(
            (stream, peer, entry),
            &live,
            &limits.builder,
            &registry,
            &graceful,
            &limits.settings.server,
        );
    }
    drop(listening);
    // The timeout in force now: a reload may have changed it.
    let grace = live.settings().server.shutdown_timeout;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("shut down cleanly"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            shutdown_timeout = %humantime::format_duration(grace),
            "server.shutdown_timeout over; dropping open connections"
        ),
    }
}

/// The `[server]` limits new connections get: rebuilt when a reload brought
/// other settings.
struct Limits {
    settings: Arc<Settings>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: ConnectionLimit,
}

impl Limits {
    fn new(settings: Arc<Settings>) -> Self {
        Self {
            builder: Arc::new(builder(&settings.server)),
            connections: ConnectionLimit::new(settings.server.max_connections),
            settings,
        }
    }

    /// Takes `current` if it is not the settings already followed (one
    /// pointer comparison per accept when nothing was reloaded).
    fn follow(&mut self, current: Arc<Settings>) {
        if Arc::ptr_eq(&self.settings, &current) {
            return;
        }
        self.builder = Arc::new(builder(&current.server));
        self.connections.resize(current.server.max_connections);
        self.settings = current;
    }
}

/// The next connection on any of `listeners`, and which entry it came by.
/// The listener asked first moves on each time (`turn`), so a busy address
/// cannot keep another's connections waiting.
async fn accept_any(
    listeners: &[(TcpListener, Entry)],
    turn: &mut usize,
) -> (std::io::Result<(TcpStream, SocketAddr)>, Entry) {
    let count = listeners.len();
    std::future::poll_fn(|cx| {
        for offset in 0..count {
            let (listener, entry) = &listeners[(*turn + offset) % count];
            if let std::task::Poll::Ready(accepted) = listener.poll_accept(cx) {
                *turn = (*turn + offset + 1) % count;
                return std::task::Poll::Ready((accepted, *entry));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// hyper's service for one connection: each request is handled on the
/// generation current when it began, and the connection counts as busy from
/// the moment hyper has the head until the response head is ready (the body
/// then streams under the idle deadline).
fn connection_service(
    live: Arc<Live>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    entry: Entry,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Streaming<Logged>>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(move |request| {
        let (live, activity) = (live.clone(), activity.clone());
        let busy = activity.begin_request();
        // Boxed: hyper keeps a box the size of this future for as long as
        // the connection lives, idle or not, and the request's own future
        // (guard, token, upstream send: over 14 KiB) is needed only while a
        // request is in flight. So an idle connection holds a pointer, not
        // the whole pipeline's state.
        let handling = Box::pin(async move { live.handle(request, peer, entry).await });
        async move {
            let response = handling.await;
            drop(busy);
            Ok::<_, Infallible>(response.map(|body| Streaming::new(body, activity)))
        }
    })
}

/// One accepted connection: its activity and its slot under `max_connections`.
struct Connection {
    activity: Arc<Activity>,
    slot: Slot,
}

impl Connection {
    fn spawn(
        self,
        accepted: (TcpStream, SocketAddr, Entry),
        live: &Arc<Live>,
        builder: &auto::Builder<TokioExecutor>,
        registry: &Arc<Registry>,
        graceful: &GracefulShutdown,
        server: &ServerSettings,
    ) {
        tokio::spawn(self.serve(accepted, live, builder, registry, graceful, server));
    }

    /// The connection's task: hyper's connection under this module's
    /// deadlines and shedding.
    fn serve(
        self,
        (stream, peer, entry): (TcpStream, SocketAddr, Entry),
        live: &Arc<Live>,
        builder: &auto::Builder<TokioExecutor>,
        registry: &Arc<Registry>,
        graceful: &GracefulShutdown,
        server: &ServerSettings,
    ) -> impl Future<Output = ()> + Send + 'static {
        let open = live.current().metrics().client_connections();
        let service = connection_service(live.clone(), self.activity.clone(), peer, entry);
        let io = TokioIo::new(stream);
        let connection = builder.serve_connection(io, service).into_owned();
        // Boxed here, not pinned inside the task: an `async` block keeps a
        // captured value and the local it is pinned into as two separate
        // slots, which would hold hyper's connection state (over a
        // kilobyte) twice for the connection's whole life.
        let mut connection = Box::pin(graceful.watch(connection));
        let entry = registry.register(self.activity.clone());
        let (head, idle) = (server.header_read_timeout, server.idle_timeout);
        open.inc();
        async move {
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
            drop(self.slot);
            open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<S: Service<R>, R>(_: &S) -> usize {
        std::mem::size_of::<S::Future>()
    }

    fn output_size<A, F: FnOnce(A) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// What an idle connection holds whatever its traffic: hyper keeps a
    /// box the size of the service's future and one of the response body
    /// for the connection's life, and the task holds its own state. These
    /// bounds keep a change from quietly making every idle connection
    /// kilobytes larger, or every request's copy of its own future.
    #[tokio::test]
    async fn an_idle_connection_holds_small_futures() {
        crate::tls::install_crypto_provider();
        let toml = r#"
[tenants.acme]
auth_url = "https://mc123.auth.marketingcloudapis.com/"
client_id = "id"
client_secret = "very-secret"
"#;
        let settings = Settings::from_toml(toml, |_| None, std::path::Path::new("."));
        let settings = Arc::new(settings.expect("settings"));
        let live = Arc::new(Live::new(settings.clone()).expect("proxy builds"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let _client = TcpStream::connect(address).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");

        let service = connection_service(live.clone(), Activity::new(), peer, Entry::Main);
        let service_future = future_size::<_, Request<Incoming>>(&service);
        assert!(
            service_future <= 128,
            "service future: {service_future} bytes"
        );
        // The request's own future is boxed and copied into its box once
        // per request: the rare paths (a new upstream connection) are
        // boxed within it, so that copy stays small.
        let handling = |request: Request<Incoming>| {
            let live = live.clone();
            async move { live.handle(request, peer, Entry::Main).await }
        };
        let request_future = output_size(&handling);
        assert!(
            request_future <= 8 * 1024,
            "request future: {request_future} bytes"
        );
        let body = std::mem::size_of::<Option<Streaming<Logged>>>();
        assert!(body <= 640, "response body: {body} bytes");

        let limits = Limits::new(settings.clone());
        let connection = Connection {
            activity: Activity::new(),
            slot: limits.connections.try_acquire().expect("slot"),
        };
        let (registry, graceful) = (Arc::new(Registry::default()), GracefulShutdown::new());
        let accepted = (stream, peer, Entry::Main);
        let server = &settings.server;
        let task = connection.serve(
            accepted,
            &live,
            &limits.builder,
            &registry,
            &graceful,
            server,
        );
        let task = std::mem::size_of_val(&task);
        assert!(task <= 512, "connection task: {task} bytes");
    }
}
