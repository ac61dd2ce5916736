//! SOAP through the proxy, end to end: the token lands in the envelope whatever
//! its shape and every other byte reaches SFMC as sent; routing, headers and
//! streaming as for REST. Faults (SFMC's and the proxy's) are in `soap_faults.rs`.

use std::time::Duration;

use bytes::Bytes;

use crate::support::soap::*;
use crate::support::*;

/// An envelope shape: the case, what is sent before the token's place, the
/// placeholder there, what is sent after it, and what SFMC must receive around
/// the token in its place (empty for a replaced token, the inserted elements' tags else).
type Shape = (
    &'static str,
    String,
    &'static str,
    String,
    (&'static str, &'static str),
);

#[tokio::test]
async fn token_goes_into_the_header_whatever_its_shape_and_nothing_else_changes() {
    let s = setup().await;
    let body = format!("<s:Body>{RETRIEVE}</s:Body></s:Envelope>");
    let s11 = format!("<?xml version=\"1.0\"?>\n<s:Envelope xmlns:s=\"{SOAP11}\">");
    let fuelsdk_python = format!(
        "<soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:etns=\"http://exacttarget.com\"><soap:Header><etns:fueloauth>"
    );
    let node_sdk = format!(
        "<soap:Envelope xmlns:soap=\"{SOAP11}\"><soap:Body>{RETRIEVE}</soap:Body><soap:Header>{FUEL_OPEN}"
    );
    let soap12 = "<?xml version=\"1.0\" encoding=\"utf-8\"?><!-- é --><Envelope xmlns=\"http://www.w3.org/2003/05/soap-envelope\">";
    let soap12_body = "\n<Body><RetrieveRequestMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><RetrieveRequest><ObjectType>Subscriber</ObjectType><Filter><![CDATA[<a & b>]]></Filter><Name>Zoë &amp; 日本</Name></RetrieveRequest></RetrieveRequestMsg></Body></Envelope>\n";
    let inserted = (FUEL_OPEN, "</fueloauth>");
    let cases: [Shape; 9] = [
        (
            "no Header",
            s11.clone(),
            "",
            format!("\n  {body}"),
            ("<s:Header>", "</s:Header>"),
        ),
        (
            "Header without a token",
            format!("{s11}\n  <s:Header>"),
            "",
            format!(
                "<!-- to --><wsa:Action xmlns:wsa=\"urn:wsa\">Retrieve</wsa:Action></s:Header>{body}"
            ),
            ("", ""),
        ),
        (
            "placeholder token",
            format!("{s11}\n  <s:Header>{FUEL_OPEN}"),
            "PLACEHOLDER",
            format!("</fueloauth></s:Header>{body}"),
            ("", ""),
        ),
        (
            "FuelSDK-Python: etns declared on the Envelope",
            fuelsdk_python,
            "*",
            format!(
                "</etns:fueloauth></soap:Header><soap:Body>{RETRIEVE}</soap:Body></soap:Envelope>"
            ),
            ("", ""),
        ),
        (
            "h: prefix declared on the element",
            format!("{s11}\n  <s:Header><h:fueloauth xmlns:h=\"http://exacttarget.com\">"),
            "old-token",
            format!("</h:fueloauth></s:Header>{body}"),
            ("", ""),
        ),
        (
            "default namespace declared on the Header",
            format!("{s11}\n  <s:Header xmlns=\"http://exacttarget.com\"><fueloauth>"),
            "<![CDATA[cdata-placeholder]]>",
            format!("</fueloauth></s:Header>{body}"),
            ("", ""),
        ),
        (
            "fueloauth of another namespace is not the token",
            format!("{s11}\n  <s:Header>"),
            "",
            format!("<fueloauth xmlns=\"urn:other\">keep</fueloauth></s:Header>{body}"),
            ("", ""),
        ),
        (
            "Header after the Body (Node sfmc-sdk)",
            node_sdk,
            "token-of-an-old-session",
            "</fueloauth></soap:Header></soap:Envelope>".to_owned(),
            ("", ""),
        ),
        (
            "SOAP 1.2 default namespace, comments, CDATA, UTF-8",
            soap12.to_owned(),
            "",
            soap12_body.to_owned(),
            ("<Header>", "</Header>"),
        ),
    ];
    for (case, before, placeholder, after, (open, close)) in cases {
        let reply = soap(&s, "/Service.asmx", format!("{before}{placeholder}{after}")).await;
        assert_answered(&reply, 1);
        let seen = received(&s);
        let middle = between(&seen.body, &before, &after);
        // An inserted token comes as a whole element, a replaced one as text.
        let token = middle
            .strip_prefix(open)
            .and_then(|m| m.strip_suffix(close));
        let token = match (placeholder, token) {
            ("", Some(fueloauth)) => fueloauth
                .strip_prefix(inserted.0)
                .and_then(|t| t.strip_suffix(inserted.1)),
            (_, token) => token,
        };
        assert_issued(token.unwrap_or_else(|| panic!("{case}: {middle}")), 1);
        assert_eq!(
            seen.headers["content-length"],
            seen.body.len().to_string().as_str(),
            "{case}"
        );
    }
    assert_eq!(s.fake.token_requests(), 1);
}

