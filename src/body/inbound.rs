//! `Inbound`: the client's request body as hyper gives it, and the one place
//! that tells the connection it came on when the proxy has taken its end —
//! or let go of it before.
//!
//! An HTTP/1.1 connection is between two messages only once its request
//! body is read, whatever its response did: SFMC may answer an upload before
//! it is all sent, and keep reading it. Until then the connection must not
//! be parked (taken back from hyper, see `server::connection`), or the rest
//! of the body would be read as the next request's head.
//!
//! Telling the end when the proxy *takes* it is enough, because hyper has
//! always finished reading the body from the socket by then: it leaves its
//! body-reading state before it hands over a Content-Length body's last
//! bytes, before it yields trailers, and before it drops the sender (which
//! is what ends a chunked body).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// What is told of a request body being read (the connection's activity).
pub trait ReadWatch: Send + Sync {
    /// A body with bytes to come was handed to the proxy.
    fn body_opened(&self);
    /// It was read to its end (`whole`), or it failed or was dropped before:
    /// hyper then drains what is left or closes the connection.
    fn body_ended(&self, whole: bool);
}

pub struct Inbound {
    body: Incoming,
    /// `None` for a body already at its end (most GETs) and once its end
    /// has been told.
    watch: Option<Arc<dyn ReadWatch>>,
}

impl Inbound {
    /// `body`, whose end is told to `watch` (nothing to tell, and nothing
    /// cloned, for a body already at its end).
    pub fn watched<W: ReadWatch + 'static>(body: Incoming, watch: &Arc<W>) -> Self {
        let watch = (!body.is_end_stream()).then(|| {
            watch.body_opened();
            let watch: Arc<dyn ReadWatch> = watch.clone();
            watch
        });
        Self { body, watch }
    }

    /// `body`, on a connection that need not know its end (HTTP/2, where
    /// each request is a stream of its own).
    pub fn unwatched(body: Incoming) -> Self {
        Self { body, watch: None }
    }

    fn ended(&mut self, whole: bool) {
        if let Some(watch) = self.watch.take() {
            watch.body_ended(whole);
        }
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(true),
            Poll::Ready(Some(Err(_))) => self.ended(false),
            // Trailers come last; a Content-Length body is at its end with
            // its last bytes.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || self.body.is_end_stream() => {
                self.ended(true);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        let whole = self.body.is_end_stream();
        self.ended(whole);
    }
}
