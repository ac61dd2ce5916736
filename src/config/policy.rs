//! `read_only`, `allow_paths` and `deny_paths` of a tenant: what requests it
//! lets through (decided after routing by `crate::policy`), and the one path
//! normalisation that configured prefixes and request paths both go through.
//!
//! The normalised path is for matching only; the forwarded path stays byte
//! for byte. It is read the widest way a server behind SFMC's load balancer
//! might read it, so that no spelling of a denied path slips past a prefix:
//! percent-decoded once (`%2F` and `%5C` included), `/` and `\` both
//! separators, empty and `.` segments dropped, `..` taking the one before it,
//! `;params` cut from each segment (as Tomcat does), trailing dots and spaces
//! trimmed (as IIS does), ASCII letters lowercased. What it cannot read one
//! way only is [`Unreadable`], and refused wherever a prefix list is set.

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

/// A request path as the policy reads it (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    segments: Vec<String>,
}

impl NormalPath {
    /// The path with one `/` before each segment (`/` for the root).
    pub fn display(&self) -> String {
        if self.segments.is_empty() {
            return "/".into();
        }
        self.segments.iter().map(|s| format!("/{s}")).collect()
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

/// How a path stands to a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// The path is the prefix or under it, by whole segments.
    Yes,
    /// It is, if a server folds a non-ASCII letter of it into the prefix's
    /// (as `ſ` into `s`): under a deny prefix, under no allow prefix.
    Maybe,
    No,
}

impl PathPrefix {
    /// Whether `path` is this prefix or under it: `/hub/v1` covers `/hub/v1`
    /// and `/hub/v1/x`, not `/hub/v10`; `/` covers every path.
    pub fn covers(&self, path: &NormalPath) -> Cover {
        if path.segments.len() < self.segments.len() {
            return Cover::No;
        }
        let mut cover = Cover::Yes;
        for (want, have) in self.segments.iter().zip(&path.segments) {
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
    let mut segments: Vec<String> = Vec::new();
    for raw in decoded.split(['/', '\\']) {
        // `..;x` is `..` to a server that drops matrix parameters.
        let segment = raw.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ if segment.bytes().all(|b| b == b'.') => return Err(Unreadable::Dots),
            _ => {
                let trimmed = segment.trim_end_matches(['.', ' ']);
                if !trimmed.is_empty() {
                    segments.push(trimmed.to_ascii_lowercase());
                }
            }
        }
    }
    Ok(NormalPath { segments })
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
            if normal.segments.first().is_some_and(|s| s == "_proxy") {
                return Err(refuse(
                    "is the proxy's own (/_proxy/* is never forwarded, and no policy applies to it)"
                        .into(),
                ));
            }
            Ok(PathPrefix {
                text: text.clone(),
                segments: normal.segments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Cover, NormalPath, PathPrefix, Unreadable, normalise_path};

    fn normal(path: &str) -> String {
        normalise_path(path).map_or_else(|e| format!("{e:?}"), |p| p.display())
    }

    fn prefix(text: &str) -> PathPrefix {
        let normal = normalise_path(text).expect("a readable prefix");
        PathPrefix {
            text: text.into(),
            segments: normal.segments,
        }
    }

    fn path(text: &str) -> NormalPath {
        normalise_path(text).expect("a readable path")
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
        let hub = prefix("/hub/v1");
        assert_eq!(hub.covers(&path("/hub/v1")), Cover::Yes);
        assert_eq!(hub.covers(&path("/hub/v1/dataevents")), Cover::Yes);
        assert_eq!(hub.covers(&path("/Hub/V1/x")), Cover::Yes);
        assert_eq!(hub.covers(&path("/hub/v10")), Cover::No);
        assert_eq!(hub.covers(&path("/hub")), Cover::No);
        assert_eq!(hub.covers(&path("/hubx/v1")), Cover::No);
        assert_eq!(prefix("/").covers(&path("/anything")), Cover::Yes);
        assert_eq!(prefix("/").covers(&path("/")), Cover::Yes);
    }

    #[test]
    fn a_non_ascii_letter_may_fold_into_the_prefix() {
        let subscribers = prefix("/contacts/v1/subscribers");
        // U+017F LATIN SMALL LETTER LONG S uppercases to `S`.
        let long_s = path("/contacts/v1/%C5%BFubscribers/1");
        assert_eq!(subscribers.covers(&long_s), Cover::Maybe);
        // Where the ASCII segments already differ, nothing folds it back.
        assert_eq!(
            subscribers.covers(&path("/contacts/v2/%C5%BFubscribers")),
            Cover::No
        );
        // Past the prefix, any letter is fine.
        assert_eq!(
            subscribers.covers(&path("/contacts/v1/subscribers/caf%C3%A9")),
            Cover::Yes
        );
    }
}
