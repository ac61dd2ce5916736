//! The access event's fields, borrowed from the request's record, and its
//! two ways out: as a `tracing` event (any subscriber: tests, a terminal's
//! colours), or encoded straight into a line — the very line
//! `tracing_subscriber`'s text or JSON format writes for that event (a test
//! holds the two equal), made without the field visitors, escaping passes
//! and per-field formatting machinery that cost some 20,000 instructions a
//! request. This event is written once per request, so its cost counts.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;

use super::LogFormat;

/// The access log's target: `RUST_LOG=sfmc_proxy::access=off` silences it.
pub const ACCESS: &str = "sfmc_proxy::access";

/// One access event: the field names are the log's documented ones.
pub struct AccessLine<'a> {
    /// Plain: printable ASCII without a quote or backslash (see
    /// `access::request_id`), written without looking.
    pub request_id: &'a str,
    pub method: &'a Method,
    pub path: Option<&'a str>,
    pub status: Option<u16>,
    pub upstream_status: Option<u16>,
    pub duration_us: u64,
    pub upstream_us: Option<u64>,
    pub queued_us: Option<u64>,
    pub throttle_wait_us: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub client: SocketAddr,
    pub user_agent: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub account_id: Option<&'a str>,
    pub api: Option<&'static str>,
    pub token: Option<&'static str>,
    pub replayed: bool,
    pub throttle_retries: u32,
    pub error: Option<&'static str>,
    pub completed: bool,
}

impl AccessLine<'_> {
    /// Emits the `tracing` event (at `debug` when `debug`, else `info`).
    pub fn event(&self, debug: bool) {
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: ACCESS,
                    $level,
                    request_id = self.request_id,
                    method = %self.method,
                    path = self.path,
                    status = self.status,
                    upstream_status = self.upstream_status,
                    duration_us = self.duration_us,
                    upstream_us = self.upstream_us,
                    queued_us = self.queued_us,
                    throttle_wait_us = self.throttle_wait_us,
                    bytes_in = self.bytes_in,
                    bytes_out = self.bytes_out,
                    client = %self.client,
                    user_agent = self.user_agent,
                    tenant = self.tenant,
                    account_id = self.account_id,
                    api = self.api,
                    token = self.token,
                    replayed = self.replayed,
                    throttle_retries = self.throttle_retries,
                    error = self.error,
                    completed = self.completed,
                    "request"
                )
            };
        }
        match debug {
            true => event!(tracing::Level::DEBUG),
            false => event!(tracing::Level::INFO),
        }
    }

    /// Appends the event's line, as `format` writes it at `now`, to `out`.
    pub fn encode(&self, format: LogFormat, debug: bool, now: SystemTime, out: &mut Vec<u8>) {
        // One copy of the code per format: every name and separator is then
        // a constant, copied in a few instructions instead of a `memcpy`.
        match format {
            LogFormat::Text => self.fields(Encoder::<false> { out }, debug, now),
            LogFormat::Json => self.fields(Encoder::<true> { out }, debug, now),
        }
    }

    fn fields<const JSON: bool>(&self, mut line: Encoder<'_, JSON>, debug: bool, now: SystemTime) {
        line.start(debug, now);
        line.plain(field!("request_id"), self.request_id);
        line.bare(field!("method"), self.method.as_str());
        line.str(field!("path"), self.path);
        line.u64(field!("status"), self.status.map(u64::from));
        line.u64(
            field!("upstream_status"),
            self.upstream_status.map(u64::from),
        );
        line.u64(field!("duration_us"), Some(self.duration_us));
        line.u64(field!("upstream_us"), self.upstream_us);
        line.u64(field!("queued_us"), self.queued_us);
        line.u64(field!("throttle_wait_us"), self.throttle_wait_us);
        line.u64(field!("bytes_in"), Some(self.bytes_in));
        line.u64(field!("bytes_out"), Some(self.bytes_out));
        line.address(field!("client"), self.client);
        line.str(field!("user_agent"), self.user_agent);
        line.str(field!("tenant"), self.tenant);
        line.str(field!("account_id"), self.account_id);
        line.known(field!("api"), self.api);
        line.known(field!("token"), self.token);
        line.bool(field!("replayed"), self.replayed);
        let retries = Some(u64::from(self.throttle_retries));
        line.u64(field!("throttle_retries"), retries);
        line.known(field!("error"), self.error);
        line.bool(field!("completed"), self.completed);
        line.end();
    }
}

