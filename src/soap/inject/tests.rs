use super::*;

const TOKEN: &str = "REAL-TOKEN";

/// Rewrites a whole envelope and checks it is ready.
fn rewrite(envelope: &str) -> String {
    match scan(envelope.as_bytes(), true) {
        Ok(Scan::Ready(plan)) => {
            let mut out = plan.apply(envelope.as_bytes(), TOKEN);
            out.extend_from_slice(&envelope.as_bytes()[plan.upto..]);
            String::from_utf8(out).expect("utf-8")
        }
        other => panic!("expected Ready, got {other:?} for {envelope}"),
    }
}

const FUEL: &str = "<fueloauth xmlns=\"http://exacttarget.com\">REAL-TOKEN</fueloauth>";

#[test]
fn existing_token_is_replaced_whatever_the_prefix() {
    let cases = [
        (
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><fueloauth xmlns="http://exacttarget.com">old</fueloauth></s:Header><s:Body><x/></s:Body></s:Envelope>"#,
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><fueloauth xmlns="http://exacttarget.com">REAL-TOKEN</fueloauth></s:Header><s:Body><x/></s:Body></s:Envelope>"#,
        ),
        (
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:etns="http://exacttarget.com"><soap:Header><etns:fueloauth>placeholder</etns:fueloauth></soap:Header><soap:Body/></soap:Envelope>"#,
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:etns="http://exacttarget.com"><soap:Header><etns:fueloauth>REAL-TOKEN</etns:fueloauth></soap:Header><soap:Body/></soap:Envelope>"#,
        ),
        (
            r#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header><h:fueloauth xmlns:h="http://exacttarget.com"/></Header><Body/></Envelope>"#,
            &format!(
                r#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header>{FUEL}</Header><Body/></Envelope>"#
            ),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(rewrite(input), expected);
    }
}

#[test]
fn same_name_in_another_namespace_is_not_the_token() {
    let input = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><fueloauth xmlns="urn:other">keep</fueloauth></s:Header><s:Body/></s:Envelope>"#;
    let expected = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{FUEL}<fueloauth xmlns="urn:other">keep</fueloauth></s:Header><s:Body/></s:Envelope>"#
    );
    assert_eq!(rewrite(input), expected);
}

#[test]
fn missing_or_empty_header_is_created() {
    let no_header = "<?xml version=\"1.0\"?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\n  <soapenv:Body><RetrieveRequestMsg/></soapenv:Body>\n</soapenv:Envelope>";
    assert_eq!(
        rewrite(no_header),
        format!(
            "<?xml version=\"1.0\"?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Header>{FUEL}</soapenv:Header>\n  <soapenv:Body><RetrieveRequestMsg/></soapenv:Body>\n</soapenv:Envelope>"
        )
    );
    let empty = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/><s:Body/></s:Envelope>"#;
    assert_eq!(
        rewrite(empty),
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{FUEL}</s:Header><s:Body/></s:Envelope>"#
        )
    );
}

#[test]
fn header_after_body_works_and_everything_else_is_kept() {
    let input = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><!-- c --><![CDATA[<x>]]></s:Body>\n<s:Header><a:Action xmlns:a=\"urn:a\">Retrieve</a:Action><fueloauth xmlns=\"http://exacttarget.com\">x</fueloauth></s:Header></s:Envelope>";
    assert_eq!(
        rewrite(input),
        input.replace(">x</fueloauth>", ">REAL-TOKEN</fueloauth>")
    );
}

#[test]
fn ws_security_credentials_are_removed() {
    let input = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken><wsse:Username>u</wsse:Username><wsse:Password>p</wsse:Password></wsse:UsernameToken></wsse:Security></s:Header><s:Body/></s:Envelope>"#;
    let out = rewrite(input);
    assert!(
        !out.contains("UsernameToken") && !out.contains(">p<"),
        "{out}"
    );
    assert!(out.contains(FUEL), "{out}");
}

#[test]
fn header_first_is_ready_before_the_body_arrives() {
    let head = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><fueloauth xmlns="http://exacttarget.com">x</fueloauth></s:Header><s:Body><Create"#;
    match scan(head.as_bytes(), false) {
        Ok(Scan::Ready(plan)) => assert_eq!(plan.upto, head.find("<s:Body>").expect("body")),
        other => panic!("{other:?}"),
    }
    // Without a Header yet, the proxy must wait: it may come after the Body.
    let no_header_yet =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Create>"#;
    assert_eq!(scan(no_header_yet.as_bytes(), false), Ok(Scan::NeedMore));
    assert_eq!(scan(b"<s:Envel", false), Ok(Scan::NeedMore));
}

#[test]
fn malformed_and_non_soap_bodies_are_errors() {
    assert!(matches!(
        scan(b"{\"json\": true}", true),
        Err(EnvelopeError::NotSoap(_) | EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        scan(b"<root/>", true),
        Err(EnvelopeError::NotSoap(_))
    ));
    assert!(matches!(
        scan(b"<Envelope><Body/></Envelope>", true),
        Err(EnvelopeError::NotSoap(_))
    ));
    let mismatched = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header></s:Body></s:Envelope>"#;
    assert!(matches!(
        scan(mismatched.as_bytes(), true),
        Err(EnvelopeError::Malformed(_))
    ));
    let truncated = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>"#;
    assert!(matches!(
        scan(truncated.as_bytes(), true),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(scan(b"", true), Err(EnvelopeError::NotSoap(_))));
}
