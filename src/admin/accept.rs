//! Which rendering of the status page a client gets: HTML when its
//! `Accept` prefers `text/html` to `application/json` (a browser's does),
//! JSON otherwise (curl's `*/*`, no `Accept` at all); `?format=` overrides.

use http::header;
use http::request::Parts;

/// HTML when the client asks for it more than for JSON: a browser's
/// `Accept` (`text/html,…,*/*;q=0.8`) does; curl's `*/*`, none at all and
/// `application/json` do not. `?format=html|json` overrides.
pub fn prefers_html(parts: &Parts) -> bool {
    let query = parts.uri.query().unwrap_or_default();
    let format = form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "format");
    if let Some((_, format)) = format {
        return format.eq_ignore_ascii_case("html");
    }
    let accept: Vec<&str> = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let accept = accept.join(",");
    quality(&accept, "text/html") > quality(&accept, "application/json")
}

/// The q-value `accept` gives `media` (exact type, then `type/*`, then
/// `*/*`), in thousandths; 0 when nothing matches.
fn quality(accept: &str, media: &str) -> u32 {
    let major = media.split('/').next().unwrap_or_default();
    let mut best: Option<(u8, u32)> = None;
    for range in accept.split(',') {
        let mut params = range.split(';');
        let name = params.next().unwrap_or_default().trim();
        let specificity = if name.eq_ignore_ascii_case(media) {
            3
        } else if name
            .strip_suffix("/*")
            .is_some_and(|m| m.eq_ignore_ascii_case(major))
        {
            2
        } else if name == "*/*" {
            1
        } else {
            continue;
        };
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u32);
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(accept: Option<&str>, query: &str) -> Parts {
        let mut builder = http::Request::builder().uri(format!("/_proxy/status{query}"));
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn a_browser_gets_html_and_programs_get_json() {
        let chromium =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(prefers_html(&parts(Some(chromium), "")));
        assert!(!prefers_html(&parts(Some("*/*"), "")), "curl");
        assert!(!prefers_html(&parts(None, "")));
        assert!(!prefers_html(&parts(Some("application/json"), "")));
        assert!(!prefers_html(&parts(
            Some("text/html;q=0.5, application/json"),
            ""
        )));
        assert!(prefers_html(&parts(Some("text/*"), "")));
        assert!(!prefers_html(&parts(Some(chromium), "?format=json")));
        assert!(prefers_html(&parts(None, "?format=html")));
    }
}
