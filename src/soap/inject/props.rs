//! Properties of the injector over generated envelopes and arbitrary bytes,
//! with and without a UTF-8 byte order mark: it never panics, either refuses
//! or changes no byte outside the planned edits (which lie where the markup
//! says: [`verify::checked_apply`]), never lets the client's placeholder
//! through, and decides the same on any prefix of a streamed body as on the whole.

use proptest::prelude::*;

use super::verify::checked_apply;
use super::*;

const BOM: &[u8] = b"\xEF\xBB\xBF";

const TOKEN: &str = "REAL-TOKEN-42";

/// How the client wrote its `fueloauth`, if at all.
#[derive(Debug, Clone)]
enum Fuel {
    Absent,
    DefaultNs,
    PrefixOnEnvelope,
    PrefixLocal,
    SelfClosing,
}

#[derive(Debug, Clone)]
struct Shape {
    env_prefix: Option<String>,
    soap12: bool,
    fuel: Fuel,
    header: Option<bool>, // Some(true): before Body, Some(false): after Body, None: no Header
    placeholder: String,
    body_text: String,
    space: String,
    comment: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop::option::of("[a-zA-Z][a-zA-Z0-9]{0,6}"),
        any::<bool>(),
        prop_oneof![
            Just(Fuel::Absent),
            Just(Fuel::DefaultNs),
            Just(Fuel::PrefixOnEnvelope),
            Just(Fuel::PrefixLocal),
            Just(Fuel::SelfClosing)
        ],
        prop::option::of(any::<bool>()),
        "[A-Za-z0-9+/=]{0,40}",
        "[A-Za-z0-9 ,.]{0,200}",
        "[ \t\r\n]{0,3}",
        any::<bool>(),
    )
        .prop_map(
            |(env_prefix, soap12, fuel, header, placeholder, body_text, space, comment)| Shape {
                env_prefix: env_prefix.filter(|p| !p.to_ascii_lowercase().starts_with("xml")),
                soap12,
                fuel,
                header,
                placeholder,
                body_text,
                space,
                comment,
            },
        )
}

/// The envelope with `token` as the fueloauth text; `inject` adds the
/// proxy's own element (or Header) where the proxy must insert one.
fn render(s: &Shape, token: &str, inject: bool) -> String {
    let ns = if s.soap12 { SOAP12_NS } else { SOAP11_NS };
    let q = |local: &str| match &s.env_prefix {
        Some(p) => format!("{p}:{local}"),
        None => local.to_owned(),
    };
    let xmlns = match &s.env_prefix {
        Some(p) => format!("xmlns:{p}=\"{ns}\""),
        None => format!("xmlns=\"{ns}\""),
    };
    let extra_ns = matches!(s.fuel, Fuel::PrefixOnEnvelope)
        .then_some(" xmlns:etns=\"http://exacttarget.com\"")
        .unwrap_or("");
    let ours = format!("<fueloauth xmlns=\"{EXACTTARGET_NS}\">{token}</fueloauth>");
    let fuel = match s.fuel {
        Fuel::Absent => String::new(),
        Fuel::DefaultNs => {
            format!("<fueloauth xmlns=\"http://exacttarget.com\">{token}</fueloauth>")
        }
        Fuel::PrefixOnEnvelope => format!("<etns:fueloauth>{token}</etns:fueloauth>"),
        Fuel::PrefixLocal => {
            format!("<h:fueloauth xmlns:h=\"http://exacttarget.com\">{token}</h:fueloauth>")
        }
        Fuel::SelfClosing => {
            if inject {
                ours.clone()
            } else {
                "<h:fueloauth xmlns:h=\"http://exacttarget.com\"/>".to_owned()
            }
        }
    };
    let comment = if s.comment {
        "<!-- <fueloauth>not me</fueloauth> -->"
    } else {
        ""
    };
    // A missing fueloauth is inserted as the Header's first child.
    let inserted = if inject && matches!(s.fuel, Fuel::Absent) {
        ours.as_str()
    } else {
        ""
    };
    let header = format!(
        "<{h}>{inserted}{comment}{fuel}<a:Action xmlns:a=\"urn:a\">Retrieve</a:Action></{h}>",
        h = q("Header")
    );
    let body = format!(
        "<{b}><Retrieve xmlns=\"urn:x\"><![CDATA[<x>]]>{}</Retrieve></{b}>",
        s.body_text,
        b = q("Body")
    );
    let (before, after) = match s.header {
        Some(true) => (header, String::new()),
        Some(false) => (String::new(), header),
        None if inject => (format!("<{h}>{ours}</{h}>", h = q("Header")), String::new()),
        None => (String::new(), String::new()),
    };
    format!(
        "<?xml version=\"1.0\"?>{sp}<{e} {xmlns}{extra_ns}>{before}{sp}{body}{sp}{after}</{e}>{sp}",
        e = q("Envelope"),
        sp = s.space
    )
}

fn rewrite_all(input: &[u8]) -> Option<Vec<u8>> {
    match scan(input, true) {
        Ok(Scan::Ready(plan)) => Some(
            checked_apply(input, &plan, TOKEN)
                .unwrap_or_else(|why| panic!("{why}: {}", String::from_utf8_lossy(input))),
        ),
        _ => None,
    }
}

