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
//! Limits per connection: `header_read_timeout` for each HTTP/1.1 request
//! head (the first from the accept, the next from the end of the response
//! before it) and for an HTTP/2 preface, `idle_timeout` while nothing is
//! in flight and no bytes move (see `activity`), `max_concurrent_streams`
//! HTTP/2 streams, and flow-control windows and read buffers that bound what a
//! client can make the proxy hold before a request is handled.

mod activity;
mod client_io;
mod connection;
mod limit;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{ServerSettings, Settings};
use crate::proxy::{BuildError, Entry};
use crate::reload::Live;
use activity::{Activity, Registry};
use connection::{Connection, Protocols};
use limit::ConnectionLimit;
pub use limit::raise_open_files_limit;

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

fn protocols(server: &ServerSettings) -> Protocols {
    let mut http1 = http1::Builder::new();
    // No hyper head timer: the connection's own deadlines time every head
    // (see `activity`), a parked connection's next one included, and it
    // saves hyper a timer per request.
    http1.header_read_timeout(None).max_buf_size(MAX_HEAD_BYTES);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.max_concurrent_streams)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    Protocols { http1, http2 }
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
    // Dropped early (the caller gave up on this future), the connections
    // are still asked to finish.
    let _finish = FinishOnDrop(registry.clone());
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
        tokio::spawn(connection.serve(
            (stream, peer, entry),
            &live,
            &limits.protocols,
            &registry,
            &limits.settings.server,
        ));
    }
    drop(listening);
    // The timeout in force now: a reload may have changed it.
    let grace = live.settings().server.shutdown_timeout;
    tokio::select! {
        () = finish(&registry) => tracing::info!("shut down cleanly"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            shutdown_timeout = %humantime::format_duration(grace),
            "server.shutdown_timeout over; dropping open connections"
        ),
    }
}

/// Asks every connection to finish and resolves when all have ended.
async fn finish(registry: &Registry) {
    registry.finish_all();
    registry.all_ended().await;
}

struct FinishOnDrop(Arc<Registry>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish_all();
    }
}

/// The `[server]` limits new connections get: rebuilt when a reload brought
/// other settings.
struct Limits {
    settings: Arc<Settings>,
    protocols: Arc<Protocols>,
    connections: ConnectionLimit,
}

impl Limits {
    fn new(settings: Arc<Settings>) -> Self {
        Self {
            protocols: Arc::new(protocols(&settings.server)),
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
        self.protocols = Arc::new(protocols(&current.server));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Logged;
    use activity::Streaming;
    use http::Request;
    use hyper::body::Incoming;
    use hyper::service::Service;
    use service::ConnectionService;

    fn future_size<S: Service<R>, R>(_: &S) -> usize {
        std::mem::size_of::<S::Future>()
    }

    fn output_size<A, F: FnOnce(A) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// What a connection holds whatever its traffic: hyper keeps a box the
    /// size of the service's future and one of the response body while it
    /// serves the connection, and the task holds its own state — all that a
    /// parked connection holds besides its socket. These bounds keep a
    /// change from quietly making every idle connection kilobytes larger, or
    /// every request's copy of its own future. (Sizes in this unoptimized
    /// test build; a release build's are smaller.)
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

        let service = ConnectionService::new(live.clone(), Activity::new(), peer, Entry::Main);
        let service_future = future_size::<_, Request<Incoming>>(&service);
        assert!(
            service_future <= 128,
            "service future: {service_future} bytes"
        );
        // The request's own future is boxed and copied into its box once
        // per request: the rare paths (a new upstream connection) are
        // boxed within it, so that copy stays small.
        let handling =
            |request: Request<crate::body::Inbound>| live.handle(request, peer, Entry::Main);
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
        let registry = Arc::new(Registry::default());
        let accepted = (stream, peer, Entry::Main);
        let server = &settings.server;
        let task = connection.serve(accepted, &live, &limits.protocols, &registry, server);
        let task = std::mem::size_of_val(&task);
        // Parked, this is the connection: the socket's state in it, the
        // wait for the next bytes, the keep-alive deadline's timer.
        assert!(task <= 800, "connection task: {task} bytes");
    }
}
