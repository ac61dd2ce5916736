//! The fake's server side: the accept loop (plain TCP or TLS with ALPN `h2`
//! and `http/1.1`), one hyper connection per socket (HTTP/1.1 or h2), and the
//! dispatch of each request by path to the auth host, the login pages, SOAP or
//! the REST instance. It numbers each connection for `transport`, and closes
//! one when a test asks or a handler hangs up.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::auth::token_endpoint;
use crate::instance::instance;
use crate::transport::{ConnectionId, HangUp};
use crate::{Reply, State, login, soap};

pub(super) fn tls_acceptor(config: &rustls::ServerConfig) -> TlsAcceptor {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Accepts until shutdown; open connections end with it (dropping the set aborts them).
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = state.stopped() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, tls.clone(), state.clone()));
                }
                Err(error) => {
                    tracing::debug!(%error, "fake tenant: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn serve(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let id = state.transport.opened();
    match tls {
        None => serve_io(stream, id, state.clone()).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve_io(stream, id, state.clone()).await,
            Err(error) => tracing::debug!(%error, "fake tenant: TLS handshake failed"),
        },
    }
    state.transport.closed(id);
}

async fn serve_io<I>(io: I, id: ConnectionId, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_state = state.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let state = service_state.clone();
        // The handlers find the connection's number on the request.
        req.extensions_mut().insert(id);
        async move {
            let reply = handle(req, &state).await;
            // A service error makes hyper close the connection unanswered.
            match reply.extensions().get::<HangUp>() {
                Some(_) => Err(std::io::Error::other("the fake hangs up, as asked")),
                None => Ok(reply),
            }
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        // A test's `close_connection`: hyper ends an idle connection at once.
        () = state.transport.close_requested(id) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "fake tenant: connection ended with an error");
    }
}

async fn handle(req: Request<Incoming>, state: &Arc<State>) -> Reply {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let reply = if path == "/v2/token" {
        token_endpoint(req, state).await
    } else if path == "/v2/authorize" {
        login::authorize(req, state).await
    } else if path.eq_ignore_ascii_case(soap::PATH) {
        soap::service(req, state).await
    } else {
        instance(req, state).await
    };
    let status = reply.status().as_u16();
    tracing::debug!(%method, %path, status, "fake tenant answered");
    reply
}
