//! Where the token goes in a SOAP envelope: a namespace-aware scan that turns
//! the start of an envelope into a [`Plan`] of byte edits, then applies it.
//!
//! The scan resolves prefixes the way an XML parser does (a `fueloauth` counts
//! only in the `http://exacttarget.com` namespace, whatever its prefix and
//! wherever that is declared), and edits only these byte ranges:
//! - the text of each `fueloauth` in the envelope's `Header` (replaced);
//! - a missing `fueloauth` (inserted as the Header's first child);
//! - a missing `Header` (inserted as the Envelope's first child);
//! - a WS-Security `Security` header (removed: the client's credentials).
//!
//! Every other byte — declarations, prefixes, whitespace, CDATA, comments, the
//! Body — is copied as it came, a UTF-8 byte order mark included. A plan
//! holds no token, so it can be applied again with a fresh one for a replay.
//! Offsets are the envelope's own: `encoding` prepares what the parser reads
//! (a BOM cut off and counted back, single-byte encodings widened and mapped
//! back) and refuses envelopes that cannot be edited byte for byte (UTF-16,
//! UTF-32, EBCDIC, any other declared encoding); `verify` checks the promise.

use std::ops::Range;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use encoding::{Charset, Source};

pub const EXACTTARGET_NS: &str = "http://exacttarget.com";
pub(super) const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(super) const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";

/// Why an envelope cannot be rewritten (the client gets a SOAP Client fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the request body is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the request body is not a SOAP envelope: {0}")]
    NotSoap(String),
    #[error("the SOAP envelope cannot be edited byte for byte: {0}")]
    Encoding(String),
}

/// The outcome of scanning the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Every edit lies before `plan.upto`; the bytes after it pass unchanged.
    Ready(Plan),
    /// The decision needs more of the body.
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    edits: Vec<Edit>,
    /// The rewritten region is `[0, upto)`.
    pub upto: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    range: Range<usize>,
    kind: EditKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EditKind {
    /// Replace the range with the token text.
    Token,
    /// Replace the range with a whole `fueloauth` element.
    Fueloauth,
    /// Replace the range with a Header (with the given element name, the
    /// envelope's own bytes) holding `fueloauth`.
    Header(Vec<u8>),
    Remove,
}

impl Plan {
    /// The text of the `fueloauth` the client sent, if any: a broker-issued
    /// local token says which tenant and business unit the call is for.
    pub fn client_token<'a>(&self, head: &'a [u8]) -> Option<&'a [u8]> {
        self.edits
            .iter()
            .find(|edit| edit.kind == EditKind::Token)
            .and_then(|edit| head.get(edit.range.clone()))
    }

    /// `head` is at least `upto` bytes of the envelope; returns the rewritten `[0, upto)`.
    pub fn apply(&self, head: &[u8], token: &str) -> Vec<u8> {
        // Tokens are opaque base64-like strings; escape anyway so none can break the XML.
        let token = quick_xml::escape::escape(token);
        let fueloauth = format!("<fueloauth xmlns=\"{EXACTTARGET_NS}\">{token}</fueloauth>");
        let mut out = Vec::with_capacity(self.upto + fueloauth.len() + 32);
        let mut at = 0;
        for edit in &self.edits {
            out.extend_from_slice(&head[at..edit.range.start]);
            match &edit.kind {
                EditKind::Token => out.extend_from_slice(token.as_bytes()),
                EditKind::Fueloauth => out.extend_from_slice(fueloauth.as_bytes()),
                EditKind::Header(name) => {
                    for part in [
                        b"<",
                        &name[..],
                        b">",
                        fueloauth.as_bytes(),
                        b"</",
                        name,
                        b">",
                    ] {
                        out.extend_from_slice(part);
                    }
                }
                EditKind::Remove => {}
            }
            at = edit.range.end;
        }
        out.extend_from_slice(&head[at..self.upto]);
        out
    }
}

/// What the scanner knows about the element it is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Envelope,
    Header,
    Body,
    Fueloauth,
    Security,
    Other,
}

