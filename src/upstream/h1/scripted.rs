//! SFMC played from a script, for the fuzz target: the client's real
//! exchange (request written, head read, body read to its end) over an
//! in-memory socket that delivers the scripted bytes a few at a time, as
//! the network might.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{AfterBody, Connection};

/// What an exchange came to: the status, the body, its trailers, and
/// whether the connection would be kept (a clean end, and no byte after it).
pub(crate) type Outcome = (u16, Vec<u8>, Option<HeaderMap>, bool);

/// One `GET` (or `HEAD`) answered with `wire`, `step` bytes a read: what
/// the client made of it, or the error it gave.
pub(crate) fn read_response(
    wire: &[u8],
    head_request: bool,
    step: usize,
) -> Result<Outcome, String> {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().build().ok();
    }
    RUNTIME.with(|runtime| match runtime {
        Some(runtime) => runtime.block_on(exchange(wire, head_request, step)),
        None => Err("no runtime".to_owned()),
    })
}

async fn exchange(wire: &[u8], head_request: bool, step: usize) -> Result<Outcome, String> {
    let socket = Scripted {
        wire: Bytes::copy_from_slice(wire),
        step: step.max(1),
    };
    let connection = Connection::new(socket, &Default::default());
    let method = if head_request {
        Method::HEAD
    } else {
        Method::GET
    };
    let request = Request::builder()
        .method(method)
        .uri("/")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = connection.send(request).await.map_err(|f| f.message)?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        match frame.map_err(|e| e.to_string())?.into_data() {
            Ok(piece) => data.extend_from_slice(&piece),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let kept = match body.take_idle() {
        Some(AfterBody::Idle(connection)) => connection.read.is_empty() && left(&connection) == 0,
        _ => false,
    };
    Ok((status, data, trailers, kept))
}

/// The bytes the script has not delivered yet.
fn left(connection: &Connection) -> usize {
    let io: &dyn std::any::Any = &*connection.io;
    io.downcast_ref::<Scripted>()
        .map_or(0, |socket| socket.wire.len())
}

/// Reads come from `wire`, at most `step` bytes each, then the end;
/// writes are taken whole and dropped.
struct Scripted {
    wire: Bytes,
    step: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.wire.len()).min(buf.remaining());
        let piece = self.wire.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
