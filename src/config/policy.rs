//! `read_only`, `allow_paths` and `deny_paths` of a tenant: what requests it
//! lets through (decided after routing by `crate::policy`), and the one path
//! normalisation that configured prefixes and request paths both go through.
//!
//! The readings are for matching only; the forwarded path stays byte for
//! byte. A server behind SFMC's load balancer may read a path two ways, so
//! the policy reads it both ways, letters lowercased in each: the widest —
//! percent-decoded once (`%2F` and `%5C` included), `/` and `\` both
//! separators, empty and `.` segments dropped, `..` taking the one before it,
//! `;params` cut from each segment (as Tomcat does), trailing dots and spaces
//! trimmed (as IIS does) — and the literal: split at its `/` only, each
//! segment decoded, `.` and `..` kept (as a router matching raw prefixes
//! does). A path is under a deny prefix if either reading is, under an allow
//! prefix only if both are. What cannot be read one way only is
//! [`Unreadable`], and refused wherever a prefix list is set.

use super::defaults::DEFAULT_READ_ONLY;
use super::raw::RawTenant;
use super::{ConfigError, invalid};

/// What a tenant lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Only reads pass: GET, HEAD, OPTIONS, and SOAP Retrieve and Describe.
    pub read_only: bool,
    /// Paths under one of these pass, whatever the method; when the list is
    /// not empty and `read_only` is off, no other path passes.
    pub allow_paths: Vec<PathPrefix>,
    /// Paths under one of these never pass.
    pub deny_paths: Vec<PathPrefix>,
}

impl Policy {
    /// Whether the policy lets everything through (the default).
    pub fn is_open(&self) -> bool {
        !self.read_only && self.allow_paths.is_empty() && self.deny_paths.is_empty()
    }

    /// Whether a decision depends on the request's path.
    pub fn has_prefixes(&self) -> bool {
        !self.allow_paths.is_empty() || !self.deny_paths.is_empty()
    }
}

/// A configured `allow_paths` / `deny_paths` entry: as written (for messages)
/// and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix {
    pub text: String,
    segments: Vec<String>,
}

/// A request path as the policy reads it: two readings, since servers on
/// the way to SFMC may read it either way (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Decoded and collapsed the widest way.
    widest: Vec<String>,
    /// Split at its literal `/` only, each segment decoded, nothing collapsed
    /// but empty segments (`.` and `..` stay).
    literal: Vec<String>,
}

impl NormalPath {
    /// The widest reading, one `/` before each segment (`/` for the root).
    pub fn display(&self) -> String {
        if self.widest.is_empty() {
            return "/".into();
        }
        self.widest.iter().map(|s| format!("/{s}")).collect()
    }
}

/// Why a path cannot be read one way only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("it percent-encodes bytes that are not UTF-8")]
    NotUtf8,
    #[error("it holds a control character (percent-encoded or not)")]
    Control,
    #[error("it is percent-encoded twice (a `%` and two hex digits remain after decoding)")]
    DoubleEncoded,
    #[error("it has a segment of three or more dots")]
    Dots,
}

/// How one reading of a path stands to a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// The path is the prefix or under it, by whole segments.
    Yes,
    /// It is if a server folds a non-ASCII letter of it into the prefix's
    /// segment at its place (as some fold `ſ` into `s`).
    Maybe,
    No,
}

impl PathPrefix {
    /// For `deny_paths`: whether `path` is, or may be, this prefix or under
    /// it in either reading. `/hub/v1` covers `/hub/v1` and `/hub/v1/x`, not
    /// `/hub/v10`; `/` covers every path.
    pub fn may_cover(&self, path: &NormalPath) -> bool {
        [&path.widest, &path.literal]
            .iter()
            .any(|reading| self.cover(reading) != Cover::No)
    }

    /// For `allow_paths`: whether `path` surely is this prefix or under it,
    /// in both readings.
    pub fn surely_covers(&self, path: &NormalPath) -> bool {
        [&path.widest, &path.literal]
            .iter()
            .all(|reading| self.cover(reading) == Cover::Yes)
    }

