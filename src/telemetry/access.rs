//! The access log: one event per request, written when its response ends —
//! the last body byte handed to the client, or the body cut short (SFMC went
//! quiet, the client went away: `completed=false`). It carries the request
//! id, method, path (never the query: SFMC filters hold customer data; and
//! not even the path with `server.log_paths = false`), statuses, durations
//! in whole microseconds, body bytes in and out, the client's address and
//! user agent, tenant, MID, api and how the token was obtained — never a
//! token, secret or other header value.
//!
//! The record is filled in as the request travels, then rides inside the
//! response body ([`Logged`]) until that body ends or is dropped: whichever
//! comes first writes the event, once, and hands the same facts to the
//! metrics (which see every request, whatever the log level). A request
//! dropped before its response head (the client hung up while SFMC was
//! thinking) is written by the record's own drop.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue, USER_AGENT};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::line::AccessLine;
use super::metrics::{Metrics, RequestDone};
use crate::body::{BodyError, ByteCount, ProxyBody};
use crate::error::ProxyError;
use crate::route::{self, Api, Target};
use crate::token::Outcome;

/// The request id header: the client's when sane, else one made here;
/// passed to SFMC and returned in the response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client request id kept (a UUID is 36, a W3C trace id 32).
const MAX_REQUEST_ID: usize = 128;

/// The request's id: the client's `x-request-id` when it is one value of
/// printable ASCII without `"` or `\` (1 to 128 bytes: what a UUID, a trace
/// id or any other sane id is, and what a log line can quote as it is), else
/// a new random one put in its place, so that SFMC sees the same id as the
/// log.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(value), None) = (values.next(), values.next())
        && sane_request_id(value.as_bytes())
    {
        return value.clone();
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

fn sane_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && super::line::all_plain(id)
}

