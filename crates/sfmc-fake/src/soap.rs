//! The fake's SOAP endpoint: `POST /Service.asmx` (any case) on the instance host.
//!
//! It reads the envelope with its own namespace-aware parse — deliberately not
//! the proxy's injector, so that tests check the proxy against an independent
//! reader — and answers as SFMC does, always HTTP 500 for a fault: `Login failed`
//! unless the Header holds exactly one `fueloauth` (namespace
//! `http://exacttarget.com`) with a token the fake issued, `Token Expired` for an
//! expired one, `Rate Limited` on demand; else a Retrieve-style answer echoing
//! the ObjectType, with the token's MID (`Client/ID`) and, in a `fake:Received`
//! header, the token's number, the SOAPAction and the received body's length
//! and SHA-256.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::auth::{InvalidToken, Issued};
use crate::{Reply, State, escape, hex, lock, lossy, text_response};

/// The path SDKs post to (`soap_instance_url + "Service.asmx"`), matched in any case.
pub(super) const PATH: &str = "/Service.asmx";
const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const FUEL_NS: &str = "http://exacttarget.com";
/// The fake's own elements in its answers.
const FAKE_NS: &str = "urn:sfmc-proxy:fake";
/// Far above any envelope a test sends; the fake holds the body to parse it.
const MAX_ENVELOPE: usize = 64 * 1024 * 1024;

/// A SOAP request as it reached the fake: what SFMC would have seen.
#[derive(Clone, Debug)]
pub struct SoapRequest {
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub(super) async fn service(req: Request<Incoming>, state: &State) -> Reply {
    if req.method() != Method::POST {
        let mut reply = text_response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "Use POST.");
        let allow = HeaderValue::from_static("POST");
        reply.headers_mut().insert(header::ALLOW, allow);
        return reply;
    }
    state.soap_requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let Some(body) = receive(body, &state.upload).await else {
        return fault("soap:Client", "Server was unable to read request.");
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    *lock(&state.last_soap) = Some(SoapRequest {
        path_and_query: path_and_query.to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let envelope = match Envelope::parse(&body) {
        Ok(envelope) => envelope,
        Err(reason) => {
            let text = format!("Server was unable to read request. ---> {reason}");
            return fault("soap:Client", &text);
        }
    };
    let issued = match envelope.token().map(|token| state.check(token)) {
        Some(Ok(issued)) => issued,
        Some(Err(refusal)) => return security_fault(&state.soap_refusal(Some(refusal))),
        None => return security_fault(&state.soap_refusal(None)),
    };
    if State::refuse_one(&state.soap_rate_limited) {
        return fault("soap:Server", "Rate Limited");
    }
    retrieve_response(&envelope, &issued, &body, &parts.headers)
}

/// The whole body (signalling `started` at its first bytes, so tests can see
/// it stream in), or `None` when it cannot be read or is absurdly large.
async fn receive(mut body: Incoming, started: &Notify) -> Option<Bytes> {
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        if received.is_empty() && !data.is_empty() {
            started.notify_one();
        }
        received.extend_from_slice(&data);
        if received.len() > MAX_ENVELOPE {
            return None;
        }
    }
    Some(Bytes::from(received))
}

/// What the fake reads from an envelope.
#[derive(Default)]
struct Envelope {
    /// The text of each `fueloauth` that is a child of the Header.
    tokens: Vec<String>,
    /// The local name of the Body's first element (`RetrieveRequestMsg`…).
    operation: Option<String>,
    /// `RetrieveRequestMsg/RetrieveRequest/ObjectType`.
    object_type: Option<String>,
}

/// An open element: its namespace (if bound) and local name.
type Open = (Option<String>, String);

#[derive(Clone, Copy)]
enum Field {
    Token,
    ObjectType,
}

impl Envelope {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let mut reader = NsReader::from_reader(body);
        reader.config_mut().check_end_names = true;
        let (mut envelope, mut open, mut text) = (Envelope::default(), Vec::<Open>::new(), None);
        loop {
            let (ns, event) = reader
                .read_resolved_event()
                .map_err(|e| format!("the XML is not well-formed: {e}"))?;
            let ns = match ns {
                ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
                _ => None,
            };
            match event {
                Event::Start(start) => {
                    envelope.enter(&mut open, ns, &start)?;
                    text = field(&open).map(|_| String::new());
                }
                Event::Empty(start) => {
                    envelope.enter(&mut open, ns, &start)?;
                    envelope.store(&open, String::new());
                    open.pop();
                }
                Event::End(_) => {
                    if let Some(text) = text.take() {
                        envelope.store(&open, text);
                    }
                    open.pop();
                }
                Event::Text(t) => push(&mut text, &t.xml10_content()),
                Event::CData(c) => push(&mut text, &c.xml10_content()),
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => resolve_predefined_entity(&r.xml10_content())
                            .ok_or("an unknown entity reference")?
                            .to_owned(),
                    };
                    push(&mut text, &resolved);
                }
                Event::Eof if open.is_empty() && envelope.operation.is_some() => {
                    return Ok(envelope);
                }
                Event::Eof => return Err("the body is not a SOAP envelope with a Body".into()),
                _ => {}
            }
        }
    }

    /// Opens an element: the root must be a SOAP Envelope.
    fn enter(
        &mut self,
        open: &mut Vec<Open>,
        ns: Option<String>,
        start: &BytesStart<'_>,
    ) -> Result<(), String> {
        let local = start.local_name().as_ref().to_owned();
        if open.is_empty() && !(is_soap(ns.as_deref()) && local == "Envelope") {
            return Err(format!("the root element `{local}` is not a SOAP Envelope"));
        }
        if let [_, (body_ns, body)] = open.as_slice()
            && is_soap(body_ns.as_deref())
            && body == "Body"
            && self.operation.is_none()
        {
            self.operation = Some(local.clone());
        }
        open.push((ns, local));
        Ok(())
    }

    fn store(&mut self, open: &[Open], text: String) {
        match field(open) {
            Some(Field::Token) => self.tokens.push(text.trim().to_owned()),
            Some(Field::ObjectType) => self.object_type = Some(text.trim().to_owned()),
            None => {}
        }
    }

    /// The token, when the Header carries exactly one: two would be ambiguous
    /// credentials, which the fake refuses like a missing one.
    fn token(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [token] if !token.is_empty() => Some(token),
            _ => None,
        }
    }
}

