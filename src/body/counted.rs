//! `Counted`: a body that counts the data bytes read from it, for the access
//! log's `bytes_in` — what was actually read from the client, however far
//! the body travelled (held for a replay, streamed to SFMC, cut short).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// The bytes read so far from a [`Counted`] body, readable after the body
/// itself is gone (sent to SFMC, dropped).
#[derive(Debug, Clone, Default)]
pub struct ByteCount(Option<Arc<AtomicU64>>);

impl ByteCount {
    pub fn get(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }
}

pub struct Counted<B> {
    inner: B,
    count: ByteCount,
}

impl<B: Body> Counted<B> {
    /// Wraps `inner`. A body that is already at its end (most GETs) shares
    /// no counter: nothing is allocated for it.
    pub fn new(inner: B) -> (Self, ByteCount) {
        let count = match inner.is_end_stream() {
            true => ByteCount(None),
            false => ByteCount(Some(Arc::default())),
        };
        let counted = Self {
            inner,
            count: count.clone(),
        };
        (counted, count)
    }
}

impl<B> Body for Counted<B>
where
    B: Body + Unpin,
    B::Data: bytes::Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(count)) = (&polled, &this.count.0)
            && let Some(data) = frame.data_ref()
        {
            let len = bytes::Buf::remaining(data) as u64;
            count.fetch_add(len, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::channel::Channel;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn counts_every_data_byte_read() {
        let (mut tx, channel) = Channel::<Bytes, std::convert::Infallible>::new(4);
        let (body, count) = Counted::new(channel);
        for chunk in ["abc", "", "defgh"] {
            tx.send_data(Bytes::from(chunk)).await.expect("send");
        }
        drop(tx);
        assert_eq!(count.get(), 0, "nothing read yet");
        let read = body.collect().await.map(|c| c.to_bytes().len()).ok();
        assert_eq!((read, count.get()), (Some(8), 8));
    }

    #[test]
    fn an_empty_body_shares_no_counter() {
        let (_, count) = Counted::new(Full::new(Bytes::new()));
        assert!(count.0.is_none());
        assert_eq!(count.get(), 0);
    }
}
