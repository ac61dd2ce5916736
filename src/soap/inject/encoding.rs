//! Which envelopes the scan can edit byte for byte, and the bytes it parses.
//!
//! The edits are byte offsets into the envelope as it came, so the parser
//! must see the same bytes at the same offsets. That holds for UTF-8 and the
//! single-byte ASCII-compatible encodings (US-ASCII, ISO-8859-*,
//! windows-125*), where every byte of markup is that ASCII character. It does
//! not for UTF-16, UTF-32 or EBCDIC (markup bytes mean other characters), nor
//! for multibyte encodings whose later bytes may look like ASCII markup: such
//! envelopes are refused, saying why, rather than edited in the wrong place.
//!
//! Two quirks of the parser (quick-xml) are undone here: it skips a UTF-8
//! byte order mark without counting it in its positions (so the mark is cut
//! off before parsing and its length added back), and it reads only UTF-8
//! (so a single-byte envelope is parsed as a copy whose bytes 0x80–0xFF are
//! widened to two-byte characters, and positions are mapped back).

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::EnvelopeError;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the envelope's bytes are, as far as the scan is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (US-ASCII included): parsed as it is.
    Utf8,
    /// One byte per character, ASCII below 0x80: parsed widened.
    SingleByte,
}

const SUPPORTED: &str = "the proxy edits envelopes in UTF-8, US-ASCII, ISO-8859-* or windows-125* only: send it as UTF-8";

/// The charset a name (XML `encoding=` or Content-Type `charset=`) stands
/// for, when the scan can edit it byte for byte. An allowlist: a name not
/// known to be ASCII-compatible byte for byte is refused.
pub fn charset(name: &str) -> Option<Charset> {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    let numbered = |prefixes: &[&str], range: std::ops::RangeInclusive<u32>| {
        prefixes.iter().any(|prefix| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| range.contains(&n))
        })
    };
    match name.as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" => Some(Charset::Utf8),
        "latin1" | "latin-1" => Some(Charset::SingleByte),
        _ if numbered(&["iso-8859-", "iso8859-", "iso_8859-"], 1..=16) => Some(Charset::SingleByte),
        _ if numbered(&["windows-", "cp"], 1250..=1258) => Some(Charset::SingleByte),
        _ => None,
    }
}

/// The refusal for a named charset the scan cannot edit.
pub fn unsupported(what: &str, name: &str) -> EnvelopeError {
    EnvelopeError::Encoding(format!("{what} names encoding `{name}`; {SUPPORTED}"))
}

/// Signs of an envelope that is not ASCII-compatible, by its first bytes.
/// Longer signs first: a UTF-32LE mark begins like a UTF-16LE one.
const SIGNS: [(&[u8], &str); 9] = [
    (
        b"\0\0\xFE\xFF",
        "starts with a UTF-32 (big-endian) byte order mark",
    ),
    (
        b"\xFF\xFE\0\0",
        "starts with a UTF-32 (little-endian) byte order mark",
    ),
    (
        b"\xFE\xFF",
        "starts with a UTF-16 (big-endian) byte order mark",
    ),
    (
        b"\xFF\xFE",
        "starts with a UTF-16 (little-endian) byte order mark",
    ),
    (b"\0\0\0<", "looks UTF-32 (big-endian) encoded"),
    (b"<\0\0\0", "looks UTF-32 (little-endian) encoded"),
    (b"\0<", "looks UTF-16 (big-endian) encoded"),
    (b"<\0", "looks UTF-16 (little-endian) encoded"),
    (
        b"\x4C\x6F\xA7\x94",
        "looks EBCDIC encoded (`<?xm` in EBCDIC)",
    ),
];

/// The bytes the parser reads, and how its positions map back to the envelope's.
pub struct Source<'a> {
    pub xml: Cow<'a, [u8]>,
    /// Length of the UTF-8 byte order mark cut off before `xml`.
    bom: usize,
    /// Where in `xml` each widened byte's two-byte character starts, ascending.
    widened: Vec<usize>,
}

