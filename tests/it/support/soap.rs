//! SOAP helpers shared by the SOAP test files: envelopes, requests, and
//! checks of what reached the fake SFMC and of the faults the proxy makes.

use bytes::Bytes;

use super::{Reply, Setup, SoapRequest, reply_field};

pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const FUEL_OPEN: &str = "<fueloauth xmlns=\"http://exacttarget.com\">";
pub const RETRIEVE: &str = "<RetrieveRequestMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><RetrieveRequest><ObjectType>Subscriber</ObjectType><Properties>EmailAddress</Properties></RetrieveRequest></RetrieveRequestMsg>";
pub const XML: [(&str, &str); 2] = [
    ("content-type", "text/xml; charset=utf-8"),
    ("soapaction", "Retrieve"),
];

/// A SOAP 1.1 Retrieve envelope with `header` (the whole Header element, or "").
pub fn envelope(header: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<s:Envelope xmlns:s=\"{SOAP11}\">{header}<s:Body>{RETRIEVE}</s:Body></s:Envelope>"
    )
}

pub fn fuel(token: &str) -> String {
    format!("{FUEL_OPEN}{token}</fueloauth>")
}

pub async fn soap(s: &Setup, path: &str, body: impl Into<Bytes>) -> Reply {
    s.client.post(&s.proxy, path, &XML, body).await
}

pub fn field(reply: &Reply, name: &str) -> String {
    reply_field(&reply.text(), name).unwrap_or_else(|| panic!("no <{name}> in {}", reply.text()))
}

pub fn received(s: &Setup) -> SoapRequest {
    s.fake
        .last_soap_request()
        .expect("a SOAP request reached SFMC")
}

/// SFMC received `before`, something, then `after`, byte for byte: returns the something.
pub fn between(received: &[u8], before: &str, after: &str) -> String {
    let text = String::from_utf8_lossy(received);
    let middle = text
        .strip_prefix(before)
        .and_then(|rest| rest.strip_suffix(after))
        .unwrap_or_else(|| panic!("not `{before}`…`{after}`:\n{text}"));
    middle.to_owned()
}

/// `token` is the fake's token number `n`, not a placeholder.
pub fn assert_issued(token: &str, n: usize) {
    let shaped = token.len() > 100
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    assert!(
        token.starts_with(&format!("fake-{n}-")) && shaped,
        "{token}"
    );
}

/// A successful answer from the fake for the fake's token number `n`.
pub fn assert_answered(reply: &Reply, n: usize) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.proxy_error(), None);
    assert_eq!(field(reply, "OverallStatus"), "OK");
    assert_eq!(field(reply, "fake:TokenNumber"), n.to_string());
}

/// A SOAP 1.1 fault made by the proxy.
pub fn assert_proxy_fault(reply: &Reply, status: u16, code: &str, faultcode: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some(code));
    assert_eq!(reply.headers["content-type"], "text/xml; charset=utf-8");
    assert!(
        reply
            .text()
            .contains(&format!("<soap:Envelope xmlns:soap=\"{SOAP11}\">"))
    );
    assert_eq!(field(reply, "faultcode"), faultcode);
}
