//! `ProxyBody`: the one body type that flows through the proxy in both
//! directions — a streamed body passed along untouched (the client's request
//! body, or SFMC's response body), a small buffered body (kept for replay, or
//! a proxy-made answer), or nothing; and SFMC's body that holds its
//! request's slot of the tenant's `max_concurrent_requests`.
//!
//! An enum rather than a boxed trait object: no allocation per request, and the
//! streamed case forwards frames exactly as they arrive (no re-chunking, no
//! buffering beyond hyper's own).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use crate::upstream::UpstreamBody;

mod counted;
mod inbound;

pub use crate::idle::{BodyError, IdleTimeout, Sender};
pub use counted::{ByteCount, Counted};
pub use inbound::{Inbound, ReadWatch};

/// The client's request body, cut when the client stops sending
/// (`server.idle_timeout`), its bytes counted for the access log.
pub type ClientBody = Counted<IdleTimeout<Inbound>>;

/// SFMC's response body, streamed to the client; its end gives the upstream
/// connection (which sends `ProxyBody` requests) back to the pool.
pub type SfmcBody = UpstreamBody<ProxyBody>;

pub enum ProxyBody {
    Empty,
    /// A complete body held in memory; `None` once it has been sent.
    Full(Option<Bytes>),
    /// The client's request body, streamed to SFMC.
    Stream(ClientBody),
    /// SFMC's response body, streamed to the client (its end gives the
    /// upstream connection back to the pool).
    Upstream(SfmcBody),
    /// Bytes already read (and possibly rewritten), then the rest of the
    /// stream. Boxed: only SOAP needs it, and the enum stays small.
    Prefixed(Option<Bytes>, Box<ProxyBody>),
    /// SFMC's response to a request that holds one of its tenant's
    /// `max_concurrent_requests` slots, freed when the body ends or is dropped.
    Holding(Box<ProxyBody>, OwnedSemaphorePermit),
}

/// Sizes only: a held body may be a SOAP envelope carrying the real token.
impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Full(bytes) => write!(f, "Full({} bytes)", held(bytes)),
            Self::Stream(_) => f.write_str("Stream"),
            Self::Upstream(_) => f.write_str("Upstream"),
            Self::Prefixed(bytes, _) => write!(f, "Prefixed({} bytes, then a stream)", held(bytes)),
            Self::Holding(body, _) => write!(f, "Holding a request slot, {body:?}"),
        }
    }
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::Empty
        } else {
            Self::Full(Some(bytes))
        }
    }
}

/// A JSON answer made by the proxy itself (admin paths, the token broker).
pub fn json_response(
    status: http::StatusCode,
    body: &serde_json::Value,
) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(ProxyBody::full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// For responses rendered generically ([`crate::error::ProxyError::into_response`]).
impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<ClientBody> for ProxyBody {
    fn from(body: ClientBody) -> Self {
        Self::Stream(body)
    }
}

impl From<SfmcBody> for ProxyBody {
    fn from(body: SfmcBody) -> Self {
        Self::Upstream(body)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(body) => Pin::new(body).poll_frame(cx),
            Self::Upstream(body) => Pin::new(body).poll_frame(cx),
            Self::Prefixed(head, body) => match head.take() {
                Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                None => Pin::new(body.as_mut()).poll_frame(cx),
            },
            Self::Holding(body, _) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(body) => body.is_end_stream(),
            Self::Upstream(body) => body.is_end_stream(),
            Self::Prefixed(head, body) => head.is_none() && body.is_end_stream(),
            Self::Holding(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(body) => body.size_hint(),
            Self::Upstream(body) => body.size_hint(),
            Self::Prefixed(head, body) => {
                let head = head.as_ref().map_or(0, |h| h.len() as u64);
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + head);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
            Self::Holding(body, _) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_yields_its_bytes_once_with_exact_size() {
        let body = ProxyBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from("hello")));
    }

    #[test]
    fn empty_bytes_become_an_empty_body() {
        let body = ProxyBody::full(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[test]
    fn debug_shows_sizes_never_content() {
        let body = ProxyBody::full("<fueloauth>real-token</fueloauth>");
        let shown = format!("{body:?}");
        assert_eq!(shown, "Full(33 bytes)");
        assert!(!shown.contains("real-token"));
    }
}
