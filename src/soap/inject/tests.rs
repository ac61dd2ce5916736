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

const BOM: &[u8] = b"\xEF\xBB\xBF";
const WSSE: &str = "<wsse:Security xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\"><wsse:UsernameToken><wsse:Username>u</wsse:Username><wsse:Password>p</wsse:Password></wsse:UsernameToken></wsse:Security>";

/// Scans and rewrites whole bytes (any encoding), or gives the scan's refusal.
fn rewrite_bytes(input: &[u8]) -> Result<Vec<u8>, String> {
    match scan(input, true) {
        Ok(Scan::Ready(plan)) => {
            let mut out = plan.apply(input, TOKEN);
            out.extend_from_slice(&input[plan.upto..]);
            Ok(out)
        }
        Ok(Scan::NeedMore) => Err("NeedMore on a complete body".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// .NET tools often start UTF-8 with a byte order mark: every edit lands
/// where it does without one, and the mark stays.
#[test]
fn a_utf8_bom_moves_no_edit_and_stays() {
    let header = format!(
        "<s:Header>{WSSE}<h:fueloauth xmlns:h=\"http://exacttarget.com\">old</h:fueloauth></s:Header>"
    );
    let shapes = [
        format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">{header}<s:Body><x/></s:Body></s:Envelope>"),
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><x/></s:Body></s:Envelope>".to_owned(),
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Header/><s:Body/></s:Envelope>".to_owned(),
        format!("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body/><s:Header>{FUEL}</s:Header></s:Envelope>").replace("REAL-TOKEN", "x"),
    ];
    for plain in shapes {
        let expected = [BOM, rewrite(&plain).as_bytes()].concat();
        let with_bom = [BOM, plain.as_bytes()].concat();
        assert_eq!(
            rewrite_bytes(&with_bom).map(|o| String::from_utf8_lossy(&o).into_owned()),
            Ok(String::from_utf8_lossy(&expected).into_owned()),
            "{plain}"
        );
    }
}

/// A local token in `fueloauth` says which tenant a call is for: it must be
/// read from the right bytes with a BOM too.
#[test]
fn the_client_token_is_read_from_the_right_bytes_after_a_bom() {
    let envelope = [
        BOM,
        b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Header><fueloauth xmlns=\"http://exacttarget.com\">sfmcproxy_abc</fueloauth></s:Header><s:Body/></s:Envelope>",
    ]
    .concat();
    let Ok(Scan::Ready(plan)) = scan(&envelope, true) else {
        panic!("ready");
    };
    assert_eq!(plan.client_token(&envelope), Some(&b"sfmcproxy_abc"[..]));
}

/// Two marks would make the parser skip the second one too.
#[test]
fn a_second_bom_is_refused() {
    let envelope = [
        BOM,
        BOM,
        b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body/></s:Envelope>",
    ]
    .concat();
    assert!(rewrite_bytes(&envelope).is_err());
}

/// An envelope whose bytes are not ASCII for its markup cannot be edited
/// byte for byte: it is refused, saying why, never edited in the wrong place.
#[test]
fn envelopes_in_encodings_that_are_not_ascii_compatible_are_refused_saying_why() {
    let plain = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Header><fueloauth xmlns=\"http://exacttarget.com\">old</fueloauth></s:Header><s:Body/></s:Envelope>";
    let utf16le: Vec<u8> = plain.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf16be: Vec<u8> = plain.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let utf32le: Vec<u8> = plain
        .chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect();
    let utf32be: Vec<u8> = plain
        .chars()
        .flat_map(|c| (c as u32).to_be_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "UTF-16LE with BOM",
            [&b"\xFF\xFE"[..], &utf16le].concat(),
            "UTF-16",
        ),
        (
            "UTF-16BE with BOM",
            [&b"\xFE\xFF"[..], &utf16be].concat(),
            "UTF-16",
        ),
        (
            "UTF-32LE with BOM",
            [&b"\xFF\xFE\0\0"[..], &utf32le].concat(),
            "UTF-32",
        ),
        (
            "UTF-32BE with BOM",
            [&b"\0\0\xFE\xFF"[..], &utf32be].concat(),
            "UTF-32",
        ),
        ("UTF-16LE without BOM", utf16le.clone(), "UTF-16"),
        ("UTF-16BE without BOM", utf16be, "UTF-16"),
        ("UTF-32LE without BOM", utf32le, "UTF-32"),
        ("UTF-32BE without BOM", utf32be, "UTF-32"),
        ("EBCDIC", b"\x4C\x6F\xA7\x94\x93".to_vec(), "EBCDIC"),
        (
            "a NUL byte",
            plain.replace("old", "o\0ld").into_bytes(),
            "NUL",
        ),
    ];
    for (case, bytes, says) in cases {
        let refusal = rewrite_bytes(&bytes).expect_err(case);
        assert!(refusal.contains(says), "{case}: {refusal}");
    }
    for declared in [
        "UTF-16",
        "utf-16le",
        "UTF-32BE",
        "ucs-2",
        "ISO-10646-UCS-4",
        "ebcdic-cp-us",
        "cp037",
        "IBM500",
        "utf-7",
        "x-unknown",
    ] {
        let bytes = format!("<?xml version=\"1.0\" encoding=\"{declared}\"?>{plain}");
        let refusal = rewrite_bytes(bytes.as_bytes()).expect_err(declared);
        assert!(
            refusal.contains(declared) && refusal.contains("encoding"),
            "{declared}: {refusal}"
        );
        // The declaration after a UTF-8 BOM is refused just the same.
        assert!(
            rewrite_bytes(&[BOM, bytes.as_bytes()].concat()).is_err(),
            "{declared}"
        );
    }
}

/// An envelope with the given fueloauth text.
type Render<'a> = dyn Fn(&[u8]) -> Vec<u8> + 'a;

/// In UTF-8 and the single-byte ASCII-compatible encodings every byte of
/// markup is that ASCII character: such envelopes are edited exactly, with
/// non-ASCII bytes (`é` in UTF-8, Latin-1) in the Body, in an attribute and
/// in a comment, which the scan reads when the Body comes first.
#[test]
fn ascii_compatible_encodings_are_edited_exactly() {
    let utf8 = "\u{e9}".as_bytes();
    let cases: [(&str, &[u8]); 8] = [
        ("utf-8", utf8),
        ("UTF8", utf8),
        ("us-ascii", b"&#233;"),
        ("ISO-8859-1", b"\xE9"),
        ("iso-8859-15", b"\xE9"),
        ("latin1", b"\xE9"),
        ("windows-1252", b"\xE9"),
        ("Windows-1250", b"\xE9"),
    ];
    for (declared, e_acute) in cases {
        let decl = format!("<?xml version=\"1.0\" encoding=\"{declared}\"?>");
        let envelope = b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">";
        let body = [
            &b"<s:Body><Name a=\""[..],
            e_acute,
            b"\">Zo",
            e_acute,
            b"</Name><!-- ",
            e_acute,
            b" --></s:Body>",
        ]
        .concat();
        let open = b"<s:Header><fueloauth xmlns=\"http://exacttarget.com\">";
        let close = b"</fueloauth></s:Header>";
        let end = b"</s:Envelope>";
        let header_first =
            |token: &[u8]| [decl.as_bytes(), envelope, open, token, close, &body, end].concat();
        let body_first =
            |token: &[u8]| [decl.as_bytes(), envelope, &body, open, token, close, end].concat();
        let shapes: [&Render; 2] = [&header_first, &body_first];
        for shape in shapes {
            assert_eq!(
                rewrite_bytes(&shape(b"old")),
                Ok(shape(TOKEN.as_bytes())),
                "{declared}"
            );
        }
    }
}

/// A Latin-1 Envelope prefix is kept as its bytes came in the Header the
/// proxy inserts.
#[test]
fn an_inserted_header_keeps_a_latin1_prefix_as_it_came() {
    let input = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><\xE9:Envelope xmlns:\xE9=\"http://schemas.xmlsoap.org/soap/envelope/\"><\xE9:Body/></\xE9:Envelope>";
    let output = rewrite_bytes(input).expect("edited");
    let header = [&b"<\xE9:Header>"[..], FUEL.as_bytes(), b"</\xE9:Header>"].concat();
    let at = input.iter().position(|&b| b == b'>').expect("decl") + 1;
    let at = at
        + input[at..]
            .iter()
            .position(|&b| b == b'>')
            .expect("envelope")
        + 1;
    assert_eq!(output, [&input[..at], &header, &input[at..]].concat());
}
