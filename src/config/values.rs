//! Value parsers shared by the validator: `${VAR}` expansion, durations, sizes,
//! URLs, MIDs and host names. Each error names the key it came from.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::MidValue;
use super::{ConfigError, invalid};

/// Expands `${VAR}` from an environment lookup and resolves relative paths
/// against the config file's directory.
pub(super) struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
}

impl<'a> Expander<'a> {
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>, base_dir: &'a Path) -> Self {
        Self { env, base_dir }
    }

    /// An environment variable, non-empty.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    pub fn expand(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                invalid(
                    key,
                    "unterminated `${` (write ${NAME} to read an environment variable)",
                )
            })?;
            let name = &after[..end];
            let valid_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(invalid(
                    key,
                    format!("`${{{name}}}` is not a valid environment variable name"),
                ));
            }
            let resolved = (self.env)(name).ok_or_else(|| ConfigError::MissingVariable {
                key: key.to_owned(),
                name: name.to_owned(),
            })?;
            out.push_str(&resolved);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub fn path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let expanded = self.expand(key, value)?;
        let path = PathBuf::from(expanded);
        Ok(if path.is_relative() {
            self.base_dir.join(path)
        } else {
            path
        })
    }

    /// Reads a secret from a file (Docker/Kubernetes secrets), trimming the
    /// trailing newline editors add.
    pub fn read_secret_file(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let path = self.path(key, value)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// `key`'s duration as written, or `default` when the file does not set it.
pub(super) fn duration_or(
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    text.map_or(Ok(default), |text| parse_duration(key, text))
}

/// `key`'s size as written, or `default` when the file does not set it.
pub(super) fn size_or(key: &str, text: Option<&str>, default: usize) -> Result<usize, ConfigError> {
    text.map_or(Ok(default), |text| parse_size(key, text))
}

pub(super) fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            format!("`{text}` is not a duration ({e}); write e.g. \"120s\" or \"5m\""),
        )
    })
}

/// Parses "65536", "64KiB", "1 MiB", "64KB" into bytes.
pub fn parse_size(key: &str, text: &str) -> Result<usize, ConfigError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => 0,
    };
    let number: Option<u64> = digits.parse().ok();
    number
        .filter(|_| multiplier > 0)
        .and_then(|n| n.checked_mul(multiplier))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                key,
                format!("`{text}` is not a size; write e.g. \"64KiB\" or \"1MiB\""),
            )
        })
}

/// Validates an http(s) base URL and returns it without a trailing slash.
/// Plain http is accepted only for loopback hosts (tests, the demo).
pub(super) fn parse_http_url(key: &str, text: &str) -> Result<String, ConfigError> {
    let trimmed = text.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| invalid(key, format!("`{text}` is not a URL")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid(
            key,
            format!(
                "`{text}` must be an absolute URL like https://mcXXXX.auth.marketingcloudapis.com/"
            ),
        ));
    };
    // `http::Uri` drops a fragment instead of refusing it: look at the text.
    if authority.as_str().contains('@') || uri.query().is_some() || trimmed.contains('#') {
        return Err(invalid(
            key,
            "must not contain credentials, a query or a fragment",
        ));
    }
    match scheme {
        "https" => {}
        "http" if is_loopback_host(authority.host()) => {}
        _ => {
            return Err(invalid(
                key,
                format!("`{text}` must use https (plain http only for loopback)"),
            ));
        }
    }
    Ok(trimmed.to_owned())
}

pub(super) fn parse_mid(
    key: &str,
    value: MidValue,
    ex: &Expander<'_>,
) -> Result<String, ConfigError> {
    let text = match value {
        MidValue::Number(n) => n.to_string(),
        MidValue::Text(s) => ex.expand(key, s.trim())?,
    };
    if !is_mid(&text) {
        return Err(invalid(
            key,
            format!("`{text}` is not a business unit MID ({MID_RULE})"),
        ));
    }
    Ok(text)
}

/// How a MID is written, for error messages.
pub const MID_RULE: &str = "1 to 10 digits";

/// A business unit MID: `^[0-9]{1,10}$`. SFMC's MIDs are 32-bit numbers;
/// anything longer is not one, and would only make another token key.
pub fn is_mid(text: &str) -> bool {
    (1..=10).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// Scopes are a set of space-separated words: sorted, deduplicated, one space
/// between them, so equal scopes written in any order (from the config or an
/// `X-SFMC-Scope`) share one token.
pub fn normalise_scope(scope: &str) -> String {
    let mut words: Vec<&str> = scope.split_whitespace().collect();
    words.sort_unstable();
    words.dedup();
    words.join(" ")
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without brackets).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The form a Host header uses for an IP: IPv6 in brackets.
pub(super) fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Lowercases and brackets bare IPv6 so configured names match Host headers.
pub(super) fn normalise_host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip @ IpAddr::V6(_)) => host_of_ip(ip),
        _ => host,
    }
}
