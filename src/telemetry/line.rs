//! The access event's fields, borrowed from the request's record, and its
//! two ways out: as a `tracing` event (any subscriber: tests, a terminal's
//! colours), or encoded straight into a line — the very line
//! `tracing_subscriber`'s text or JSON format writes for that event (a test
//! holds the two equal), made without the field visitors, escaping passes
//! and per-field formatting machinery that cost some 20,000 instructions a
//! request. This event is written once per request, so its cost counts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use http::Method;

use super::LogFormat;

/// The access log's target: `RUST_LOG=sfmc_proxy::access=off` silences it.
pub const ACCESS: &str = "sfmc_proxy::access";

/// One access event: the field names are the log's documented ones.
pub struct AccessLine<'a> {
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
        let mut line = Encoder { format, out };
        line.start(debug, now);
        line.str("request_id", Some(self.request_id));
        line.display("method", self.method);
        line.str("path", self.path);
        line.u64("status", self.status.map(u64::from));
        line.u64("upstream_status", self.upstream_status.map(u64::from));
        line.u64("duration_us", Some(self.duration_us));
        line.u64("upstream_us", self.upstream_us);
        line.u64("queued_us", self.queued_us);
        line.u64("throttle_wait_us", self.throttle_wait_us);
        line.u64("bytes_in", Some(self.bytes_in));
        line.u64("bytes_out", Some(self.bytes_out));
        line.display("client", &self.client);
        line.str("user_agent", self.user_agent);
        line.str("tenant", self.tenant);
        line.str("account_id", self.account_id);
        line.str("api", self.api);
        line.str("token", self.token);
        line.bool("replayed", self.replayed);
        line.u64("throttle_retries", Some(u64::from(self.throttle_retries)));
        line.str("error", self.error);
        line.bool("completed", self.completed);
        line.end();
    }
}

/// Writes one line field by field, in `tracing_subscriber`'s layout: text
/// `TIME  INFO target: message name=value…`, strings quoted as `{:?}` does,
/// `%` values bare; JSON `{"timestamp":…,"level":…,"message":…,fields…,
/// "target":…}`, strings escaped as serde_json does. A missing value is left
/// out, as `tracing` leaves out a `None`.
struct Encoder<'a> {
    format: LogFormat,
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn start(&mut self, debug: bool, now: SystemTime) {
        let time = humantime::format_rfc3339_micros(now);
        let (text_level, json_level) = match debug {
            true => ("DEBUG", "DEBUG"),
            false => (" INFO", "INFO"),
        };
        match self.format {
            LogFormat::Text => {
                let _ = write!(Adapter(self.out), "{time} ");
                self.out.extend_from_slice(text_level.as_bytes());
                self.out.extend_from_slice(b" ");
                self.out.extend_from_slice(ACCESS.as_bytes());
                self.out.extend_from_slice(b": request");
            }
            LogFormat::Json => {
                let _ = write!(Adapter(self.out), "{{\"timestamp\":\"{time}\",\"level\":\"");
                self.out.extend_from_slice(json_level.as_bytes());
                self.out.extend_from_slice(b"\",\"message\":\"request\"");
            }
        }
    }

    fn name(&mut self, name: &str) {
        match self.format {
            LogFormat::Text => {
                self.out.push(b' ');
                self.out.extend_from_slice(name.as_bytes());
                self.out.push(b'=');
            }
            LogFormat::Json => {
                self.out.extend_from_slice(b",\"");
                self.out.extend_from_slice(name.as_bytes());
                self.out.extend_from_slice(b"\":");
            }
        }
    }

    fn str(&mut self, name: &str, value: Option<&str>) {
        let Some(value) = value else {
            return;
        };
        self.name(name);
        self.quoted(value);
    }

    /// `value` as a string: quoted and escaped as `{:?}` (text) or JSON
    /// does. Printable ASCII without quote or backslash, what request ids,
    /// paths and user agents are, needs neither: copied as it is.
    fn quoted(&mut self, value: &str) {
        if value.bytes().all(plain) {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
            return;
        }
        match self.format {
            LogFormat::Text => {
                let _ = write!(Adapter(self.out), "{value:?}");
            }
            LogFormat::Json => {
                let _ = serde_json::to_writer(&mut *self.out, value);
            }
        }
    }

    /// A `%` field: bare in text, a string in JSON.
    fn display(&mut self, name: &str, value: &dyn std::fmt::Display) {
        self.name(name);
        match self.format {
            LogFormat::Text => {
                let _ = write!(Adapter(self.out), "{value}");
            }
            LogFormat::Json => {
                // Methods and socket addresses need no escaping: written in
                // place. Anything else would be escaped after all.
                self.out.push(b'"');
                let start = self.out.len();
                let _ = write!(Adapter(self.out), "{value}");
                if self.out[start..].iter().all(|&b| plain(b)) {
                    self.out.push(b'"');
                    return;
                }
                let written = self.out.split_off(start);
                self.out.pop();
                self.quoted(&String::from_utf8_lossy(&written));
            }
        }
    }

    fn u64(&mut self, name: &str, value: Option<u64>) {
        let Some(value) = value else {
            return;
        };
        self.name(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.name(name);
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.out.extend_from_slice(text);
    }

    fn end(&mut self) {
        if self.format == LogFormat::Json {
            self.out.extend_from_slice(b",\"target\":\"");
            self.out.extend_from_slice(ACCESS.as_bytes());
            self.out.extend_from_slice(b"\"}");
        }
        self.out.push(b'\n');
    }
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
