//! The chunked transfer coding of a response body (RFC 9112 §7.1), decoded
//! off the front of the connection's read buffer: data comes out as slices
//! of it (no copy), then the trailer section, if any. As strict as hyper's
//! decoder: CRLF line ends only, at most 16 hex digits of size, bounded
//! extension and trailer lengths.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_SIZE_LINE: usize = 4 * 1024;
/// Nor may a body's chunk extensions add up to more (hyper's limit): a
/// server would otherwise make the proxy read kilobytes for every byte.
const MAX_EXTENSIONS: usize = 16 * 1024;
/// Nor may the trailer section exceed this.
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting `size[;ext]CRLF`.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer fields, then CRLF.
    Trailers,
    Done,
}

/// What the next step of decoding found.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    /// The trailer section (the body has ended).
    Trailers(HeaderMap),
    /// The body has ended, without trailers.
    End,
    /// The buffer holds no complete next item: read more.
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SFMC's chunked response body is malformed ({0})")]
pub struct ChunkError(&'static str);

#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Bytes of chunk-size lines beyond their sizes, so far.
    extensions: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            state: State::Size,
            extensions: 0,
        }
    }
}

impl Decoder {
    /// Decodes from the front of `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = line(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let (size, digits) = chunk_size(&buf[..line])?;
                    self.extensions += line - digits;
                    if self.extensions > MAX_EXTENSIONS {
                        return Err(ChunkError("chunk extensions too long"));
                    }
                    let _ = buf.split_to(line + 2);
                    self.state = match size {
                        0 => State::Trailers,
                        n => State::Data(n),
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("no CRLF after a chunk's data"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Decoded::End),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        if buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            self.state = State::Done;
            return Ok(Decoded::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let (length, parsed) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(complete)) => complete,
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                return Err(ChunkError("trailer section too long"));
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(ChunkError("invalid trailer section")),
        };
        if length > MAX_TRAILERS {
            return Err(ChunkError("trailer section too long"));
        }
        // httparse takes a bare LF for a line end; RFC 9112 and hyper do not.
        if buf[..length]
            .iter()
            .enumerate()
            .any(|(at, &b)| b == b'\n' && (at == 0 || buf[at - 1] != b'\r'))
        {
            return Err(ChunkError("a bare LF in the trailer section"));
        }
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for field in parsed {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ChunkError("bad trailer name"))?;
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| ChunkError("bad trailer value"))?;
            trailers.append(name, value);
        }
        let _ = buf.split_to(length);
        self.state = State::Done;
        Ok(Decoded::Trailers(trailers))
    }
}

/// The length of the line at the front of `buf`, without its CRLF; `None`
/// while no CRLF has arrived. A bare CR or LF is an error.
fn line(buf: &BytesMut, max: usize) -> Result<Option<usize>, ChunkError> {
    let window = &buf[..buf.len().min(max + 1)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if buf.get(at..at + 2) == Some(b"\r\n") => Ok(Some(at)),
        // The LF has yet to arrive.
        Some(at) if buf[at] == b'\r' && at + 1 == buf.len() => Ok(None),
        Some(_) => Err(ChunkError("a bare CR or LF in a chunk-size line")),
        None if window.len() > max => Err(ChunkError("chunk-size line too long")),
        None => Ok(None),
    }
}

/// `1*HEXDIG *WSP [";" extensions]`, extensions ignored: the size, and
/// how many digits it took.
fn chunk_size(line: &[u8]) -> Result<(u64, usize), ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError("no chunk size"));
    }
    if digits > 16 {
        return Err(ChunkError("chunk size too large"));
    }
    let size = line[..digits].iter().fold(0u64, |size, &d| {
        // Hex digits only, checked above.
        let value = (d as char).to_digit(16).unwrap_or(0);
        (size << 4) | u64::from(value)
    });
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(ChunkError("junk after the chunk size"));
    }
    Ok((size, digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the data, the trailers,
    /// and whether it ended.
    fn decode_in_steps(
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::Trailers(trailers) => return Ok((data, Some(trailers))),
                Decoded::End => return Ok((data, None)),
                Decoded::NeedMore if fed == wire.len() => return Err(ChunkError("ran out")),
                Decoded::NeedMore => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_however_the_bytes_arrive() {
        let wire = b"5\r\nhello\r\n6;name=value\r\n world\r\nA \r\n0123456789\r\n0\r\nx-checksum: 42\r\n\r\n";
        for step in 1..=wire.len() {
            let (data, trailers) = decode_in_steps(wire, step).expect("valid");
            assert_eq!(data, b"hello world0123456789", "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-checksum"], "42");
        }
        let (data, trailers) = decode_in_steps(b"0\r\n\r\n", 1).expect("empty body");
        assert!(data.is_empty() && trailers.is_none());
    }

    #[test]
    fn malformed_framing_is_refused_not_guessed() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
            b"g\r\n",                      // no hex digit
            b"11111111111111111\r\n",      // 17 digits: overflow
            b"5 x\r\nhello\r\n",           // junk after the size
            b"5\r\r\nhello\r\n",           // bare CR
            b"0\r\nbad header\r\n\r\n",    // not a field
        ] {
            assert!(
                decode_in_steps(wire, wire.len()).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(wire)
            );
        }
        let long = [b"1;".as_slice(), &[b'x'; MAX_SIZE_LINE]].concat();
        assert!(decode_in_steps(&long, 64).is_err(), "endless extensions");
        // Short lines, but extensions without end over many chunks.
        let ext = [b"1;".as_slice(), &[b'x'; 1000], b"\r\na\r\n"].concat();
        let many: Vec<u8> = ext.repeat(17).into_iter().chain(*b"0\r\n\r\n").collect();
        assert_eq!(
            decode_in_steps(&many, many.len()),
            Err(ChunkError("chunk extensions too long"))
        );
        let some: Vec<u8> = ext.repeat(15).into_iter().chain(*b"0\r\n\r\n").collect();
        assert!(
            decode_in_steps(&some, some.len()).is_ok(),
            "15 KB of them pass"
        );
    }

    #[test]
    fn the_bytes_after_the_body_are_left_for_the_connection() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        let mut decoder = Decoder::default();
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from("abc")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    }
}