/// A field's name as each format introduces it: ` name=` and `,"name":`.
macro_rules! field {
    ($name:literal) => {
        Name {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}
use field;

#[derive(Clone, Copy)]
struct Name {
    text: &'static str,
    json: &'static str,
}

/// Writes one line field by field, in `tracing_subscriber`'s layout: text
/// `TIME  INFO target: message name=value…`, strings quoted as `{:?}` does,
/// `%` values bare; JSON `{"timestamp":…,"level":…,"message":…,fields…,
/// "target":…}`, strings escaped as serde_json does. A missing value is left
/// out, as `tracing` leaves out a `None`.
struct Encoder<'a, const JSON: bool> {
    out: &'a mut Vec<u8>,
}

impl<const JSON: bool> Encoder<'_, JSON> {
    const FORMAT: LogFormat = if JSON {
        LogFormat::Json
    } else {
        LogFormat::Text
    };

    fn start(&mut self, debug: bool, now: SystemTime) {
        // Before the level: tracing_subscriber's own order and padding.
        let (text, json): (&[u8], &[u8]) = match debug {
            true => (
                b" DEBUG ",
                b"\",\"level\":\"DEBUG\",\"message\":\"request\"",
            ),
            false => (b"  INFO ", b"\",\"level\":\"INFO\",\"message\":\"request\""),
        };
        match Self::FORMAT {
            LogFormat::Text => {
                timestamp(now, self.out);
                self.out.extend_from_slice(text);
                self.out.extend_from_slice(ACCESS.as_bytes());
                self.out.extend_from_slice(b": request");
            }
            LogFormat::Json => {
                self.out.extend_from_slice(b"{\"timestamp\":\"");
                timestamp(now, self.out);
                self.out.extend_from_slice(json);
            }
        }
    }

    #[inline(always)]
    fn name(&mut self, name: Name) {
        let name = match Self::FORMAT {
            LogFormat::Text => name.text,
            LogFormat::Json => name.json,
        };
        self.out.extend_from_slice(name.as_bytes());
    }

    #[inline(always)]
    fn str(&mut self, name: Name, value: Option<&str>) {
        let Some(value) = value else {
            return;
        };
        self.name(name);
        self.quoted(value);
    }

    /// One of the proxy's own words (api, token outcome, error code):
    /// plain ASCII, so quoted without looking.
    #[inline(always)]
    fn known(&mut self, name: Name, value: Option<&'static str>) {
        if let Some(value) = value {
            self.plain(name, value);
        }
    }

    /// A string known to be plain (see [`all_plain`]): quoted as it is.
    #[inline(always)]
    fn plain(&mut self, name: Name, value: &str) {
        debug_assert!(all_plain(value.as_bytes()), "{value}");
        self.name(name);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    /// `value` as a string: quoted and escaped as `{:?}` (text) or JSON
    /// does. Printable ASCII without quote or backslash, what request ids,
    /// paths and user agents are, needs neither: copied as it is.
    fn quoted(&mut self, value: &str) {
        if all_plain(value.as_bytes()) {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
            return;
        }
        match Self::FORMAT {
            LogFormat::Text => {
                let _ = write!(Adapter(self.out), "{value:?}");
            }
            LogFormat::Json => {
                let _ = serde_json::to_writer(&mut *self.out, value);
            }
        }
    }

    /// A `%` field: bare in text, a string in JSON.
    fn bare(&mut self, name: Name, value: &str) {
        match Self::FORMAT {
            LogFormat::Text => {
                self.name(name);
                self.out.extend_from_slice(value.as_bytes());
            }
            LogFormat::Json => self.str(name, Some(value)),
        }
    }

    /// A socket address as `%` writes it: `127.0.0.1:52144`, `[::1]:8080`.
    fn address(&mut self, name: Name, address: SocketAddr) {
        let SocketAddr::V4(v4) = address else {
            // IPv6 is rarer and its text is intricate (zero runs, scope
            // ids): std's own formatting.
            let mut text = [0u8; 64];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{address}"));
            let end = usize::try_from(cursor.position()).unwrap_or(0);
            let text = std::str::from_utf8(&text[..end]).unwrap_or("-");
            return self.bare(name, text);
        };
        self.name(name);
        if Self::FORMAT == LogFormat::Json {
            self.out.push(b'"');
        }
        let mut digits = itoa::Buffer::new();
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                self.out.push(b'.');
            }
            self.out.extend_from_slice(digits.format(octet).as_bytes());
        }
        self.out.push(b':');
        self.out
            .extend_from_slice(digits.format(v4.port()).as_bytes());
        if Self::FORMAT == LogFormat::Json {
            self.out.push(b'"');
        }
    }

    #[inline(always)]
    fn u64(&mut self, name: Name, value: Option<u64>) {
        let Some(value) = value else {
            return;
        };
        self.name(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    #[inline(always)]
    fn bool(&mut self, name: Name, value: bool) {
        self.name(name);
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.out.extend_from_slice(text);
    }

    fn end(&mut self) {
        if Self::FORMAT == LogFormat::Json {
            self.out.extend_from_slice(b",\"target\":\"");
            self.out.extend_from_slice(ACCESS.as_bytes());
            self.out.extend_from_slice(b"\"}");
        }
        self.out.push(b'\n');
    }
}

/// The last second humantime writes: 9999-12-31T23:59:59Z.
const LAST_SECOND: u64 = 253_402_300_799;

/// `now` as tracing_subscriber writes it, `2026-12-02T16:11:37.123456Z`;
/// the part up to the second is made once a second (per thread).
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    use std::fmt::Write as _;
    thread_local! {
        static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    // A clock before 1970 is wrong anyway: written as 1970.
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != seconds {
            // `2026-12-02T16:11:37Z` without its `Z`.
            // humantime writes years up to 9999 only (and its error would
            // panic `to_string`, here in a drop): a clock beyond is written
            // as the last second it can.
            let whole = UNIX_EPOCH + Duration::from_secs(seconds.min(LAST_SECOND));
            let mut text = String::new();
            let _ = write!(text, "{}", humantime::format_rfc3339_seconds(whole));
            text.pop();
            text.push('.');
            *second = (seconds, text.into_bytes());
        }
        out.extend_from_slice(&second.1);
    });
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        // Below 10: a digit.
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// Whether every byte is [`plain`]: eight at a time (a request id, a path
/// and a user agent are tens of bytes, and every line has them).
pub(super) fn all_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is 0 (exact as to whether there is one).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Non-ASCII; then, all bytes below 0x80: one below a space, DEL,
        // a quote, a backslash.
        let odd = (x & HIGHS)
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
            | zero(x ^ (ONES * 0x7f))
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')));
        if odd != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| plain(b))
}

/// A byte that neither `{:?}` nor JSON escapes inside a string.
fn plain(byte: u8) -> bool {
    (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\'
}

/// `fmt::Write` into a byte buffer (what is written is UTF-8).
struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