/// The promise on any input: the whole and every prefix are refused, wait,
/// or are edited only at their plan's places; a prefix that is ready decides
/// as the whole does, and one that refuses means the whole is refused too.
fn edits_only_in_place(input: &[u8]) -> Result<(), TestCaseError> {
    let whole = scan(input, true);
    if let Ok(Scan::Ready(plan)) = &whole {
        checked_apply(input, plan, TOKEN).map_err(TestCaseError::fail)?;
    }
    for at in 0..=input.len() {
        match scan(&input[..at], false) {
            Ok(Scan::Ready(plan)) => {
                checked_apply(input, &plan, TOKEN).map_err(TestCaseError::fail)?;
                if let Ok(Scan::Ready(whole)) = &whole {
                    prop_assert_eq!(&plan, whole);
                }
            }
            Ok(Scan::NeedMore) => {}
            Err(e) => prop_assert!(
                whole.is_err(),
                "prefix {} refused ({}), the whole is not",
                at,
                e
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn only_the_token_changes(s in shape()) {
        let input = render(&s, &s.placeholder, false);
        let expected = render(&s, TOKEN, true);
        let output = rewrite_all(input.as_bytes());
        prop_assert_eq!(output.map(|o| String::from_utf8_lossy(&o).into_owned()), Some(expected));
    }

    #[test]
    fn a_streamed_prefix_decides_like_the_whole(s in shape(), cut in 0.0f64..1.0) {
        let input = render(&s, &s.placeholder, false);
        let Ok(Scan::Ready(whole)) = scan(input.as_bytes(), true) else {
            return Err(TestCaseError::fail("the whole envelope is ready"));
        };
        let at = (input.len() as f64 * cut) as usize;
        match scan(&input.as_bytes()[..at], false) {
            Ok(Scan::NeedMore) => prop_assert!(at < whole.upto, "all {} decision bytes were there", whole.upto),
            Ok(Scan::Ready(plan)) => prop_assert_eq!(plan, whole),
            Err(e) => return Err(TestCaseError::fail(format!("prefix {at}: {e}"))),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), complete in any::<bool>()) {
        if let Ok(Scan::Ready(plan)) = scan(&bytes, complete) {
            let _ = plan.apply(&bytes, TOKEN);
        }
    }

    #[test]
    fn mutated_envelopes_never_panic_and_every_header_token_is_ours(s in shape(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = render(&s, "PLACEHOLDER", false).into_bytes();
        for (index, byte) in flips {
            let i = index.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(out) = rewrite_all(&bytes) {
            // Scanning the result again finds fueloauth elements holding our token only.
            let Ok(Scan::Ready(plan)) = scan(&out, true) else {
                return Err(TestCaseError::fail("the rewritten envelope scans"));
            };
            prop_assert!(!plan.edits.is_empty());
            for edit in &plan.edits {
                match edit.kind {
                    EditKind::Token => prop_assert_eq!(&out[edit.range.clone()], TOKEN.as_bytes()),
                    EditKind::Remove => {}
                    _ => return Err(TestCaseError::fail(format!("no token in {}", String::from_utf8_lossy(&out)))),
                }
            }
        }
    }

    #[test]
    fn a_bom_moves_no_edit_and_is_kept(s in shape()) {
        let input = [BOM, render(&s, &s.placeholder, false).as_bytes()].concat();
        let expected = [BOM, render(&s, TOKEN, true).as_bytes()].concat();
        let output = rewrite_all(&input);
        prop_assert_eq!(
            output.map(|o| String::from_utf8_lossy(&o).into_owned()),
            Some(String::from_utf8_lossy(&expected).into_owned())
        );
    }

    #[test]
    fn a_streamed_prefix_with_a_bom_decides_like_the_whole(s in shape()) {
        edits_only_in_place(&[BOM, render(&s, &s.placeholder, false).as_bytes()].concat())?;
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_edited_only_in_place(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        bom in any::<bool>(),
    ) {
        let input = if bom { [BOM, &bytes[..]].concat() } else { bytes };
        edits_only_in_place(&input)?;
    }

    #[test]
    fn mutated_envelopes_are_refused_or_edited_only_in_place(
        s in shape(),
        bom in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = render(&s, "PLACEHOLDER", false).into_bytes();
        for (index, byte) in flips {
            let i = index.index(bytes.len());
            bytes[i] = byte;
        }
        let input = if bom { [BOM, &bytes[..]].concat() } else { bytes };
        if let Ok(Scan::Ready(plan)) = scan(&input, true) {
            checked_apply(&input, &plan, TOKEN).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn declared_encodings_are_edited_exactly_or_refused(
        s in shape(),
        bom in any::<bool>(),
        declared in prop::sample::select(&["utf-8", "ISO-8859-1", "windows-1252", "us-ascii", "UTF-16", "utf-32le", "ucs-2", "cp037", "EBCDIC-CP-US", "shift_jis"][..]),
    ) {
        let decl = format!("<?xml version=\"1.0\" encoding=\"{declared}\"?>");
        let input = render(&s, &s.placeholder, false).replacen("<?xml version=\"1.0\"?>", &decl, 1);
        let expected = render(&s, TOKEN, true).replacen("<?xml version=\"1.0\"?>", &decl, 1);
        let input = if bom { [BOM, input.as_bytes()].concat() } else { input.into_bytes() };
        let edited = encoding::charset(declared).is_some();
        match scan(&input, true) {
            Ok(Scan::Ready(plan)) if edited => {
                let out = checked_apply(&input, &plan, TOKEN).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&out[if bom { 3 } else { 0 }..], expected.as_bytes());
            }
            Err(EnvelopeError::Encoding(why)) if !edited => prop_assert!(why.contains(declared)),
            other => return Err(TestCaseError::fail(format!("{declared}: {other:?}"))),
        }
    }
}
