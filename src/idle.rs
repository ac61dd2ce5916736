//! A body that fails when its sender goes quiet: nothing arrives for `idle`
//! while the reader is waiting for more. Wraps the client's request body
//! (`server.idle_timeout`) and SFMC's response body (`upstream.idle_timeout`),
//! so neither a stalled upload nor an SFMC response that stops mid-way holds
//! a request open for as long as the other side cares to wait.
//!
//! The clock runs only while the reader waits (as nginx's `client_body_timeout`
//! and `proxy_read_timeout` do): a body not read because the other side
//! applies back-pressure is not the sender's fault. A body that arrives
//! whole in one poll never arms a timer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Who sends the body: says which setting cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Sfmc,
}

/// Why a body ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// SFMC's response body broke off or its framing did (the upstream
    /// client's error; boxed so this module names no upstream type).
    #[error("{0}")]
    Sfmc(Box<dyn std::error::Error + Send + Sync>),
    #[error("the client sent no request body data for {0:?} (server.idle_timeout)")]
    ClientIdle(Duration),
    #[error(
        "SFMC sent no response body data for {0:?} (upstream.idle_timeout); the response was cut short"
    )]
    SfmcIdle(Duration),
}

pub struct IdleTimeout<B = Incoming> {
    inner: B,
    idle: Duration,
    sender: Sender,
    /// Armed on the first poll that finds nothing, cleared by the next frame.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration, sender: Sender) -> Self {
        Self {
            inner,
            idle,
            sender,
            waiting: None,
        }
    }

    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.waiting.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + idle))
                });
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.waiting = None;
                let error = match this.sender {
                    Sender::Client => BodyError::ClientIdle(idle),
                    Sender::Sfmc => BodyError::SfmcIdle(idle),
                };
                // SFMC going quiet mid-response is worth an operator's eye;
                // a client that stalls is the client's business.
                match this.sender {
                    Sender::Sfmc => tracing::warn!(%error, "upstream response truncated"),
                    Sender::Client => tracing::debug!(%error, "request body stalled"),
                }
                Poll::Ready(Some(Err(error)))
            }
        }
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
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_sender_is_cut_after_idle_and_a_steady_one_is_not() {
        let idle = Duration::from_secs(60);
        let (mut tx, channel) = Channel::<Bytes, hyper::Error>::new(1);
        let mut body = IdleTimeout::new(channel, idle, Sender::Sfmc);
        let started = Instant::now();
        // A frame every 59 s keeps the body alive however long it runs.
        for _ in 0..5 {
            let reader = tokio::spawn(async move {
                let frame = body.frame().await;
                (body, frame.map(|f| f.map(|f| f.into_data().ok())))
            });
            tokio::time::sleep(Duration::from_secs(59)).await;
            tx.send_data(Bytes::from_static(b"x")).await.expect("send");
            let (back, frame) = reader.await.expect("reader");
            body = back;
            assert!(matches!(frame, Some(Ok(Some(_)))), "a frame in time passes");
        }
        assert_eq!(started.elapsed(), Duration::from_secs(5 * 59));
        // Then silence: cut exactly `idle` after the reader started waiting.
        let waiting = Instant::now();
        let error = body.frame().await.and_then(Result::err);
        assert!(
            matches!(error, Some(BodyError::SfmcIdle(d)) if d == idle),
            "{error:?}"
        );
        assert_eq!(waiting.elapsed(), idle);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn time_not_spent_waiting_does_not_count() {
        let idle = Duration::from_secs(10);
        let (mut tx, channel) = Channel::<Bytes, hyper::Error>::new(1);
        let mut body = IdleTimeout::new(channel, idle, Sender::Client);
        // Nobody reads for longer than `idle` (back-pressure elsewhere) …
        tx.send_data(Bytes::from_static(b"a")).await.expect("send");
        tokio::time::sleep(Duration::from_secs(30)).await;
        // … then the reader takes what is there and waits afresh.
        assert!(body.frame().await.is_some_and(|f| f.is_ok()));
        drop(tx);
        assert!(body.frame().await.is_none(), "the end passes as the end");
    }
}
