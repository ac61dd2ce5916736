//! `[upstream]`: the client to SFMC's instances — connect and response
//! timeouts, the CA file for TLS inspection, the hosts an instance URL may
//! name, the idle timer on SFMC's bodies, the egress path (`egress`), and
//! whether a throttled request is sent again (`retry_throttled`, the default
//! of each tenant's own key, and `max_retry_wait`).

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::defaults::{
    DEFAULT_ALLOWED_INSTANCE_HOSTS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RETRY_WAIT, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_RETRY_THROTTLED,
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
    /// Tenants that do not say: whether a request SFMC throttled is sent again.
    pub retry_throttled: bool,
    /// The longest `Retry-After` the proxy waits out before sending again.
    pub max_retry_wait: Duration,
}

/// The bounds of `upstream.max_retry_wait`: SOAP's `Rate Limited` is sent
/// again after 1 s, and no caller should hang longer than a minute.
const MIN_RETRY_WAIT: Duration = Duration::from_secs(1);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

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
    let max_retry_wait = duration_or(
        "upstream.max_retry_wait",
        raw.max_retry_wait.as_deref(),
        DEFAULT_MAX_RETRY_WAIT,
    )?;
    if !(MIN_RETRY_WAIT..=MAX_RETRY_WAIT).contains(&max_retry_wait) {
        return Err(invalid(
            "upstream.max_retry_wait",
            "must be 1s to 60s: a request that waits longer holds its client (and its tenant's max_concurrent_requests slot) as if the proxy were dead; longer waits are the client's to handle",
        ));
    }
    Ok(UpstreamSettings {
        egress,
        retry_throttled: raw.retry_throttled.unwrap_or(DEFAULT_RETRY_THROTTLED),
        max_retry_wait,
        connect_timeout,
        response_timeout,
        ca_file,
        allowed_instance_hosts,
        idle_timeout,
    })
}