#[derive(Default)]
struct Scanner {
    stack: Vec<(Role, usize)>,
    edits: Vec<Edit>,
    /// End of the Envelope's start tag, and the Header name to use there.
    envelope: Option<(usize, Vec<u8>)>,
    header_open_end: Option<usize>,
    has_fueloauth: bool,
}

/// Scans `buf`, the first bytes of a request body; `complete` when it is all of it.
pub fn scan(buf: &[u8], complete: bool) -> Result<Scan, EnvelopeError> {
    scan_as(buf, complete, None)
}

/// [`scan`] for a body whose Content-Type names `charset` (one that
/// [`encoding::charset`] accepts).
pub fn scan_as(
    buf: &[u8],
    complete: bool,
    charset: Option<Charset>,
) -> Result<Scan, EnvelopeError> {
    let Some(source) = Source::new(buf, complete, charset)? else {
        return Ok(Scan::NeedMore);
    };
    let mut reader = NsReader::from_reader(&source.xml[..]);
    reader.config_mut().check_end_names = true;
    let mut scanner = Scanner::default();
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (namespace(&ns), event),
            // A truncated buffer ends mid-token: wait for the rest.
            Err(_) if !complete => return Ok(Scan::NeedMore),
            Err(error) => return Err(EnvelopeError::Malformed(error.to_string())),
        };
        let after = reader.buffer_position() as usize;
        let (at, end) = (source.original(before), source.original(after));
        let name = checked_name(buf, &source, &event, before, after)?;
        let done = match event {
            Event::Start(start) => scanner.open(&start, name, ns.as_deref(), at, end)?,
            Event::Empty(start) => scanner.empty(&start, name, ns.as_deref(), at, end)?,
            Event::End(_) => scanner.close(at, end),
            Event::Decl(_) if before > 0 => {
                return Err(EnvelopeError::Malformed(
                    "an XML declaration after the start of the envelope".into(),
                ));
            }
            Event::Eof if complete => {
                return Err(match scanner.envelope {
                    None => EnvelopeError::NotSoap("no Envelope element".into()),
                    Some(_) => EnvelopeError::Malformed("the body ends before </Envelope>".into()),
                });
            }
            Event::Eof => return Ok(Scan::NeedMore),
            _ => None,
        };
        if let Some(upto) = done {
            let edits = std::mem::take(&mut scanner.edits);
            return Ok(Scan::Ready(Plan { edits, upto }));
        }
    }
}

/// The envelope's bytes of the name of the tag the parser read at
/// `before..after` (its positions), empty for an event that is no tag.
///
/// Every edit is made at the envelope's offsets: the parser's are mapped and
/// a tag must be where its bytes are (a guard against the parser and the
/// envelope ever disagreeing again, as they did over a BOM). XML has no
/// U+0000 in any encoding: a NUL byte means UTF-16/32 (or not XML),
/// whatever the parser made of it.
fn checked_name<'b>(
    buf: &'b [u8],
    source: &Source<'_>,
    event: &Event<'_>,
    before: usize,
    after: usize,
) -> Result<&'b [u8], EnvelopeError> {
    if source
        .xml
        .get(before..after)
        .is_some_and(|bytes| bytes.contains(&0))
    {
        return Err(EnvelopeError::Encoding(
            "it contains a NUL byte (UTF-16 or UTF-32?); send it as UTF-8".into(),
        ));
    }
    // Where the name starts after the `<` (or `</`), and its length.
    let (skip, len) = match event {
        Event::Start(start) | Event::Empty(start) => (1, start.name().as_ref().len()),
        Event::End(end) => (2, end.name().as_ref().len()),
        _ => return Ok(&[]),
    };
    let (at, end) = (source.original(before), source.original(after));
    let name_end = source.original(before + skip + len);
    let tag = buf.get(at..end).unwrap_or_default();
    let opens = tag.starts_with(if skip == 2 { b"</" } else { b"<" });
    buf.get(at + skip..name_end)
        .filter(|_| opens && tag.ends_with(b">") && name_end <= end)
        .ok_or_else(|| {
            EnvelopeError::Encoding(
                "the parser's positions do not match the envelope's bytes".into(),
            )
        })
}