fn is_soap(ns: Option<&str>) -> bool {
    ns == Some(SOAP11_NS) || ns == Some(SOAP12_NS)
}

/// The field the innermost open element holds, if the fake reads it.
fn field(open: &[Open]) -> Option<Field> {
    match open {
        [_, (h_ns, h), (f_ns, f)]
            if is_soap(h_ns.as_deref()) && h == "Header" && f_ns.as_deref() == Some(FUEL_NS) =>
        {
            (f == "fueloauth").then_some(Field::Token)
        }
        [_, (b_ns, b), _, (_, request), (_, object_type)]
            if is_soap(b_ns.as_deref()) && b == "Body" =>
        {
            (request == "RetrieveRequest" && object_type == "ObjectType")
                .then_some(Field::ObjectType)
        }
        _ => None,
    }
}

fn push(text: &mut Option<String>, more: &str) {
    if let Some(text) = text {
        text.push_str(more);
    }
}

fn retrieve_response(
    envelope: &Envelope,
    issued: &Issued,
    body: &[u8],
    headers: &HeaderMap,
) -> Reply {
    let object_type = escape(envelope.object_type.as_deref().unwrap_or("APIObject"));
    let mid = escape(&issued.account_id);
    let results: String = (1..=2)
        .map(|n| {
            format!(
                "<Results xsi:type=\"{object_type}\"><Client><ID>{mid}</ID></Client><PartnerKey xsi:nil=\"true\" /><ObjectID>fake-object-{n}</ObjectID><CustomerKey>fake-{n}</CustomerKey></Results>"
            )
        })
        .collect();
    let action = headers.get("soapaction").map(lossy).unwrap_or_default();
    let received = [
        ("TokenNumber", issued.number.to_string()),
        ("AccountId", issued.account_id.clone()),
        ("Scope", issued.scope.clone()),
        ("Operation", envelope.operation.clone().unwrap_or_default()),
        (
            "ObjectType",
            envelope.object_type.clone().unwrap_or_default(),
        ),
        ("SoapAction", action),
        ("BodyLength", body.len().to_string()),
        ("BodySha256", hex(&Sha256::digest(body))),
    ];
    let received: String = received
        .iter()
        .map(|(name, value)| format!("<fake:{name}>{}</fake:{name}>", escape(value)))
        .collect();
    let request_id = hex(&fastrand::u128(..).to_be_bytes());
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{SOAP11_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Header><fake:Received xmlns:fake=\"{FAKE_NS}\">{received}</fake:Received></soap:Header><soap:Body><RetrieveResponseMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><OverallStatus>OK</OverallStatus><RequestID>{request_id}</RequestID>{results}</RetrieveResponseMsg></soap:Body></soap:Envelope>"
    );
    text_response(StatusCode::OK, "text/xml; charset=utf-8", xml)
}

impl State {
    /// The faultstring for a refused token (`None`: no token at all).
    fn soap_refusal(&self, refusal: Option<InvalidToken>) -> String {
        let wording = lock(&self.soap_refusal_wording);
        let (expired, unknown) = wording
            .as_ref()
            .map_or(("Token Expired", "Login failed"), |(e, u)| {
                (e.as_str(), u.as_str())
            });
        match refusal {
            Some(InvalidToken::Expired) => expired.to_owned(),
            Some(InvalidToken::Unknown) | None => unknown.to_owned(),
        }
    }
}

/// SFMC's Security fault for a token it does not accept.
fn security_fault(faultstring: &str) -> Reply {
    fault("q0:Security", faultstring)
}

/// A SOAP 1.1 fault with HTTP 500, as SFMC (ASMX) sends every fault.
fn fault(faultcode: &str, faultstring: &str) -> Reply {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{SOAP11_NS}\"><soap:Body><soap:Fault><faultcode xmlns:q0=\"{SOAP11_NS}\">{faultcode}</faultcode><faultstring>{}</faultstring></soap:Fault></soap:Body></soap:Envelope>",
        escape(faultstring)
    );
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    text_response(status, "text/xml; charset=utf-8", xml)
}

/// The text of the first `<name>…</name>` in one of the fake's answers (its
/// answers use no attributes on these elements), e.g. `faultstring`,
/// `OverallStatus` or `fake:TokenNumber`; entities are left as they are.
pub fn reply_field(xml: &str, name: &str) -> Option<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    xml.get(start..start + len).map(str::to_owned)
}