    fn cover(&self, reading: &[String]) -> Cover {
        if reading.len() < self.segments.len() {
            return Cover::No;
        }
        let mut cover = Cover::Yes;
        for (want, have) in self.segments.iter().zip(reading) {
            if want == have {
                continue;
            }
            if have.is_ascii() {
                return Cover::No;
            }
            cover = Cover::Maybe;
        }
        cover
    }
}

/// The path as the policy reads it (see the module's doc).
pub fn normalise_path(path: &str) -> Result<NormalPath, Unreadable> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let decoded = String::from_utf8(decoded).map_err(|_| Unreadable::NotUtf8)?;
    if decoded.chars().any(char::is_control) {
        return Err(Unreadable::Control);
    }
    if still_encoded(&decoded) {
        return Err(Unreadable::DoubleEncoded);
    }
    let mut widest: Vec<String> = Vec::new();
    for raw in decoded.split(['/', '\\']) {
        // `..;x` is `..` to a server that drops matrix parameters.
        let segment = raw.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                widest.pop();
            }
            _ if segment.bytes().all(|b| b == b'.') => return Err(Unreadable::Dots),
            _ => {
                let trimmed = segment.trim_end_matches(['.', ' ']);
                if !trimmed.is_empty() {
                    widest.push(trimmed.to_ascii_lowercase());
                }
            }
        }
    }
    let literal = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            decoded.to_ascii_lowercase()
        })
        .collect();
    Ok(NormalPath { widest, literal })
}

