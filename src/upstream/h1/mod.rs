//! The HTTP/1.1 upstream client: one connection to an SFMC instance, a
//! request at a time, driven by the request's own task — no connection
//! task, no channel between tasks. The request is written (`upload`) while
//! the response head is read (`head`, with `httparse`), so an early answer
//! (a 401 or 413 before the upload ends) is seen; the response body is read
//! off the same socket as the proxy passes it on (`body`, `chunked`).
//!
//! Why not hyper's client (hyper stays on the client-facing side, and for
//! HTTP/2): it spends a third of the proxy's instructions a request in its
//! connection task, the channel to it and the body channel back; and it
//! reads on as soon as a response ends, while the body's last piece still
//! holds its read buffer, so every response lands in freshly allocated
//! memory. Here the connection's read buffer is read into only while a
//! request waits for it, so once the last response's pieces are passed on
//! it is reused in place.
//!
//! A connection is handed back to the pool (by [`ResponseBody`], once its
//! body was read to the end) only when nothing can be left on it: the
//! request was written whole, the response was delimited by length or
//! chunks, ended exactly there, and neither side asked to close.

mod body;
mod chunked;
mod head;
mod scripted;
mod upload;

use std::any::Any;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use http::{Method, Request, Response};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::RequestBody;
use crate::gauge::Raised;
pub use body::{AfterBody, ResponseBody};
use head::{BodyHint, ResponseHead};
pub(crate) use scripted::read_response;
use upload::{Upload, UploadError};

/// What a connection runs over: TCP, or TLS on TCP (or a tunnel).
pub trait Io: Any + AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The read buffer's first size, and the least room a read of a head gets.
const READ_BUFFER: usize = 8 * 1024;
/// The most a body read asks room for: a 64 KiB response in one or two
/// reads, and no more kept per idle connection than that.
const MAX_BODY_READ: usize = 64 * 1024;

pub struct Connection {
    io: Box<dyn Io>,
    /// What SFMC sent that is not yet taken; empty between exchanges.
    read: BytesMut,
    /// The request head's buffer, reused from one request to the next.
    write: Vec<u8>,
    /// The open-connections gauge, one higher while this lives.
    _open: Raised,
}

/// Why an exchange failed.
#[derive(Debug)]
pub struct Failure {
    /// What happened, in words for the client's 502.
    pub message: String,
    /// The connection ended with no byte of an answer after (some of) the
    /// request was written: on a reused connection, SFMC closing it just
    /// then, so a repeatable request may go out again.
    pub unanswered: bool,
}

impl Connection {
    pub fn new<T: Io>(io: T, open: &Gauge) -> Self {
        Self {
            io: Box::new(io),
            read: BytesMut::new(),
            write: Vec::new(),
            _open: Raised::new(open),
        }
    }

