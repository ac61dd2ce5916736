//! `[upstream]`: the client to SFMC's instances — connect and response
//! timeouts, the CA file for TLS inspection, the hosts an instance URL may
//! name, the idle timer on SFMC's bodies, and the egress path (`egress`).

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::defaults::{
    DEFAULT_ALLOWED_INSTANCE_HOSTS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT,
};
use super::egress::{self, Egress};
use super::invalid;
use super::raw::RawUpstream;
use super::values::{Expander, duration_or};

/// `PartialEq`: a reload rebuilds the upstream client only when this changed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Lowercase host suffixes an instance URL must match (`.example.com` matches
    /// subdomains; `example.com` also matches itself). Loopback is always allowed.
    pub allowed_instance_hosts: Vec<String>,
    /// A response body from SFMC that sends nothing for this long is cut.
    pub idle_timeout: Duration,
    /// The forward proxy calls to SFMC go through, if any.
    pub egress: Egress,
}

pub(super) fn validate(
    raw: RawUpstream,
    ex: &Expander<'_>,
) -> Result<UpstreamSettings, ConfigError> {
    let connect_timeout = duration_or(
        "upstream.connect_timeout",
        raw.connect_timeout.as_deref(),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let response_timeout = duration_or(
        "upstream.response_timeout",
        raw.response_timeout.as_deref(),
        DEFAULT_RESPONSE_TIMEOUT,
    )?;
    let ca_file = match raw.ca_file {
        Some(path) => Some(ex.path("upstream.ca_file", &path)?),
        None => None,
    };
    let allowed_instance_hosts = match raw.allowed_instance_hosts {
        Some(list) => {
            let mut hosts = Vec::new();
            for (i, host) in list.iter().enumerate() {
                let host = host.trim().to_ascii_lowercase();
                if host.is_empty() || host == "." {
                    return Err(invalid(
                        format!("upstream.allowed_instance_hosts[{i}]"),
                        "an empty suffix would allow every host",
                    ));
                }
                hosts.push(host);
            }
            hosts
        }
        None => DEFAULT_ALLOWED_INSTANCE_HOSTS.map(String::from).into(),
    };
    let idle_timeout = duration_or(
        "upstream.idle_timeout",
        raw.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    )?;
    let egress = egress::validate(
        raw.proxy.as_deref(),
        raw.proxy_password_file.as_deref(),
        raw.no_proxy.as_deref(),
        ex,
    )?;
    Ok(UpstreamSettings {
        egress,
        connect_timeout,
        response_timeout,
        ca_file,
        allowed_instance_hosts,
        idle_timeout,
    })
}
