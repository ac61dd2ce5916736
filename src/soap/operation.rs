//! Which operation a SOAP envelope asks for: the one element inside its
//! `Body`, by namespace and local name (`RetrieveRequestMsg` in
//! `http://exacttarget.com/wsdl/partnerAPI`), read namespace-aware from the
//! whole envelope — for a tenant's `read_only` policy.
//!
//! It fails closed: anything that could make SFMC read another operation
//! than the one seen here is an error, not a guess — a document type
//! declaration, text or CDATA beside the operation, a second element in the
//! Body or a second Body, an Envelope child other than a Header, an empty
//! Body, an envelope cut short.

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::inject::encoding::{Charset, Source};
use super::inject::{EnvelopeError, SOAP11_NS, SOAP12_NS};

/// The namespace of SFMC's SOAP operations (the partner API's WSDL).
pub const PARTNER_API_NS: &str = "http://exacttarget.com/wsdl/partnerAPI";

/// The Body's one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its namespace, when one is bound.
    pub namespace: Option<String>,
    pub local_name: String,
}

/// Which child of the Envelope is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    None,
    Header,
    Body,
}

/// What has been read of the envelope so far.
struct Reading {
    /// Open elements.
    depth: usize,
    child: Child,
    bodies: usize,
    operation: Option<Operation>,
    /// The Envelope has ended.
    closed: bool,
}

/// The operation of the envelope whose first bytes are `buf` (`complete`
/// when they are all of it), in `charset` (the Content-Type's, if named).
/// Only a whole envelope names one: `None` while more is to come (an error
/// may show earlier).
pub fn operation_of(
    buf: &[u8],
    complete: bool,
    charset: Option<Charset>,
) -> Result<Option<Operation>, EnvelopeError> {
    let Some(source) = Source::new(buf, complete, charset)? else {
        return Ok(None);
    };
    let mut reader = NsReader::from_reader(&source.xml[..]);
    reader.config_mut().check_end_names = true;
    let mut reading = Reading {
        depth: 0,
        child: Child::None,
        bodies: 0,
        operation: None,
        closed: false,
    };
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (bound(&ns), event),
            Err(_) if !complete => return Ok(None),
            Err(error) => return Err(EnvelopeError::Malformed(error.to_string())),
        };
        match event {
            Event::Start(start) => reading.open(&start, ns, true)?,
            Event::Empty(start) => reading.open(&start, ns, false)?,
            Event::End(_) => reading.close()?,
            Event::Text(text) if text.bytes().all(|b| b.is_ascii_whitespace()) => {}
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if reading.holds_text() => {}
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                return Err(not_soap("text where only elements belong"));
            }
            Event::DocType(_) => {
                return Err(not_soap(
                    "a document type declaration (SFMC takes none; it could redefine what follows)",
                ));
            }
            Event::Eof if !complete => return Ok(None),
            Event::Eof => return reading.finish().map(Some),
            // Comments, processing instructions, the XML declaration.
            _ => {}
        }
    }
}

