//! SFMC's response body, read off the connection as the proxy passes it on:
//! pieces of the read buffer, never copied. It owns the connection, and
//! gives it up for reuse ([`ResponseBody::take_idle`]) only after a clean
//! end. An upload SFMC answered before its end is kept going while the
//! response streams (a server may read on before it sends the body), but
//! that connection is not used again.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::chunked::{ChunkError, Decoded, Decoder};
use super::head::Framing;
use super::upload::Upload;
use super::{Connection, MAX_BODY_READ, READ_BUFFER};
use crate::idle::BodyError;
use crate::upstream::RequestBody;

/// Why SFMC's response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error(transparent)]
    Chunked(#[from] ChunkError),
    #[error("SFMC closed the connection {0} bytes before the end of its response body")]
    ClosedEarly(u64),
    #[error("SFMC closed the connection in the middle of its chunked response body")]
    ClosedInChunks,
    #[error("reading SFMC's response body failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A finished response's connection, see [`ResponseBody::take_idle`].
pub enum AfterBody {
    Idle(Connection),
    /// Reads the rest of the client's request body, for nothing.
    Drain(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl From<BodyReadError> for BodyError {
    fn from(error: BodyReadError) -> Self {
        BodyError::Sfmc(Box::new(error))
    }
}

enum Reading {
    Length(u64),
    Chunked(Decoder),
    Close,
    Done,
}

pub struct ResponseBody<B> {
    /// `None` once dropped after an error or an end that leaves it unusable.
    connection: Option<Connection>,
    reading: Reading,
    keep_alive: bool,
    /// The request body still being sent: SFMC answered before its end.
    /// Boxed: rare, and the body is moved along with every response.
    upload: Option<Box<Upload<B>>>,
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reading = match self.reading {
            Reading::Length(left) => return write!(f, "ResponseBody({left} bytes to go)"),
            Reading::Chunked(_) => "chunked",
            Reading::Close => "until close",
            Reading::Done => "ended",
        };
        write!(f, "ResponseBody({reading})")
    }
}

impl<B: RequestBody> ResponseBody<B> {
    pub(super) fn new(
        connection: Connection,
        framing: Framing,
        keep_alive: bool,
        upload: Option<Upload<B>>,
    ) -> Self {
        let reading = match framing {
            Framing::Empty | Framing::Length(0) => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Decoder::default()),
            Framing::Close => Reading::Close,
        };
        let mut body = Self {
            connection: Some(connection),
            reading: Reading::Length(0),
            keep_alive,
            upload: upload.map(Box::new),
        };
        match reading {
            Reading::Done => body.finish(),
            reading => body.reading = reading,
        }
        body
    }

    /// What becomes of the connection once the body was read to its end:
    /// kept for the next request, or, if SFMC answered before the upload's
    /// end, closed while the rest of the client's body is read and dropped
    /// (the client is still sending it, and its connection would break if
    /// the proxy stopped reading; SFMC is not sent it: it has answered, and
    /// might not read it, or read it as a request of its own). `None`: it
    /// closes (the body did not end, or nothing may follow on it).
    pub fn take_idle(&mut self) -> Option<AfterBody> {
        if !matches!(self.reading, Reading::Done) {
            return None;
        }
        if let Some(upload) = self.upload.take() {
            self.connection = None;
            let mut body = upload.into_body()?;
            return Some(AfterBody::Drain(Box::pin(async move {
                // The client's own idle timeout bounds this.
                while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
            })));
        }
        self.connection.take().map(AfterBody::Idle)
    }

    /// The body has been read to its end: the connection stays for reuse
    /// only if nothing may be left on it.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        // (`keep_alive` is off whenever an upload was still going.)
        let clean = self.keep_alive
            && self
                .connection
                .as_ref()
                .is_some_and(|connection| connection.read.is_empty());
        if !clean {
            self.connection = None;
        }
    }

    fn fail(&mut self, error: BodyReadError) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        self.reading = Reading::Done;
        self.connection = None;
        self.upload = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl<B: RequestBody> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = &mut *self;
        if matches!(this.reading, Reading::Done) {
            return Poll::Ready(None);
        }
        if let Some(upload) = this.upload.as_mut()
            && let Some(connection) = this.connection.as_mut()
        {
            // Sent or failed, it is done with; the connection is not kept
            // either way (`keep_alive` is off after an early answer), and a
            // failure is not the answer's.
            if upload.poll_write(cx, &mut *connection.io).is_ready() {
                this.upload = None;
            }
        }
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match &mut this.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) => {
                    if !connection.read.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(connection.read.len());
                        let piece = connection.read.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(piece))));
                    }
                    // Room for the rest, or a whole body read's worth for
                    // a large one (so that the buffer, reused, takes the
                    // next large response at once).
                    match usize::try_from(*left) {
                        Ok(left) if left <= READ_BUFFER => left,
                        _ => MAX_BODY_READ,
                    }
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut connection.read) {
                    Ok(Decoded::Data(piece)) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => MAX_BODY_READ,
                    Err(error) => return this.fail(error.into()),
                },
                Reading::Close => {
                    if !connection.read.is_empty() {
                        let piece = connection.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(piece))));
                    }
                    MAX_BODY_READ
                }
            };
            match ready!(connection.poll_read(cx, want)) {
                Ok(0) => {
                    return match this.reading {
                        Reading::Close => {
                            this.finish();
                            Poll::Ready(None)
                        }
                        Reading::Length(left) => this.fail(BodyReadError::ClosedEarly(left)),
                        _ => this.fail(BodyReadError::ClosedInChunks),
                    };
                }
                Ok(_) => {}
                Err(error) => return this.fail(error.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(left) => SizeHint::with_exact(left),
            Reading::Done => SizeHint::with_exact(0),
            Reading::Chunked(_) | Reading::Close => SizeHint::default(),
        }
    }
}