/// 128 random bits in hex: unique enough to find one request in any log.
fn new_request_id() -> HeaderValue {
    let mut hex = [0u8; 32];
    data_encoding::HEXLOWER.encode_mut(&fastrand::u128(..).to_be_bytes(), &mut hex);
    // Owned, so that the id's three copies (SFMC's request, the record, the
    // response) are reference counts on one allocation: a copied slice is
    // allocated again as shared on its first clone.
    HeaderValue::from_maybe_shared(Bytes::from_owner(hex))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// What the access log says about one request, filled in as it travels.
pub struct AccessRecord {
    /// Whether the log event is wanted: false when the log level filters it
    /// out (then nothing is copied for the log alone; this runs on every
    /// request).
    enabled: bool,
    /// Set once the record has been written (log and metrics).
    finished: bool,
    metrics: Arc<Metrics>,
    /// A health, readiness or metrics probe: logged at debug.
    probe: bool,
    started: Instant,
    request_id: HeaderValue,
    method: Method,
    /// `None` with `server.log_paths = false`.
    path: Option<PathAndQuery>,
    client: SocketAddr,
    user_agent: Option<HeaderValue>,
    tenant: Option<Arc<str>>,
    account_id: Option<Arc<str>>,
    pub api: Option<Api>,
    pub token: Option<Outcome>,
    pub replayed: bool,
    /// SFMC's answers that said it was throttling (REST 429 or 503, SOAP
    /// `Rate Limited`): one per send.
    pub throttled: u32,
    /// Times the request was sent again after throttling.
    pub throttle_retries: u32,
    /// Time spent waiting for one of the tenant's `max_concurrent_requests`
    /// slots (when it has a limit).
    pub queued: Option<Duration>,
    /// Time spent waiting out SFMC's `Retry-After` before the retries.
    pub throttle_wait: Option<Duration>,
    error: Option<&'static str>,
    status: Option<StatusCode>,
    upstream_status: Option<StatusCode>,
    /// Time spent waiting for SFMC's response heads (every send: a replay,
    /// a retry after throttling).
    upstream: Option<Duration>,
    /// When the send to SFMC now waiting for its answer went out.
    sent: Option<Instant>,
    bytes_in: ByteCount,
    bytes_out: u64,
    /// Whether the response body reached its end.
    completed: bool,
}

/// What of a path and a `User-Agent` a log line keeps: a head may be 64 KiB,
/// and a stranger's request must not write that much log per line.
const MAX_LOGGED_PATH: usize = 1024;
const MAX_LOGGED_USER_AGENT: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary (a path and a
/// user agent are ASCII, so no character is split in practice). Also what
/// the policy's refusals quote of a path.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl AccessRecord {
    pub fn new(
        parts: &Parts,
        client: SocketAddr,
        request_id: HeaderValue,
        bytes_in: ByteCount,
        log_paths: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        let probe = route::is_probe(parts.uri.path());
        // A probe's own answer is written at debug, anything else on a probe
        // path (a refused key, a wrong Host) at info like every request: so
        // the record is kept whenever info is on.
        let enabled = super::access_wanted(probe);
        let copy = |wanted: bool| enabled && wanted;
        metrics.request_started();
        Self {
            enabled,
            finished: false,
            metrics,
            probe,
            started: Instant::now(),
            request_id,
            method: parts.method.clone(),
            path: copy(log_paths).then(|| {
                let pq = parts.uri.path_and_query();
                pq.cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"))
            }),
            client,
            user_agent: parts.headers.get(USER_AGENT).filter(|_| enabled).cloned(),
            tenant: None,
            account_id: None,
            api: None,
            token: None,
            replayed: false,
            throttled: 0,
            throttle_retries: 0,
            queued: None,
            throttle_wait: None,
            error: None,
            status: None,
            upstream_status: None,
            upstream: None,
            sent: None,
            bytes_in,
            bytes_out: 0,
            completed: false,
        }
    }

    pub fn target(&mut self, target: &Target) {
        self.api = Some(target.api);
        self.tenant = Some(target.key.tenant.clone());
        self.account_id = target.key.account_id.clone();
    }

    /// The request ended in the proxy's own error: its code, and the tenant
    /// and MID it names when routing had not yet recorded them.
    pub fn failed(&mut self, error: &ProxyError) {
        self.error = Some(error.code());
        if let ProxyError::AccountNotAllowed { tenant, mid } = error
            && self.tenant.is_none()
        {
            self.tenant = Some(tenant.as_str().into());
            self.account_id = Some(mid.as_str().into());
        }
    }

    /// A send to SFMC begins; timed until [`Self::upstream_answered`], or
    /// until the event is written if the request goes away first.
    pub fn upstream_sent(&mut self) {
        self.sent = Some(Instant::now());
    }

    /// SFMC's response head (its status), or `None`: no response.
    pub fn upstream_answered(&mut self, status: Option<StatusCode>) {
        self.add_upstream_time();
        self.upstream_status = status;
    }

    fn add_upstream_time(&mut self) {
        if let Some(sent) = self.sent.take() {
            self.upstream = Some(self.upstream.unwrap_or_default() + sent.elapsed());
        }
    }

    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Hands the request to the metrics and writes the log event (once).
    fn write(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.add_upstream_time();
        let duration = self.started.elapsed();
        self.metrics.request_done(&RequestDone {
            tenant: self.tenant.as_ref(),
            account_id: self.account_id.as_ref(),
            api: self.api,
            method: &self.method,
            status: self.status,
            upstream_status: self.upstream_status,
            duration,
            upstream: self.upstream,
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out,
            token: self.token,
            replayed: self.replayed,
            throttled: self.throttled,
            throttle_retries: self.throttle_retries,
        });
        if self.enabled {
            self.log(duration);
        }
    }

    fn log(&self, duration: Duration) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let probe_answer = self.probe
            && matches!(
                self.status,
                Some(StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE)
            );
        let line = AccessLine {
            // Printable ASCII without a quote or backslash (see
            // `request_id`): UTF-8's ASCII fast path, and quoted unchecked.
            request_id: std::str::from_utf8(self.request_id.as_bytes()).unwrap_or("-"),
            method: &self.method,
            path: self
                .path
                .as_ref()
                .map(|pq| clip(pq.path(), MAX_LOGGED_PATH)),
            status: self.status.map(|s| s.as_u16()),
            upstream_status: self.upstream_status.map(|s| s.as_u16()),
            duration_us: micros(duration),
            upstream_us: self.upstream.map(micros),
            queued_us: self.queued.map(micros),
            throttle_wait_us: self.throttle_wait.map(micros),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out,
            client: self.client,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(|ua| ua.to_str().ok())
                .map(|ua| clip(ua, MAX_LOGGED_USER_AGENT)),
            tenant: self.tenant.as_deref(),
            account_id: self.account_id.as_deref(),
            api: self.api.map(Api::as_str),
            token: self.token.map(Outcome::as_str),
            replayed: self.replayed,
            throttle_retries: self.throttle_retries,
            error: self.error,
            completed: self.completed,
        };
        super::write_access(&line, probe_answer);
    }
}