    /// Whether the connection still looks usable: SFMC has neither closed
    /// it nor sent anything unasked since the last exchange (the socket's
    /// readiness, and if it was readable one non-blocking read; hyper's
    /// connection task learns the same by reading all along).
    pub fn is_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Over TCP (or TLS on TCP, how SFMC is reached): the socket has not
        // been readable since the last read, which drained it, so nothing
        // came, not even a close, and no system call is needed to know.
        let io: &dyn Any = &*self.io;
        let tcp = match io.downcast_ref::<TcpStream>() {
            Some(tcp) => Some(tcp),
            None => io
                .downcast_ref::<TlsStream<TcpStream>>()
                .map(|tls| tls.get_ref().0),
        };
        if tcp.is_some_and(|tcp| tcp.poll_read_ready(&mut cx).is_pending()) {
            return true;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        // Pending: nothing to read, the connection is open.
        Pin::new(&mut *self.io)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Sends `request` (its URI in origin form, or absolute for a forward
    /// proxy; its `Host` set) and returns the response once its head has
    /// arrived, the body streaming from this connection.
    pub async fn send<B: RequestBody>(
        mut self,
        request: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, Failure> {
        let (parts, body) = request.into_parts();
        let hint = BodyHint {
            ended: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let mut head = std::mem::take(&mut self.write);
        let outgoing = head::encode_request(&mut head, &parts, hint);
        let head_request = parts.method == Method::HEAD;
        let mut exchange = Exchange {
            upload: Some(Upload::new(head, outgoing, body)),
            write_failed: None,
            head_request,
            received: false,
        };
        let head = poll_fn(|cx| exchange.poll_head(cx, &mut self)).await?;
        // Answered before the whole request was sent: SFMC may not read the
        // rest, or read it as a request of its own, so the connection is
        // not used again.
        let keep_alive =
            head.keep_alive && exchange.write_failed.is_none() && exchange.upload.is_none();
        let body = ResponseBody::new(self, head.framing, keep_alive, exchange.upload);
        Ok(Response::from_parts(head.parts, body))
    }

    /// Reads more of SFMC's answer, with room for at least `want` bytes.
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<std::io::Result<usize>> {
        if self.read.is_empty() {
            // All of the buffer again, once the pieces passed on earlier are
            // gone: a response as large as the buffer has grown to comes in
            // one read (no allocation; nothing happens if it is smaller).
            let _ = self.read.try_reclaim(MAX_BODY_READ);
        }
        if self.read.capacity() - self.read.len() < want {
            // In place too when it can be.
            self.read.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.read)
    }
}

/// One request's way to its response head.
struct Exchange<B> {
    /// The request still being written.
    upload: Option<Upload<B>>,
    /// Writing failed; the answer may have come before.
    write_failed: Option<std::io::Error>,
    head_request: bool,
    /// Some bytes of an answer arrived (perhaps only a 1xx head).
    received: bool,
}

impl<B: RequestBody> Exchange<B> {
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        connection: &mut Connection,
    ) -> Poll<Result<ResponseHead, Failure>> {
        loop {
            if let Some(upload) = self.upload.as_mut() {
                match upload.poll_write(cx, &mut *connection.io) {
                    Poll::Ready(Ok(())) => {
                        if let Some(done) = self.upload.take() {
                            connection.write = done.into_buffer();
                        }
                    }
                    Poll::Ready(Err(UploadError::Io(error))) => {
                        // SFMC may have answered and closed (a 413 for a
                        // large upload): read what it sent.
                        self.upload = None;
                        self.write_failed = Some(error);
                    }
                    Poll::Ready(Err(UploadError::Body(message))) => {
                        return Poll::Ready(Err(Failure {
                            message,
                            unanswered: false,
                        }));
                    }
                    Poll::Pending => {}
                }
            }
            match head::parse_response(&mut connection.read, self.head_request) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(error) => {
                    return Poll::Ready(Err(Failure {
                        message: error.to_string(),
                        unanswered: false,
                    }));
                }
            }
            let failed = match connection.poll_read(cx, READ_BUFFER) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => None,
                Poll::Ready(Ok(_)) => {
                    self.received = true;
                    continue;
                }
                Poll::Ready(Err(error)) => Some(error),
            };
            return Poll::Ready(Err(self.ended(failed, !self.received)));
        }
    }

    /// The connection ended (`read`: with an error) before a whole head.
    fn ended(&mut self, read: Option<std::io::Error>, nothing_yet: bool) -> Failure {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        let reset = |e: &std::io::Error| matches!(e.kind(), ConnectionReset | BrokenPipe);
        let unanswered = nothing_yet
            && read.as_ref().is_none_or(reset)
            && self.write_failed.as_ref().is_none_or(reset);
        let message = match (self.write_failed.take(), read, nothing_yet) {
            (Some(error), _, true) => format!("sending the request to SFMC failed: {error}"),
            (_, Some(error), _) => format!("reading SFMC's response failed: {error}"),
            (_, None, true) => "SFMC closed the connection without answering".to_owned(),
            (_, None, false) => {
                "SFMC closed the connection in the middle of its response head".to_owned()
            }
        };
        Failure {
            message,
            unanswered,
        }
    }
}

#[cfg(test)]
mod tests;
