//! The heads of an HTTP/1.1 exchange: the request head the proxy writes
//! (RFC 9112 §3, with the body's framing chosen as hyper's client chooses
//! it), and SFMC's response head, read with `httparse`, with its body's
//! framing decided as RFC 9112 §6.3 says.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request, response};

/// A response head longer than this is refused (hyper's client allows about
/// 400 KiB; SFMC's heads are well under 2 KiB, and nginx's default
/// `proxy_buffer_size` refuses past 4 or 8 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// As many header fields as hyper's client reads.
const MAX_HEADERS: usize = 100;

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// No body (a `GET` whose body is empty, or one a `GET` cannot carry).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, for a body of unknown length.
    Chunked,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// None: the answer to `HEAD`, a 204 or a 304.
    Empty,
    Length(u64),
    Chunked,
    /// Read until SFMC closes the connection.
    Close,
}

/// What the proxy knows of the request body before sending it.
#[derive(Debug, Clone, Copy)]
pub struct BodyHint {
    pub ended: bool,
    pub exact: Option<u64>,
}

/// Writes the request head into `out` (cleared first): request line,
/// headers and the framing header the body needs; returns that framing. A
/// `Transfer-Encoding` and an unusable `Content-Length` are left out (the
/// framing is this module's to choose).
pub fn encode_request(out: &mut Vec<u8>, parts: &request::Parts, body: BodyHint) -> Outgoing {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    // The origin form, or the absolute form a forward proxy takes.
    if let (Some(scheme), Some(authority)) = (parts.uri.scheme(), parts.uri.authority()) {
        out.extend_from_slice(scheme.as_str().as_bytes());
        out.extend_from_slice(b"://");
        out.extend_from_slice(authority.as_str().as_bytes());
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // One pass: the framing headers are this module's to write, after the
    // others (a `Content-Length` the request carries is kept if usable).
    let mut declared = Ok(None);
    for (name, value) in parts.headers.iter() {
        if name == header::CONTENT_LENGTH {
            declared = declared.and_then(|seen| merge_length(seen, value.as_bytes()));
        } else if name != header::TRANSFER_ENCODING {
            put_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let outgoing = match (declared.ok().flatten(), body) {
        // Trusted as hyper trusts it: the body is held to it when sent.
        (Some(length), _) => Outgoing::Length(length),
        (None, BodyHint { ended: true, .. }) => Outgoing::Empty,
        (None, BodyHint { exact: Some(n), .. }) => Outgoing::Length(n),
        // A GET, HEAD or CONNECT with a streamed body sends none, as hyper
        // does: almost no server reads one.
        (None, _) if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) => {
            Outgoing::Empty
        }
        (None, _) => Outgoing::Chunked,
    };
    match outgoing {
        Outgoing::Length(n) => {
            let mut digits = itoa::Buffer::new();
            put_field(out, b"content-length", digits.format(n).as_bytes());
        }
        Outgoing::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        Outgoing::Empty => {}
    }
    out.extend_from_slice(b"\r\n");
    outgoing
}

/// `name: value\r\n`. `HeaderName` and `HeaderValue` hold no CR or LF, so
/// nothing a client sent can end the line early.
fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response head read whole.
#[derive(Debug)]
pub struct ResponseHead {
    pub parts: response::Parts,
    pub framing: Framing,
    /// Whether the connection may carry another request after this
    /// response's body.
    pub keep_alive: bool,
}

/// Why SFMC's response could not be read; each says what SFMC did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("SFMC's response head is longer than {} KiB", MAX_HEAD / 1024)]
    TooLong,
    #[error("SFMC's response head has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("SFMC's response is not valid HTTP/1.1 ({0})")]
    Invalid(String),
    #[error("SFMC's response has an invalid Content-Length")]
    ContentLength,
    #[error("SFMC switched protocols (101), which the proxy never asks for")]
    Switched,
}

/// Reads a response head off the front of `buf`: `Ok(None)` while it is
/// incomplete. Informational (1xx) heads before it are consumed and skipped.
/// `head_request`: the request was a `HEAD` (its answer has no body).
pub fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        // Uninitialised, as hyper does: filling 100 empty fields first
        // would cost more than parsing a typical head.
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let length = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
        {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(HeadError::TooLong);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
            Err(error) => return Err(HeadError::Invalid(error.to_string())),
        };
        if length > MAX_HEAD {
            return Err(HeadError::TooLong);
        }
        let code = parsed.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|e| HeadError::Invalid(e.to_string()))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(HeadError::Switched);
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: the answer is still to come.
            let _ = buf.split_to(length);
            continue;
        }
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // The head's own copy: the header values share it, and the read
        // buffer stays free to be reused once the body has been passed on.
        let bytes = Bytes::copy_from_slice(&buf[..length]);
        let base = buf.as_ptr() as usize;
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        // What framing needs, noted in the same pass.
        let mut noted = Fields::new();
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| HeadError::Invalid(format!("bad header name {:?}", field.name)))?;
            noted.note(&name, field.value);
            // The value's place in the head (httparse's slices are of the
            // buffer parsed); copied instead should one ever not be.
            let place = (field.value.as_ptr() as usize)
                .checked_sub(base)
                .map(|start| start..start + field.value.len())
                .filter(|place| place.end <= length);
            let value = match place {
                Some(place) => HeaderValue::from_maybe_shared(bytes.slice(place)),
                None => HeaderValue::from_bytes(field.value),
            };
            let value = value.map_err(|_| {
                HeadError::Invalid(format!("bad value in the {} header", field.name))
            })?;
            headers.append(name, value);
        }
        if version == Version::HTTP_10 && noted.transfer_encoding {
            // RFC 9112 §6.1: faulty framing, whatever Content-Length says.
            return Err(HeadError::Invalid(
                "an HTTP/1.0 response with Transfer-Encoding".into(),
            ));
        }
        let (mut response, ()) = http::Response::new(()).into_parts();
        response.status = status;
        response.version = version;
        // SFMC's own words, as hyper's client kept them (and hyper's server
        // writes them back out).
        if let Some(reason) = parsed.reason
            && status.canonical_reason() != Some(reason)
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes())
        {
            response.extensions.insert(reason);
        }
        let _ = buf.split_to(length);
        let (framing, keep_alive) = framing(&mut headers, &noted, status, head_request)?;
        response.headers = headers;
        return Ok(Some(ResponseHead {
            parts: response,
            framing,
            keep_alive: keep_alive && version == Version::HTTP_11 && !noted.close,
        }));
    }
}