fn namespace(ns: &ResolveResult<'_>) -> Option<String> {
    match ns {
        ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
        _ => None,
    }
}

impl Scanner {
    fn role(&self, start: &BytesStart<'_>, ns: Option<&str>) -> Result<Role, EnvelopeError> {
        let name = start.local_name();
        let local = name.as_ref();
        let parent = self.stack.last().map(|(role, _)| *role);
        let envelope_ns = ns.is_some_and(|ns| ns == SOAP11_NS || ns == SOAP12_NS);
        Ok(match parent {
            None if local == "Envelope" && envelope_ns => Role::Envelope,
            None => {
                return Err(EnvelopeError::NotSoap(format!(
                    "the root element is `{}`, not a SOAP 1.1 or 1.2 Envelope",
                    start.name().as_ref()
                )));
            }
            Some(Role::Envelope) if envelope_ns && local == "Header" => Role::Header,
            Some(Role::Envelope) if envelope_ns && local == "Body" => Role::Body,
            Some(Role::Header) if ns == Some(EXACTTARGET_NS) && local == "fueloauth" => {
                Role::Fueloauth
            }
            Some(Role::Header) if ns == Some(WSSE_NS) && local == "Security" => Role::Security,
            _ => Role::Other,
        })
    }

    fn open(
        &mut self,
        start: &BytesStart<'_>,
        name: &[u8],
        ns: Option<&str>,
        before: usize,
        after: usize,
    ) -> Result<Option<usize>, EnvelopeError> {
        let role = self.role(start, ns)?;
        match role {
            Role::Envelope => {
                // The Envelope's prefix as its bytes came (not as parsed).
                let header = match name.iter().position(|&b| b == b':') {
                    Some(colon) => [&name[..=colon], b"Header"].concat(),
                    None => b"Header".to_vec(),
                };
                self.envelope = Some((after, header));
            }
            Role::Header => self.header_open_end = Some(after),
            Role::Fueloauth => self.has_fueloauth = true,
            _ => {}
        }
        // Content and Security start where the scanner needs them at the end tag.
        let mark = if role == Role::Security {
            before
        } else {
            after
        };
        self.stack.push((role, mark));
        Ok(None)
    }

    fn empty(
        &mut self,
        start: &BytesStart<'_>,
        name: &[u8],
        ns: Option<&str>,
        before: usize,
        after: usize,
    ) -> Result<Option<usize>, EnvelopeError> {
        let kind = match self.role(start, ns)? {
            Role::Envelope => return Err(EnvelopeError::NotSoap("the Envelope is empty".into())),
            Role::Header => EditKind::Header(name.to_vec()),
            Role::Fueloauth => {
                self.has_fueloauth = true;
                EditKind::Fueloauth
            }
            Role::Security => EditKind::Remove,
            _ => return Ok(None),
        };
        let header_done = matches!(kind, EditKind::Header(_));
        self.edits.push(Edit {
            range: before..after,
            kind,
        });
        Ok(header_done.then_some(after))
    }

    fn close(&mut self, before: usize, after: usize) -> Option<usize> {
        let (role, mark) = self.stack.pop()?;
        match role {
            Role::Fueloauth => self.edits.push(Edit {
                range: mark..before,
                kind: EditKind::Token,
            }),
            Role::Security => self.edits.push(Edit {
                range: mark..after,
                kind: EditKind::Remove,
            }),
            Role::Header => {
                if !self.has_fueloauth {
                    let at = self.header_open_end.unwrap_or(before);
                    self.edits.push(Edit {
                        range: at..at,
                        kind: EditKind::Fueloauth,
                    });
                }
                self.edits.sort_by_key(|e| (e.range.start, e.range.end));
                return Some(after);
            }
            Role::Envelope => {
                // No Header anywhere: create one as the Envelope's first child.
                let (at, header) = self.envelope.clone()?;
                self.edits.push(Edit {
                    range: at..at,
                    kind: EditKind::Header(header),
                });
                self.edits.sort_by_key(|e| (e.range.start, e.range.end));
                return Some(after);
            }
            _ => {}
        }
        None
    }
}

pub mod encoding;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
pub mod verify;
