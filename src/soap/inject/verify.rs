//! The injector's promise, checked from the outside: a plan's edits lie
//! where the markup says they must, and applying it changes no byte outside
//! them. Used by the property tests and the `soap_inject` fuzz target, on
//! any input whatever, so it judges by the envelope's bytes alone, not by
//! what the scanner believed.

use super::{EXACTTARGET_NS, EditKind, Plan};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Applies `plan` to `input` with `token` and returns the whole rewritten
/// body, or what breaks the promise.
pub fn checked_apply(input: &[u8], plan: &Plan, token: &str) -> Result<Vec<u8>, String> {
    if plan.upto > input.len() || plan.upto == 0 || input.get(plan.upto - 1) != Some(&b'>') {
        return Err(format!("the region ends at {} in no tag's `>`", plan.upto));
    }
    let mut at = 0;
    for edit in &plan.edits {
        let range = edit.range.clone();
        if range.start < at || range.end > plan.upto || range.start > range.end {
            return Err(format!(
                "edit {range:?} overlaps, is out of order or past the region"
            ));
        }
        if input.starts_with(UTF8_BOM) && range.start < UTF8_BOM.len() {
            return Err(format!("edit {range:?} cuts into the byte order mark"));
        }
        placed(input, edit.range.clone(), &edit.kind).map_err(|why| format!("{range:?} {why}"))?;
        at = range.end;
    }
    let head = input
        .get(..plan.upto)
        .ok_or("the region is past the input")?;
    let mut out = plan.apply(head, token);
    // The bytes between the edits are the input's, each edit's bytes are what it says.
    let token = quick_xml::escape::escape(token);
    let fueloauth = format!("<fueloauth xmlns=\"{EXACTTARGET_NS}\">{token}</fueloauth>");
    let (mut from, mut written) = (0, 0);
    for edit in &plan.edits {
        let kept = &input[from..edit.range.start];
        let inserted = match &edit.kind {
            EditKind::Token => token.as_bytes().to_vec(),
            EditKind::Fueloauth => fueloauth.as_bytes().to_vec(),
            EditKind::Header(name) => [
                b"<",
                &name[..],
                b">",
                fueloauth.as_bytes(),
                b"</",
                name,
                b">",
            ]
            .concat(),
            EditKind::Remove => Vec::new(),
        };
        let expected = [kept, &inserted[..]].concat();
        if out.get(written..written + expected.len()) != Some(&expected[..]) {
            return Err(format!("bytes around {:?} changed", edit.range));
        }
        written += expected.len();
        from = edit.range.end;
    }
    if out.get(written..) != input.get(from..plan.upto) {
        return Err("bytes after the last edit changed".into());
    }
    out.extend_from_slice(&input[plan.upto..]);
    Ok(out)
}

/// Whether an edit of `kind` at `range` sits where such an edit must.
fn placed(
    input: &[u8],
    range: std::ops::Range<usize>,
    kind: &EditKind,
) -> Result<(), &'static str> {
    let bytes = &input[range.clone()];
    let after_a_tag = range.start > 0 && input[range.start - 1] == b'>';
    let ok = match kind {
        // The text of a `fueloauth`: after a start tag, before `</…fueloauth>`.
        EditKind::Token => {
            after_a_tag && end_tag_local_name(&input[range.end..]) == Some(&b"fueloauth"[..])
        }
        // Inserted right after a start tag, or a whole empty element replaced.
        EditKind::Fueloauth if bytes.is_empty() => after_a_tag,
        EditKind::Fueloauth => empty_element(bytes, b"fueloauth"),
        EditKind::Header(_) if bytes.is_empty() => after_a_tag,
        EditKind::Header(_) => empty_element(bytes, b"Header"),
        // A whole Security element, start tag to end tag.
        EditKind::Remove => {
            empty_element(bytes, b"Security")
                || (start_tag_local_name(bytes) == Some(&b"Security"[..])
                    && bytes.ends_with(b">")
                    && bytes
                        .iter()
                        .rposition(|&b| b == b'<')
                        .and_then(|lt| end_tag_local_name(&bytes[lt..]))
                        == Some(&b"Security"[..]))
        }
    };
    ok.then_some(())
        .ok_or("is not where its kind of edit belongs")
}

fn empty_element(bytes: &[u8], local: &[u8]) -> bool {
    bytes.ends_with(b"/>") && start_tag_local_name(bytes) == Some(local)
}

/// `<prefix:local …` → `local`.
fn start_tag_local_name(bytes: &[u8]) -> Option<&[u8]> {
    local_name(bytes.strip_prefix(b"<")?)
}

/// `</prefix:local>` → `local`.
fn end_tag_local_name(bytes: &[u8]) -> Option<&[u8]> {
    local_name(bytes.strip_prefix(b"</")?)
}

fn local_name(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes
        .iter()
        .position(|&b| b == b'>' || b == b'/' || b.is_ascii_whitespace())?;
    let name = &bytes[..end];
    Some(match name.iter().rposition(|&b| b == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    })
}