/// A record dropped unwritten: the request went away before its end.
impl Drop for AccessRecord {
    fn drop(&mut self) {
        self.write();
    }
}

/// The response body with its request's record: counts the bytes handed to
/// the client and writes the event when the body ends, fails or is dropped.
pub struct Logged {
    inner: ProxyBody,
    /// `None` once written.
    record: Option<AccessRecord>,
}

impl Logged {
    pub fn new(inner: ProxyBody, mut record: AccessRecord, status: StatusCode) -> Self {
        record.status = Some(status);
        Self {
            inner,
            record: Some(record),
        }
    }

    fn end(&mut self, completed: bool) {
        if let Some(mut record) = self.record.take() {
            record.completed = completed;
            record.write();
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(record) = &mut this.record else {
            return polled;
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    record.bytes_out += data.remaining() as u64;
                }
                // hyper stops polling a body that says it is at its end.
                if this.inner.is_end_stream() {
                    this.end(true);
                }
            }
            Poll::Ready(None) => this.end(true),
            Poll::Ready(Some(Err(_))) => this.end(false),
            Poll::Pending => {}
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

/// Dropped before its end was seen: complete only if there was nothing left
/// (an empty body hyper never polls), else cut short.
impl Drop for Logged {
    fn drop(&mut self) {
        let ended = self.inner.is_end_stream();
        self.end(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_and_user_agents_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(
            clip(&"a".repeat(2000), MAX_LOGGED_PATH).len(),
            MAX_LOGGED_PATH
        );
        assert_eq!(clip("aé", 2), "a");
    }

    fn ids(values: &[&str]) -> (HeaderValue, HeaderMap) {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_REQUEST_ID, HeaderValue::from_str(value).expect("value"));
        }
        (request_id(&mut headers), headers)
    }

    #[test]
    fn a_sane_client_request_id_is_kept() {
        let (id, headers) = ids(&["req-123 abc"]);
        assert_eq!(id, "req-123 abc");
        assert_eq!(headers.get_all(&X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn a_missing_long_odd_or_repeated_request_id_is_replaced() {
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        for values in [&[][..], &[long.as_str()], &["caf\u{e9}"], &["a", "b"]] {
            let values: Vec<&str> = values.to_vec();
            let mut headers = HeaderMap::new();
            for value in &values {
                let value = HeaderValue::from_bytes(value.as_bytes()).expect("value");
                headers.append(X_REQUEST_ID, value);
            }
            let id = request_id(&mut headers);
            assert_eq!(id.len(), 32, "{values:?}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
            let sent: Vec<_> = headers.get_all(&X_REQUEST_ID).iter().collect();
            assert_eq!(sent, [&id], "SFMC gets the new id alone");
        }
        assert_ne!(ids(&[]).0, ids(&[]).0, "each new id differs");
        assert!(sane_request_id(&[b'a'; MAX_REQUEST_ID]));
        assert!(sane_request_id(b"00-4bf92f3577b34da6-01 x"));
        for odd in [
            &b"a\tb"[..],
            b"say \"hi\"",
            b"back\\slash",
            b"caf\xc3\xa9",
            b"",
        ] {
            assert!(!sane_request_id(odd), "{odd:?}");
        }
    }
}
