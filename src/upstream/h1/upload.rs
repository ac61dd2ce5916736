//! Writing a request: the head, then the body as the client sends it,
//! framed as the head said (held to its `Content-Length`, or chunked). A
//! body piece that is ready when the head goes out goes with it, in one
//! `writev`; a piece is never copied (only the few bytes of chunk framing
//! are).

use std::io::{IoSlice, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};

use super::Io;
use super::head::Outgoing;
use crate::upstream::RequestBody;

/// Why the request could not be written.
#[derive(Debug)]
pub enum UploadError {
    /// Writing to SFMC failed (it may still have answered).
    Io(std::io::Error),
    /// The request body failed, or broke its own framing: the connection
    /// is not usable after it.
    Body(String),
}

pub struct Upload<B> {
    /// `None` once the body has ended (or is not sent).
    body: Option<B>,
    outgoing: Outgoing,
    /// Of a `Content-Length` body, the bytes still owed.
    owed: u64,
    /// Head and chunk framing not yet written (from `written` on), before
    /// `data`, and `tail` after it.
    framing: Vec<u8>,
    written: usize,
    data: Bytes,
    tail: &'static [u8],
    /// Nothing written since the last flush (TLS holds records until then).
    flushed: bool,
}

impl<B: RequestBody> Upload<B> {
    /// `head`: the encoded request head, which goes out first.
    pub fn new(head: Vec<u8>, outgoing: Outgoing, body: B) -> Self {
        let (body, owed) = match outgoing {
            Outgoing::Empty => (None, 0),
            Outgoing::Length(n) => (Some(body), n),
            Outgoing::Chunked => (Some(body), 0),
        };
        Self {
            body,
            outgoing,
            owed,
            framing: head,
            written: 0,
            data: Bytes::new(),
            tail: b"",
            flushed: true,
        }
    }

    /// The framing buffer, for the connection's next request.
    pub fn into_buffer(self) -> Vec<u8> {
        self.framing
    }

    fn queued(&self) -> bool {
        self.written < self.framing.len() || !self.data.is_empty() || !self.tail.is_empty()
    }

    /// Writes until the request is sent (`Ready(Ok)`), or waits for the
    /// client's body or for room in the socket.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut dyn Io,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            // Take the body's next piece when nothing but framing is
            // queued, so that it goes out with it.
            if self.data.is_empty()
                && self.tail.is_empty()
                && let Some(body) = self.body.as_mut()
                && let Poll::Ready(frame) = Pin::new(body).poll_frame(cx)
            {
                self.take(frame)?;
                continue;
            }
            if self.queued() {
                let slices = [
                    IoSlice::new(&self.framing[self.written..]),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.tail),
                ];
                let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))
                    .map_err(UploadError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Io(std::io::ErrorKind::WriteZero.into())));
                }
                self.advance(n);
                self.flushed = false;
                continue;
            }
            if !self.flushed {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Io)?;
                self.flushed = true;
            }
            return match self.body {
                // Waiting for the client's body (its waker is registered).
                Some(_) => Poll::Pending,
                None => Poll::Ready(Ok(())),
            };
        }
    }

    fn advance(&mut self, mut n: usize) {
        let framing = (self.framing.len() - self.written).min(n);
        self.written += framing;
        n -= framing;
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        self.tail = &self.tail[n.min(self.tail.len())..];
        if self.written == self.framing.len() {
            self.framing.clear();
            self.written = 0;
        }
    }

    /// Queues what the body gave.
    fn take(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, B::Error>>,
    ) -> Result<(), UploadError> {
        let frame = match frame {
            None => return self.end(),
            Some(Err(error)) => {
                self.body = None;
                let error: Box<dyn std::error::Error + Send + Sync> = error.into();
                return Err(UploadError::Body(format!(
                    "the request body failed: {}",
                    crate::error::error_chain(&*error)
                )));
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            // Trailers: the last frame.
            Err(_trailers) => return self.end(),
        };
        // An empty chunk would end a chunked body.
        if data.is_empty() {
            return Ok(());
        }
        match self.outgoing {
            Outgoing::Length(_) => {
                let length = data.len() as u64;
                if length > self.owed {
                    self.body = None;
                    return Err(UploadError::Body(
                        "the request body is longer than its Content-Length".into(),
                    ));
                }
                self.owed -= length;
                self.data = data;
            }
            Outgoing::Chunked => {
                // Writing to a Vec cannot fail.
                let _ = write!(self.framing, "{:x}\r\n", data.len());
                self.data = data;
                self.tail = b"\r\n";
            }
            Outgoing::Empty => {}
        }
        Ok(())
    }

    /// The body has ended. Trailers the client sent are not passed on: they
    /// could carry what the head may not (credentials, the proxy's control
    /// headers, framing), and hyper's client, which sends only those a
    /// `Trailer` header (hop-by-hop, so stripped) names, sent none either.
    fn end(&mut self) -> Result<(), UploadError> {
        self.body = None;
        match self.outgoing {
            Outgoing::Length(_) if self.owed > 0 => Err(UploadError::Body(format!(
                "the request body ended {} bytes before its Content-Length",
                self.owed
            ))),
            Outgoing::Chunked => {
                self.framing.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            Outgoing::Length(_) | Outgoing::Empty => Ok(()),
        }
    }

    /// The client's body, unsent: what SFMC answered before it was all
    /// sent, to be read to its end and dropped (see `ResponseBody`).
    pub fn into_body(self) -> Option<B> {
        self.body
    }
}