impl<'a> Source<'a> {
    /// Prepares `buf` (the first bytes of a body; `complete` when all of it)
    /// for parsing in `declared` (the Content-Type's charset, if named);
    /// `None` while too few bytes have come to tell.
    pub fn new(
        buf: &'a [u8],
        complete: bool,
        declared: Option<Charset>,
    ) -> Result<Option<Self>, EnvelopeError> {
        if !complete && buf.len() < 4 {
            return Ok(None);
        }
        if let Some((_, why)) = SIGNS.iter().find(|(sign, _)| buf.starts_with(sign)) {
            return Err(EnvelopeError::Encoding(format!(
                "the envelope {why}; {SUPPORTED}"
            )));
        }
        let bom = if buf.starts_with(UTF8_BOM) {
            UTF8_BOM.len()
        } else {
            0
        };
        let xml = &buf[bom..];
        // The parser would skip a second mark as it skips the first, unseen.
        if bom > 0 && xml.starts_with(UTF8_BOM) {
            return Err(EnvelopeError::Encoding(
                "the envelope starts with two byte order marks".into(),
            ));
        }
        let Some(in_declaration) = declaration_charset(xml, complete)? else {
            return Ok(None);
        };
        let single_byte = [declared, in_declaration].contains(&Some(Charset::SingleByte));
        if !single_byte || xml.is_ascii() {
            return Ok(Some(Self {
                xml: Cow::Borrowed(xml),
                bom,
                widened: Vec::new(),
            }));
        }
        // Each byte 0x80–0xFF becomes its own character (U+0180 + its value
        // - 0x80, all letters): distinct bytes stay distinct, so prefixes and
        // names compare as their bytes do, and no ASCII byte moves but by the
        // widening before it.
        let mut widened = Vec::new();
        let mut wide = Vec::with_capacity(xml.len() + xml.len() / 8);
        for &byte in xml {
            if byte.is_ascii() {
                wide.push(byte);
            } else {
                widened.push(wide.len());
                let c = char::from_u32(0x180 + u32::from(byte - 0x80)).unwrap_or('_');
                let mut utf8 = [0; 4];
                wide.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        Ok(Some(Self {
            xml: Cow::Owned(wide),
            bom,
            widened,
        }))
    }

    /// The envelope's offset of the parser's position `at` (which is never
    /// inside a widened character: positions fall on ASCII markup).
    pub fn original(&self, at: usize) -> usize {
        let widenings = self.widened.partition_point(|&start| start < at);
        self.bom + at - widenings
    }
}

/// The charset an XML declaration at the start of `xml` names: `Some(None)`
/// without a declaration or an `encoding`, `None` while the declaration is
/// still coming.
fn declaration_charset(
    xml: &[u8],
    complete: bool,
) -> Result<Option<Option<Charset>>, EnvelopeError> {
    // As the parser tells a declaration from a processing instruction.
    let is_declaration = xml.starts_with(b"<?xml")
        && xml
            .get(5)
            .is_none_or(|&b| b == b'?' || b.is_ascii_whitespace());
    if !is_declaration {
        return Ok(Some(None));
    }
    let Some(end) = xml.windows(2).position(|w| w == b"?>") else {
        return match complete {
            true => Err(EnvelopeError::Malformed(
                "the XML declaration does not end".into(),
            )),
            false => Ok(None),
        };
    };
    let mut reader = Reader::from_reader(&xml[..end + 2]);
    let Ok(Event::Decl(decl)) = reader.read_event() else {
        return Err(EnvelopeError::Malformed(
            "the XML declaration cannot be read".into(),
        ));
    };
    match decl.encoding() {
        None => Ok(Some(None)),
        Some(Ok(name)) => match charset(&name) {
            Some(known) => Ok(Some(Some(known))),
            None => Err(unsupported("the XML declaration", &name)),
        },
        Some(Err(error)) => Err(EnvelopeError::Malformed(format!(
            "the XML declaration's encoding cannot be read: {error}"
        ))),
    }
}