/// The fields of a response head its framing depends on.
struct Fields {
    /// `Content-Length`: none, one number, or unusable (`Err`).
    length: Result<Option<u64>, ()>,
    /// Whether there is a `Transfer-Encoding`, and whether its last coding
    /// (of its last field) is `chunked`.
    transfer_encoding: bool,
    chunked: bool,
    /// `Connection: close`.
    close: bool,
}

impl Fields {
    fn new() -> Self {
        Self {
            length: Ok(None),
            transfer_encoding: false,
            chunked: false,
            close: false,
        }
    }

    fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if name == header::CONTENT_LENGTH {
            self.length = self.length.and_then(|seen| merge_length(seen, value));
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            self.chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            self.close |= value
                .split(|&b| b == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
}

/// RFC 9112 §6.3; whether the framing lets the connection be kept.
fn framing(
    headers: &mut HeaderMap,
    fields: &Fields,
    status: StatusCode,
    head_request: bool,
) -> Result<(Framing, bool), HeadError> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    if fields.transfer_encoding {
        // Transfer-Encoding wins over Content-Length, which goes: a message
        // with both may be an attempt at response splitting, so the
        // connection is not used again either.
        let both = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(match fields.chunked {
            true => (Framing::Chunked, !both),
            false => (Framing::Close, false),
        });
    }
    match fields.length {
        Ok(Some(length)) => Ok((Framing::Length(length), true)),
        Ok(None) => Ok((Framing::Close, false)),
        Err(()) => Err(HeadError::ContentLength),
    }
}

/// Adds one `Content-Length` field (a comma-separated list is allowed) to
/// what the earlier ones said: every value must be the same decimal number.
fn merge_length(seen: Option<u64>, value: &[u8]) -> Result<Option<u64>, ()> {
    let mut length = seen;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|seen| seen != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}
