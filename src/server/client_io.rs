//! A client's socket as hyper reads and writes it.
//!
//! Bytes already taken off the socket are given back first: the ones read to
//! tell HTTP/2's preface from an HTTP/1.1 request, and those hyper had read
//! but not parsed when an idle connection was parked (see `connection`).
//! For HTTP/1.1 it also tells the connection's [`Activity`] when hyper has
//! written everything it queued, which is when hyper starts waiting for the
//! next request head — the moment the keep-alive deadline runs from, and the
//! one a connection can be parked after.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::activity::Activity;

/// HTTP/2's connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a connection speaks, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

pub struct ClientIo {
    unread: Bytes,
    socket: TokioIo<TcpStream>,
    /// HTTP/1.1 only: where writes and completed flushes are told. (An
    /// HTTP/2 connection flushes PINGs and SETTINGS too, which are not
    /// progress of any request.)
    writes: Option<Arc<Activity>>,
}

impl ClientIo {
    /// Reads `socket` until its first bytes are, or cannot be, HTTP/2's
    /// preface (hyper-util's protocol detection does the same). `None` when
    /// the client closed before sending a byte.
    pub async fn detect(
        mut socket: TcpStream,
        activity: &Arc<Activity>,
    ) -> io::Result<Option<(Protocol, Self)>> {
        let mut first = [0u8; H2_PREFACE.len()];
        let mut filled = 0;
        let protocol = loop {
            let read = socket.read(&mut first[filled..]).await?;
            if read == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                // Closed early: hyper answers or ends what was sent.
                break Protocol::Http1;
            }
            filled += read;
            if first[..filled] != H2_PREFACE[..filled] {
                break Protocol::Http1;
            }
            if filled == H2_PREFACE.len() {
                break Protocol::Http2;
            }
        };
        let io = Self {
            unread: Bytes::copy_from_slice(&first[..filled]),
            socket: TokioIo::new(socket),
            writes: (protocol == Protocol::Http1).then(|| activity.clone()),
        };
        Ok(Some((protocol, io)))
    }

    pub fn socket(&self) -> &TcpStream {
        self.socket.inner()
    }

    /// Whether bytes read off the socket are waiting to be given to hyper.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Puts `bytes` (what hyper had read and not parsed) before whatever of
    /// the earlier unread bytes hyper had not taken yet.
    pub fn give_back(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.unread.is_empty() {
            self.unread = bytes;
            return;
        }
        let mut joined = BytesMut::with_capacity(bytes.len() + self.unread.len());
        joined.extend_from_slice(&bytes);
        joined.extend_from_slice(&self.unread);
        self.unread = joined.freeze();
    }

    fn wrote(&self) {
        if let Some(activity) = &self.writes {
            activity.wrote();
        }
    }
}

impl Read for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            if self.unread.is_empty() {
                // An empty view still holds its buffer (hyper's whole read
                // buffer, when bytes were given back): let it go.
                self.unread = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl Write for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.socket).poll_flush(cx);
        if let (Poll::Ready(Ok(())), Some(activity)) = (&flushed, &self.writes) {
            activity.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn detect_after(chunks: &[&[u8]]) -> Option<(Protocol, Bytes)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (socket, _) = listener.accept().await.expect("accept");
        for chunk in chunks {
            client.write_all(chunk).await.expect("write");
        }
        client.shutdown().await.expect("shutdown");
        let detected = ClientIo::detect(socket, &Activity::new())
            .await
            .expect("read");
        detected.map(|(protocol, io)| (protocol, io.unread))
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol_and_are_kept() {
        let h2 = detect_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\x00\x00"]).await;
        assert_eq!(h2, Some((Protocol::Http2, Bytes::from_static(H2_PREFACE))));
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (protocol, unread) = detect_after(&[request]).await.expect("detected");
        assert_eq!(protocol, Protocol::Http1);
        assert!(
            !unread.is_empty() && request.starts_with(&unread),
            "what was read to tell is given back: {unread:?}"
        );
        let early = detect_after(&[b"PRI * HT"]).await;
        assert_eq!(
            early,
            Some((Protocol::Http1, Bytes::from_static(b"PRI * HT")))
        );
        assert_eq!(detect_after(&[]).await, None, "closed before a byte");
    }

    #[tokio::test]
    async fn bytes_given_back_come_before_those_hyper_had_not_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (socket, _) = listener.accept().await.expect("accept");
        let mut io = ClientIo {
            unread: Bytes::from_static(b"tail"),
            socket: TokioIo::new(socket),
            writes: None,
        };
        io.give_back(Bytes::from_static(b"head "));
        assert_eq!(io.unread, Bytes::from_static(b"head tail"));
        io.give_back(Bytes::new());
        assert_eq!(io.unread, Bytes::from_static(b"head tail"));
    }
}