#[tokio::test]
async fn client_credentials_never_reach_sfmc() {
    let s = setup().await;
    let before = format!("<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"{SOAP11}\"><s:Header>");
    let security = "<wsse:Security xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\"><wsse:UsernameToken><wsse:Username>someone</wsse:Username><wsse:Password>pass-w0rd</wsse:Password></wsse:UsernameToken></wsse:Security>";
    let after = format!("</s:Header><s:Body>{RETRIEVE}</s:Body></s:Envelope>");
    let headers = [XML[0], XML[1], ("authorization", "Bearer client-token")];
    let sent = format!("{before}{}{security}{after}", fuel("client-token"));
    let reply = s
        .client
        .post(&s.proxy, "/Service.asmx", &headers, sent)
        .await;
    assert_answered(&reply, 1);
    let seen = received(&s);
    let middle = between(&seen.body, &before, &after);
    let token = middle
        .strip_prefix(FUEL_OPEN)
        .and_then(|m| m.strip_suffix("</fueloauth>"));
    assert_issued(token.unwrap_or(&middle), 1);
    assert!(
        seen.headers.get("authorization").is_none(),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn soapaction_and_content_type_pass_through_and_content_length_fits_the_rewrite() {
    let s = setup().await;
    let cases = [
        ("text/xml; charset=utf-8", "soapaction", "\"Retrieve\""),
        (
            "application/soap+xml; charset=utf-8; action=\"Retrieve\"",
            "x-request-id",
            "r-1",
        ),
    ];
    for (content_type, name, value) in cases {
        let sent = envelope(&format!("<s:Header>{}</s:Header>", fuel("x")));
        let headers = [("content-type", content_type), (name, value)];
        let reply = s
            .client
            .post(&s.proxy, "/Service.asmx", &headers, sent.clone())
            .await;
        assert_answered(&reply, 1);
        let seen = received(&s);
        assert_eq!(seen.headers["content-type"], content_type);
        assert_eq!(seen.headers[name], value);
        let length = seen.headers["content-length"].to_str().expect("text");
        assert_eq!(length, seen.body.len().to_string());
        assert_ne!(
            length,
            sent.len().to_string(),
            "the token is longer than `x`"
        );
    }
}

#[tokio::test]
async fn any_case_path_a_tenant_prefix_and_the_mid_selector_route_soap() {
    let s = Setup::builder()
        .tenant(|t| t.path_prefix("/acme").account_ids(&["100", "200"]))
        .start()
        .await;
    let sent = envelope("");
    for path in [
        "/service.asmx",
        "/acme/Service.asmx",
        "/acme/SERVICE.ASMX?x=%20",
    ] {
        assert_answered(&soap(&s, path, sent.clone()).await, 1);
        let expected = path.trim_start_matches("/acme");
        let expected = format!("/Service.asmx{}", &expected["/service.asmx".len()..]);
        assert_eq!(received(&s).path_and_query, expected, "{path}");
    }
    let headers = [XML[0], XML[1], ("x-sfmc-account-id", "200")];
    let reply = s
        .client
        .post(&s.proxy, "/acme/service.asmx", &headers, sent)
        .await;
    assert_answered(&reply, 2);
    assert_eq!(field(&reply, "fake:AccountId"), "200");
    assert!(received(&s).headers.get("x-sfmc-account-id").is_none());
    assert_eq!(s.fake.token_requests(), 2, "one token per business unit");
}

#[tokio::test]
async fn rest_and_soap_share_the_token_cache() {
    let s = setup().await;
    let rest = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(rest.json()["token_number"], 1);
    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
    assert_eq!(s.fake.token_requests(), 1);
}

#[tokio::test]
async fn large_envelope_streams_to_sfmc_before_the_client_finishes_sending() {
    let s = setup().await;
    let before =
        format!("<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"{SOAP11}\"><s:Header>{FUEL_OPEN}");
    let head = format!(
        "{before}placeholder</fueloauth></s:Header><s:Body><CreateRequest xmlns=\"http://exacttarget.com/wsdl/partnerAPI\">"
    );
    let row = "<Objects xsi:type=\"DataExtensionObject\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><CustomerKey>DemoDE</CustomerKey><Properties><Property><Name>Email</Name><Value>a@example.com</Value></Property></Properties></Objects>\n";
    let rest = format!(
        "{}</CreateRequest></s:Body></s:Envelope>",
        row.repeat(16 * 1024)
    );
    assert!(rest.len() > 3 << 20, "larger than soap.header_limit");
    let length = (head.len() + rest.len()).to_string();
    let (mut tx, body) = channel_body();
    let headers = [
        XML[0],
        ("soapaction", "Create"),
        ("content-length", &length),
    ];
    let req = request("POST", &s.proxy, "/Service.asmx", &headers, body);
    let client = s.client.clone();
    let pending = tokio::spawn(async move { client.fetch(req).await });
    tx.send_data(Bytes::from(head)).await.expect("send");
    // Only once SFMC has bytes does the client send the rest: a buffering proxy would hang here.
    let started = tokio::time::timeout(Duration::from_secs(30), s.fake.upload_started()).await;
    assert!(
        started.is_ok(),
        "SFMC got no bytes before the client finished sending"
    );
    for chunk in rest.as_bytes().chunks(256 * 1024) {
        tx.send_data(Bytes::copy_from_slice(chunk))
            .await
            .expect("send");
    }
    drop(tx);
    let reply = pending.await.expect("task");
    assert_answered(&reply, 1);
    assert_eq!(field(&reply, "fake:Operation"), "CreateRequest");
    let seen = received(&s);
    let after = format!(
        "</fueloauth></s:Header><s:Body><CreateRequest xmlns=\"http://exacttarget.com/wsdl/partnerAPI\">{rest}"
    );
    assert_issued(&between(&seen.body, &before, &after), 1);
    assert_eq!(
        seen.headers["content-length"],
        seen.body.len().to_string().as_str()
    );
}

/// .NET tools start UTF-8 with a byte order mark: the token lands in the
/// fueloauth, the WS-Security header goes, and every other byte — the mark
/// included — reaches SFMC as sent.
#[tokio::test]
async fn an_envelope_with_a_utf8_bom_is_edited_exactly_where_it_must() {
    let s = setup().await;
    let before = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{SOAP11}\"><s:Header>"
    );
    let security = "<wsse:Security xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\"><wsse:UsernameToken><wsse:Username>someone</wsse:Username><wsse:Password>pass-w0rd</wsse:Password></wsse:UsernameToken></wsse:Security>";
    let after = format!("</fueloauth></s:Header><s:Body>{RETRIEVE}</s:Body></s:Envelope>");
    let sent = format!("{before}{security}{FUEL_OPEN}placeholder{after}");
    assert!(sent.as_bytes().starts_with(b"\xEF\xBB\xBF"));
    let reply = soap(&s, "/Service.asmx", sent).await;
    assert_answered(&reply, 1);
    let seen = received(&s);
    let token = between(&seen.body, &format!("{before}{FUEL_OPEN}"), &after);
    assert_issued(&token, 1);
    assert_eq!(
        seen.body,
        format!("{before}{FUEL_OPEN}{token}{after}").as_bytes(),
        "byte for byte"
    );
    assert_eq!(
        seen.headers["content-length"],
        seen.body.len().to_string().as_str()
    );
}

/// A Content-Type naming a single-byte charset makes the scan read the
/// envelope as such: Latin-1 bytes before the Header are no obstacle.
#[tokio::test]
async fn a_latin1_envelope_reaches_sfmc_byte_for_byte() {
    let s = setup().await;
    let before = [
        format!("<s:Envelope xmlns:s=\"{SOAP11}\"><s:Body>").as_bytes(),
        b"<RetrieveRequestMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><Name>Zo\xEB</Name></RetrieveRequestMsg></s:Body><s:Header>",
        FUEL_OPEN.as_bytes(),
    ]
    .concat();
    let after = b"</fueloauth></s:Header></s:Envelope>";
    let headers = [("content-type", "text/xml; charset=ISO-8859-1"), XML[1]];
    let sent = [&before[..], b"old", after].concat();
    let reply = s
        .client
        .post(&s.proxy, "/Service.asmx", &headers, sent)
        .await;
    // The proxy forwarded it (the fake's own parser reads only UTF-8 and
    // answers with its Fault; what is asserted is what reached it).
    assert_eq!(reply.proxy_error(), None, "{}", reply.text());
    let seen = received(&s).body;
    let token = seen
        .strip_prefix(&before[..])
        .and_then(|rest| rest.strip_suffix(after))
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&seen)));
    assert_issued(std::str::from_utf8(token).expect("ASCII token"), 1);
}