impl Reading {
    fn open(
        &mut self,
        start: &BytesStart<'_>,
        ns: Option<String>,
        has_content: bool,
    ) -> Result<(), EnvelopeError> {
        let soap = ns
            .as_deref()
            .is_some_and(|ns| ns == SOAP11_NS || ns == SOAP12_NS);
        let local = start.local_name();
        let local = local.as_ref();
        if self.closed {
            return Err(not_soap("an element after the Envelope"));
        }
        match self.depth {
            0 if soap && local == "Envelope" && has_content => {}
            0 if soap && local == "Envelope" => return Err(not_soap("the Envelope is empty")),
            0 => return Err(not_soap("the root element is not a SOAP Envelope")),
            1 if soap && local == "Header" => self.child = Child::Header,
            1 if soap && local == "Body" && self.bodies > 0 => {
                return Err(not_soap("the Envelope has two Bodies"));
            }
            1 if soap && local == "Body" && has_content => {
                self.bodies += 1;
                self.child = Child::Body;
            }
            1 if soap && local == "Body" => return Err(not_soap("the Body is empty")),
            1 => return Err(not_soap("an Envelope child other than Header and Body")),
            2 if self.child == Child::Body && self.operation.is_some() => {
                return Err(not_soap("the Body holds more than one element"));
            }
            2 if self.child == Child::Body => {
                self.operation = Some(Operation {
                    namespace: ns,
                    local_name: local.to_owned(),
                });
            }
            _ => {}
        }
        if has_content {
            self.depth += 1;
        } else if self.depth == 1 {
            // `<Header/>`: nothing stays open.
            self.child = Child::None;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), EnvelopeError> {
        self.depth = self.depth.saturating_sub(1);
        match self.depth {
            1 if self.child == Child::Body && self.operation.is_none() => {
                Err(not_soap("the Body is empty"))
            }
            1 => {
                self.child = Child::None;
                Ok(())
            }
            0 => {
                self.closed = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Text belongs inside the Header and inside the operation.
    fn holds_text(&self) -> bool {
        self.depth >= 3 || (self.depth >= 2 && self.child == Child::Header)
    }

    fn finish(self) -> Result<Operation, EnvelopeError> {
        if !self.closed {
            return Err(EnvelopeError::Malformed(
                "the body ends before </Envelope>".into(),
            ));
        }
        self.operation
            .ok_or_else(|| not_soap("the Envelope has no Body"))
    }
}

fn bound(ns: &ResolveResult<'_>) -> Option<String> {
    match ns {
        ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
        _ => None,
    }
}

fn not_soap(why: &str) -> EnvelopeError {
    EnvelopeError::NotSoap(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">";
    const RETRIEVE: &str = "<RetrieveRequestMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><RetrieveRequest><ObjectType>Subscriber</ObjectType></RetrieveRequest></RetrieveRequestMsg>";

    fn read(xml: &str) -> Result<Option<Operation>, EnvelopeError> {
        operation_of(xml.as_bytes(), true, None)
    }

    fn name(xml: &str) -> String {
        match read(xml) {
            Ok(Some(op)) => format!("{}|{}", op.namespace.unwrap_or_default(), op.local_name),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_element_in_the_body_is_the_operation() {
        let partner = format!("{PARTNER_API_NS}|RetrieveRequestMsg");
        for xml in [
            format!("{ENV}<s:Body>{RETRIEVE}</s:Body></s:Envelope>"),
            format!(
                "<?xml version=\"1.0\"?>\n{ENV}<s:Header><fueloauth xmlns=\"http://exacttarget.com\">t</fueloauth></s:Header>\n  <s:Body> <!-- a comment --> <?pi x?>\n{RETRIEVE}\n</s:Body></s:Envelope>\n"
            ),
            format!(
                "{ENV}<s:Body><et:RetrieveRequestMsg xmlns:et=\"{PARTNER_API_NS}\"/></s:Body></s:Envelope>"
            ),
            format!(
                "<Envelope xmlns=\"http://www.w3.org/2003/05/soap-envelope\"><Body>{RETRIEVE}</Body></Envelope>"
            ),
            // The Header after the Body, as some SDKs write it.
            format!("{ENV}<s:Body>{RETRIEVE}</s:Body><s:Header><a>x</a></s:Header></s:Envelope>"),
            format!("\u{FEFF}{ENV}<s:Header/><s:Body>{RETRIEVE}</s:Body></s:Envelope>"),
        ] {
            assert_eq!(name(&xml), partner, "{xml}");
        }
        // The Header may hold anything, even a lookalike of the operation.
        let header = format!(
            "{ENV}<s:Header><x>text<RetrieveRequestMsg xmlns=\"{PARTNER_API_NS}\"/></x></s:Header><s:Body><CreateRequest xmlns=\"{PARTNER_API_NS}\"/></s:Body></s:Envelope>"
        );
        assert_eq!(name(&header), format!("{PARTNER_API_NS}|CreateRequest"));
    }

    #[test]
    fn namespaces_are_resolved_not_guessed() {
        let other =
            format!("{ENV}<s:Body><RetrieveRequestMsg xmlns=\"urn:other\"/></s:Body></s:Envelope>");
        assert_eq!(name(&other), "urn:other|RetrieveRequestMsg");
        let none = format!("{ENV}<s:Body><RetrieveRequestMsg/></s:Body></s:Envelope>");
        assert_eq!(name(&none), "|RetrieveRequestMsg");
        // A Body in another namespace is not the SOAP Body.
        let fake_body = format!(
            "{ENV}<b:Body xmlns:b=\"urn:x\">{RETRIEVE}</b:Body><s:Body><CreateRequest/></s:Body></s:Envelope>"
        );
        assert!(read(&fake_body).is_err(), "{fake_body}");
    }

    #[test]
    fn what_cannot_be_told_is_an_error() {
        for xml in [
            format!("{ENV}<s:Body>text{RETRIEVE}</s:Body></s:Envelope>"),
            format!("{ENV}<s:Body>{RETRIEVE}text</s:Body></s:Envelope>"),
            format!("{ENV}<s:Body><![CDATA[x]]>{RETRIEVE}</s:Body></s:Envelope>"),
            format!("{ENV}<s:Body>&amp;{RETRIEVE}</s:Body></s:Envelope>"),
            format!("{ENV}<s:Body>{RETRIEVE}<CreateRequest/></s:Body></s:Envelope>"),
            format!(
                "{ENV}<s:Body>{RETRIEVE}</s:Body><s:Body><CreateRequest/></s:Body></s:Envelope>"
            ),
            format!("{ENV}<s:Body>{RETRIEVE}</s:Body><x/></s:Envelope>"),
            format!("{ENV}<s:Body>{RETRIEVE}</s:Body></s:Envelope><CreateRequest/>"),
            format!(
                "<!DOCTYPE s:Envelope [<!ENTITY e \"x\">]>{ENV}<s:Body>{RETRIEVE}</s:Body></s:Envelope>"
            ),
            format!("{ENV}<s:Body></s:Body></s:Envelope>"),
            format!("{ENV}<s:Body/></s:Envelope>"),
            format!("{ENV}<s:Header/></s:Envelope>"),
            format!("{ENV}<x/><s:Body>{RETRIEVE}</s:Body></s:Envelope>"),
            format!("<Envelope>{RETRIEVE}</Envelope>"),
            format!("{ENV}<s:Body>{RETRIEVE}</s:Body>"),
            format!("{ENV}<s:Body>{RETRIEVE}"),
            "not xml".to_owned(),
            String::new(),
        ] {
            assert!(read(&xml).is_err(), "{xml}: {:?}", read(&xml));
        }
    }

    #[test]
    fn only_a_whole_envelope_names_its_operation() {
        let xml = format!(
            "{ENV}<s:Header><a>{}</a></s:Header><s:Body>{RETRIEVE}</s:Body></s:Envelope>",
            "x".repeat(100)
        );
        assert!(read(&xml).is_ok_and(|op| op.is_some()));
        for at in 0..=xml.len() {
            let prefix = operation_of(&xml.as_bytes()[..at], false, None);
            assert_eq!(prefix, Ok(None), "prefix {at}");
        }
    }
}
