//! The SOAP Faults the proxy acts on: SFMC's answer to a token it does not
//! accept — a faultstring that begins `Token Expired` (expired) or `Login
//! failed` (invalid or revoked) — and its throttling, `Rate Limited`; in
//! whatever case and with whatever detail after it. The Fault is parsed
//! (SOAP 1.1 `faultstring`, SOAP 1.2 `Reason/Text`) rather than searched
//! for the words, so a Body that merely mentions them is taken for neither.

use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use super::inject::{SOAP11_NS, SOAP12_NS};

/// How a faultstring for a refused token begins (compared in lower case).
const TOKEN_REFUSALS: [&str; 2] = ["login failed", "token expired"];

/// How SFMC's throttling fault begins (compared in lower case).
const RATE_LIMITED: &str = "rate limited";

/// A fault the proxy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SFMC refused the token: drop it, replay once.
    TokenRefused,
    /// SFMC is throttling: counted; passed on, or sent again under
    /// `retry_throttled`.
    RateLimited,
}

impl Fault {
    /// The fault `body` (an HTTP 500's) is, if it is one of these.
    pub fn of(body: &[u8]) -> Option<Self> {
        let text = fault_text(body)?.trim().to_lowercase();
        if TOKEN_REFUSALS.iter().any(|r| text.starts_with(r)) {
            Some(Self::TokenRefused)
        } else if text.starts_with(RATE_LIMITED) {
            Some(Self::RateLimited)
        } else {
            None
        }
    }
}

/// Where the reader is on the way to the Fault's text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Envelope,
    Body,
    Fault,
    /// SOAP 1.2 `Reason`, which holds the `Text`.
    Reason,
    /// The faultstring (1.1) or the first `Reason/Text` (1.2).
    Text,
    Other,
}

/// The text of `Envelope/Body/Fault/faultstring` (SOAP 1.1; the faultstring
/// unqualified as the schema has it, or qualified as some servers write it)
/// or `…/Fault/Reason/Text` (SOAP 1.2), entities resolved and CDATA read;
/// `None` when the body is no SOAP fault or not well-formed.
fn fault_text(body: &[u8]) -> Option<String> {
    let mut reader = NsReader::from_reader(body);
    let (mut stack, mut text) = (Vec::<Level>::new(), String::new());
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        let soap = matches!(ns, ResolveResult::Bound(ns) if ns.0 == SOAP11_NS || ns.0 == SOAP12_NS);
        let in_text = stack.last() == Some(&Level::Text);
        match event {
            Event::Start(start) => {
                let level = match (stack.last(), start.local_name().as_ref()) {
                    (None, "Envelope") if soap => Level::Envelope,
                    (None, _) => return None,
                    (Some(Level::Envelope), "Body") if soap => Level::Body,
                    (Some(Level::Body), "Fault") if soap => Level::Fault,
                    (Some(Level::Fault), "faultstring") => Level::Text,
                    (Some(Level::Fault), "Reason") if soap => Level::Reason,
                    (Some(Level::Reason), "Text") if soap => Level::Text,
                    _ => Level::Other,
                };
                stack.push(level);
            }
            Event::End(_) if in_text => return Some(text),
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) if in_text => text.push_str(&t.xml10_content()),
            Event::CData(c) if in_text => text.push_str(&c.xml10_content()),
            Event::GeneralRef(r) if in_text => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => text.push_str(resolve_predefined_entity(&r.xml10_content())?),
            },
            Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfmc_throttling_is_recognised_and_a_mention_is_not() {
        let limited = fault11("<faultstring>Rate Limited: too many requests</faultstring>");
        assert_eq!(Fault::of(&limited), Some(Fault::RateLimited));
        let mention =
            fault11("<faultstring>Invalid field</faultstring><detail>Rate Limited</detail>");
        assert_eq!(Fault::of(&mention), None);
    }

    fn is_token_fault(body: &[u8]) -> bool {
        Fault::of(body) == Some(Fault::TokenRefused)
    }

    #[test]
    fn sfmc_token_faults_are_recognised() {
        assert!(is_token_fault(&fault11(
            "<faultstring>Token Expired</faultstring>"
        )));
        assert!(is_token_fault(&fault11(
            "<faultstring>Login failed</faultstring>"
        )));
        assert!(!is_token_fault(&fault11(
            "<faultstring>Rate Limited</faultstring>"
        )));
    }

    /// A SOAP 1.1 fault envelope with this faultstring element (as written).
    fn fault11(faultstring: &str) -> Vec<u8> {
        format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault><faultcode xmlns:q0=\"http://schemas.xmlsoap.org/soap/envelope/\">q0:Security</faultcode>{faultstring}</soap:Fault></soap:Body></soap:Envelope>").into_bytes()
    }

    #[test]
    fn token_faults_are_recognised_however_worded() {
        let worded = [
            "<faultstring>Token Expired</faultstring>",
            "<faultstring>Login failed</faultstring>",
            "<faultstring>Login Failed: token revoked</faultstring>",
            "<faultstring>TOKEN EXPIRED.</faultstring>",
            "<faultstring>token expired</faultstring>",
            "<faultstring>\n   Login failed\n</faultstring>",
            "<faultstring><![CDATA[Login failed: the token is not valid]]></faultstring>",
            "<faultstring xml:lang=\"en\">Token Expired</faultstring>",
            "<soap:faultstring>Token Expired</soap:faultstring>",
            "<faultstring>Login&#32;failed</faultstring>",
            "<detail/><faultstring>Token Expired</faultstring>",
        ];
        for faultstring in worded {
            assert!(is_token_fault(&fault11(faultstring)), "{faultstring}");
        }
        let soap12 = br#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value></env:Code><env:Reason><env:Text xml:lang="en">Login Failed: token revoked</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
        assert!(is_token_fault(soap12));
        let bom = [
            &b"\xEF\xBB\xBF"[..],
            &fault11("<faultstring>Token Expired</faultstring>"),
        ]
        .concat();
        assert!(is_token_fault(&bom));
    }

    #[test]
    fn other_faults_and_mere_mentions_are_not_token_faults() {
        let not = [
            fault11("<faultstring>Rate Limited</faultstring>"),
            fault11("<faultstring>Error: Login failed for the FTP account</faultstring>"),
            fault11("<faultstring>Server was unable to process request.</faultstring><detail><x>Token Expired</x></detail>"),
            fault11("<faultstring></faultstring>"),
            fault11("<detail><faultstring>Token Expired</faultstring></detail>"),
            b"<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><RetrieveResponseMsg><faultstring>Token Expired</faultstring><Text>Login failed</Text></RetrieveResponseMsg></soap:Body></soap:Envelope>".to_vec(),
            b"<html><body><h1>Token Expired</h1></body></html>".to_vec(),
            b"<faultstring>Token Expired</faultstring>".to_vec(),
            b"Login failed".to_vec(),
            b"".to_vec(),
        ];
        for body in not {
            assert!(!is_token_fault(&body), "{}", String::from_utf8_lossy(&body));
        }
    }
}