/// A `%` followed by two hex digits: what a second decoding would change.
fn still_encoded(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

pub(super) fn validate(name: &str, raw: &RawTenant) -> Result<Policy, ConfigError> {
    Ok(Policy {
        read_only: raw.read_only.unwrap_or(DEFAULT_READ_ONLY),
        allow_paths: prefixes(&format!("tenants.{name}.allow_paths"), &raw.allow_paths)?,
        deny_paths: prefixes(&format!("tenants.{name}.deny_paths"), &raw.deny_paths)?,
    })
}

fn prefixes(key: &str, raw: &[String]) -> Result<Vec<PathPrefix>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, text)| {
            let entry = format!("{key}[{i}]");
            let refuse = |why: String| {
                invalid(
                    &entry,
                    format!("`{text}` {why}; write a path as SFMC sees it, like \"/hub/v1/dataevents\" (a tenant's path_prefix left out)"),
                )
            };
            if !text.starts_with('/') || text.contains(['?', '#', ';']) {
                return Err(refuse(
                    "must start with '/' and hold no '?', '#' or ';'".into(),
                ));
            }
            let normal = normalise_path(text).map_err(|why| refuse(format!("cannot be read: {why}")))?;
            if normal.widest.first().is_some_and(|s| s == "_proxy") {
                return Err(refuse(
                    "is the proxy's own (/_proxy/* is never forwarded, and no policy applies to it)"
                        .into(),
                ));
            }
            Ok(PathPrefix {
                text: text.clone(),
                segments: normal.widest,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{NormalPath, PathPrefix, Unreadable, normalise_path};

    fn normal(path: &str) -> String {
        normalise_path(path).map_or_else(|e| format!("{e:?}"), |p| p.display())
    }

    fn prefix(text: &str) -> PathPrefix {
        let normal = normalise_path(text).expect("a readable prefix");
        PathPrefix {
            text: text.into(),
            segments: normal.widest,
        }
    }

    fn path(text: &str) -> NormalPath {
        normalise_path(text).expect("a readable path")
    }

    /// (as a deny prefix: may cover, as an allow prefix: surely covers)
    fn covers(prefix_text: &str, path_text: &str) -> (bool, bool) {
        let (prefix, path) = (prefix(prefix_text), path(path_text));
        (prefix.may_cover(&path), prefix.surely_covers(&path))
    }

    #[test]
    fn paths_are_read_the_widest_way_a_server_might() {
        for (raw, expected) in [
            ("/hub/v1/dataevents", "/hub/v1/dataevents"),
            ("/HUB/v1//DataEvents/", "/hub/v1/dataevents"),
            ("//hub/v1/dataevents", "/hub/v1/dataevents"),
            ("/hub/./v1/x/../dataevents", "/hub/v1/dataevents"),
            ("/hub/%2e%2E/hub/v1", "/hub/v1"),
            ("/hub%2Fv1%2fdataevents", "/hub/v1/dataevents"),
            ("/%68ub/v1", "/hub/v1"),
            ("/hub\\v1", "/hub/v1"),
            ("/hub%5Cv1", "/hub/v1"),
            ("/hub;x=1/v1;jsessionid=2/dataevents", "/hub/v1/dataevents"),
            ("/x/..;/hub/v1", "/hub/v1"),
            ("/hub./v1%20/dataevents", "/hub/v1/dataevents"),
            ("/../../hub", "/hub"),
            ("/data/v1/key:My%20DE", "/data/v1/key:my de"),
            ("/", "/"),
            ("", "/"),
        ] {
            assert_eq!(normal(raw), expected, "{raw}");
        }
    }

    #[test]
    fn paths_that_read_two_ways_are_unreadable() {
        for (raw, why) in [
            ("/hub/%252e%252e/x", Unreadable::DoubleEncoded),
            ("/hub%2500", Unreadable::DoubleEncoded),
            ("/hub%00/v1", Unreadable::Control),
            ("/hub%0a/v1", Unreadable::Control),
            ("/hub%C0%AE%C0%AE/v1", Unreadable::NotUtf8),
            ("/hub%FF", Unreadable::NotUtf8),
            ("/hub/.../v1", Unreadable::Dots),
        ] {
            assert_eq!(normalise_path(raw), Err(why), "{raw}");
        }
        // A lone `%`, or one not followed by hex digits, is a plain character.
        assert_eq!(normal("/50%/x%zz"), "/50%/x%zz");
    }

    #[test]
    fn a_prefix_covers_whole_segments_only() {
        assert_eq!(covers("/hub/v1", "/hub/v1"), (true, true));
        assert_eq!(covers("/hub/v1", "/hub/v1/dataevents"), (true, true));
        assert_eq!(covers("/hub/v1", "/Hub/V1/x"), (true, true));
        assert_eq!(covers("/hub/v1", "//hub/%76%31/x"), (true, true));
        assert_eq!(covers("/hub/v1", "/hub/v10"), (false, false));
        assert_eq!(covers("/hub/v1", "/hub"), (false, false));
        assert_eq!(covers("/hub/v1", "/hubx/v1"), (false, false));
        assert_eq!(covers("/", "/anything"), (true, true));
        assert_eq!(covers("/", "/"), (true, true));
    }

    #[test]
    fn denied_if_either_reading_is_under_allowed_only_if_both_are() {
        // Collapsed, it leaves `/hub`; read raw, a prefix router sends it there.
        assert_eq!(covers("/hub", "/hub/x/../../data/v1/async"), (true, false));
        assert_eq!(
            covers("/data/v1/async", "/hub/x/../../data/v1/async"),
            (true, false)
        );
        // An encoded `/`: a separator to some servers, part of a name to others.
        assert_eq!(
            covers("/data/v1/async", "/data%2Fv1%2Fasync/x"),
            (true, false)
        );
        assert_eq!(covers("/data/v1/async", "/data/v1\\async/x"), (true, false));
        assert_eq!(
            covers("/data/v1/async", "/data;a/v1/async/x"),
            (true, false)
        );
        // Dots past the prefix keep both readings under it.
        assert_eq!(
            covers("/data/v1/async", "/data/v1/async/x/../y"),
            (true, true)
        );
        assert_eq!(
            covers("/data/v1/async", "/data/v1/async/%2e%2e%2fasync/y"),
            (true, true)
        );
    }

    #[test]
    fn a_non_ascii_letter_may_fold_into_a_deny_prefix_never_an_allow_one() {
        // U+017F LATIN SMALL LETTER LONG S uppercases to `S`.
        let long_s = "/contacts/v1/%C5%BFubscribers/1";
        assert_eq!(covers("/contacts/v1/subscribers", long_s), (true, false));
        // Where the ASCII segments already differ, nothing folds it back.
        assert_eq!(
            covers("/contacts/v1/subscribers", "/contacts/v2/%C5%BFubscribers"),
            (false, false)
        );
        // Past the prefix, any letter is fine.
        assert_eq!(
            covers(
                "/contacts/v1/subscribers",
                "/contacts/v1/subscribers/caf%C3%A9"
            ),
            (true, true)
        );
    }
}
