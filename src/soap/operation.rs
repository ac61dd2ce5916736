//! Which operation a SOAP envelope asks for: the first element inside its
//! `Body`, by namespace and local name (`RetrieveRequestMsg` in
//! `http://exacttarget.com/wsdl/partnerAPI`), read namespace-aware from the
//! start of the envelope — for a tenant's `read_only` policy.
//!
//! It fails closed: anything that could make SFMC read another operation
//! than the one seen here is an error, not a guess — a document type
//! declaration, text or CDATA before the first element, an Envelope child
//! other than a Header before the Body, an empty Body, an envelope cut short.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use super::inject::encoding::{Charset, Source};
use super::inject::{EnvelopeError, SOAP11_NS, SOAP12_NS};

/// The namespace of SFMC's SOAP operations (the partner API's WSDL).
pub const PARTNER_API_NS: &str = "http://exacttarget.com/wsdl/partnerAPI";

/// The Body's first element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its namespace, when one is bound.
    pub namespace: Option<String>,
    pub local_name: String,
    /// The envelope offset where its start tag ends.
    pub end: usize,
}

/// The operation of the envelope whose first bytes are `buf` (`complete`
/// when they are all of it), in `charset` (the Content-Type's, if named);
/// `None` while it needs more of the body.
pub fn first_in_body(
    buf: &[u8],
    complete: bool,
    charset: Option<Charset>,
) -> Result<Option<Operation>, EnvelopeError> {
    let Some(source) = Source::new(buf, complete, charset)? else {
        return Ok(None);
    };
    let mut reader = NsReader::from_reader(&source.xml[..]);
    reader.config_mut().check_end_names = true;
    // Depth of open elements; `in_header` while inside the Header.
    let (mut depth, mut in_header, mut in_body) = (0usize, false, false);
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (bound(&ns), event),
            Err(_) if !complete => return Ok(None),
            Err(error) => return Err(EnvelopeError::Malformed(error.to_string())),
        };
        let at = source.original(reader.buffer_position() as usize);
        let soap = ns
            .as_deref()
            .is_some_and(|ns| ns == SOAP11_NS || ns == SOAP12_NS);
        match event {
            Event::Start(start) | Event::Empty(start) if in_body => {
                let local_name = start.local_name().as_ref().to_owned();
                return Ok(Some(Operation {
                    namespace: ns,
                    local_name,
                    end: at,
                }));
            }
            Event::Start(start) => {
                let local = start.local_name();
                match depth {
                    0 if soap && local.as_ref() == "Envelope" => {}
                    0 => return Err(not_soap("the root element is not a SOAP Envelope")),
                    1 if soap && local.as_ref() == "Header" => in_header = true,
                    1 if soap && local.as_ref() == "Body" => in_body = true,
                    1 => return Err(not_soap("an element other than Header before the Body")),
                    _ => {}
                }
                depth += 1;
            }
            Event::Empty(start) => match depth {
                0 => return Err(not_soap("the Envelope is empty")),
                1 if soap && start.local_name().as_ref() == "Body" => {
                    return Err(not_soap("the Body is empty"));
                }
                1 if soap && start.local_name().as_ref() == "Header" => {}
                1 => return Err(not_soap("an element other than Header before the Body")),
                _ => {}
            },
            Event::End(_) => {
                if in_body {
                    return Err(not_soap("the Body is empty"));
                }
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    in_header = false;
                }
                if depth == 0 {
                    return Err(not_soap("the Envelope has no Body"));
                }
            }
            // Inside the Header anything goes: it is not the operation.
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if in_header => {}
            Event::Text(text) if text.bytes().all(|b| b.is_ascii_whitespace()) => {}
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                return Err(not_soap("text where only elements belong"));
            }
            Event::DocType(_) => {
                return Err(not_soap(
                    "a document type declaration (SFMC takes none; it could redefine what follows)",
                ));
            }
            Event::Eof if complete => return Err(not_soap("the envelope ends before its Body")),
            Event::Eof => return Ok(None),
            // Comments, processing instructions, the XML declaration.
            _ => {}
        }
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
    const RETRIEVE: &str = "<RetrieveRequestMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><RetrieveRequest/></RetrieveRequestMsg>";

    fn read(xml: &str) -> Result<Option<Operation>, EnvelopeError> {
        first_in_body(xml.as_bytes(), true, None)
    }

    fn name(xml: &str) -> String {
        match read(xml) {
            Ok(Some(op)) => format!("{}|{}", op.namespace.unwrap_or_default(), op.local_name),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_first_element_of_the_body_is_the_operation() {
        let partner = format!("{PARTNER_API_NS}|RetrieveRequestMsg");
        for xml in [
            format!("{ENV}<s:Body>{RETRIEVE}</s:Body></s:Envelope>"),
            format!(
                "<?xml version=\"1.0\"?>\n{ENV}<s:Header><fueloauth xmlns=\"http://exacttarget.com\">t</fueloauth></s:Header>\n  <s:Body> <!-- a comment --> <?pi x?>\n{RETRIEVE}</s:Body></s:Envelope>"
            ),
            format!(
                "{ENV}<s:Body><et:RetrieveRequestMsg xmlns:et=\"{PARTNER_API_NS}\"/></s:Body></s:Envelope>"
            ),
            format!(
                "<Envelope xmlns=\"http://www.w3.org/2003/05/soap-envelope\"><Body>{RETRIEVE}</Body></Envelope>"
            ),
            format!("\u{FEFF}{ENV}<s:Body>{RETRIEVE}</s:Body></s:Envelope>"),
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
            format!("{ENV}<s:Body><![CDATA[x]]>{RETRIEVE}</s:Body></s:Envelope>"),
            format!("{ENV}<s:Body>&amp;{RETRIEVE}</s:Body></s:Envelope>"),
            format!(
                "<!DOCTYPE s:Envelope [<!ENTITY e \"x\">]>{ENV}<s:Body>{RETRIEVE}</s:Body></s:Envelope>"
            ),
            format!("{ENV}<s:Body></s:Body></s:Envelope>"),
            format!("{ENV}<s:Body/></s:Envelope>"),
            format!("{ENV}<s:Header/></s:Envelope>"),
            format!("{ENV}<x/><s:Body>{RETRIEVE}</s:Body></s:Envelope>"),
            format!("<Envelope>{RETRIEVE}</Envelope>"),
            format!("{ENV}<s:Header><fueloauth>t</fueloauth></s:Header>"),
            "not xml".to_owned(),
            String::new(),
        ] {
            assert!(read(&xml).is_err(), "{xml}: {:?}", read(&xml));
        }
    }

    #[test]
    fn a_prefix_waits_for_more_and_then_agrees_with_the_whole() {
        let xml = format!(
            "{ENV}<s:Header><a>{}</a></s:Header><s:Body>{RETRIEVE}</s:Body></s:Envelope>",
            "x".repeat(100)
        );
        let whole = read(&xml).expect("readable").expect("found");
        let open = &RETRIEVE[..=RETRIEVE.find('>').unwrap_or_default()];
        assert!(xml[..whole.end].ends_with(open), "{}", &xml[..whole.end]);
        for at in 0..xml.len() {
            match first_in_body(&xml.as_bytes()[..at], false, None) {
                Ok(None) => assert!(at < whole.end, "{at}"),
                Ok(Some(op)) => assert_eq!(op, whole, "{at}"),
                Err(e) => panic!("prefix {at}: {e}"),
            }
        }
    }
}
