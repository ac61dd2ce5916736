//! `[broker]` and `server.public_url`: the settings of the local `/v2/token`
//! that lets unmodified SDK tools use the proxy (see `crate::broker`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::defaults::DEFAULT_BROKER_TOKEN_LIFETIME;
use super::raw::RawBroker;
use super::values::{Expander, duration_or};
use super::{ConfigError, Secret, ServerSettings, Tenant, invalid};

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub token_lifetime: Duration,
    /// Tenant name → the local secret an SDK must present as `client_secret`.
    pub client_secrets: HashMap<Arc<str>, Secret>,
    /// Any secret is accepted for a tenant without one: only when nothing
    /// else guards the proxy either (loopback listener, no inbound keys), so
    /// the broker never becomes a way around an inbound key.
    pub accept_any_secret: bool,
}

pub(super) fn validate(
    raw: RawBroker,
    server: &ServerSettings,
    tenants: &[Arc<Tenant>],
    only: Option<&str>,
    left_out: &mut Vec<String>,
    ex: &Expander<'_>,
) -> Result<BrokerSettings, ConfigError> {
    let token_lifetime = duration_or(
        "broker.token_lifetime",
        raw.token_lifetime.as_deref(),
        DEFAULT_BROKER_TOKEN_LIFETIME,
    )?;
    if token_lifetime < Duration::from_secs(600) {
        // FuelSDK renews a token with under 300 s left: shorter lifetimes
        // would make it re-authenticate on nearly every call.
        return Err(invalid(
            "broker.token_lifetime",
            "must be at least 10m (SDKs renew tokens with under 5 minutes left)",
        ));
    }
    let mut client_secrets = HashMap::new();
    for (name, value) in raw.client_secrets {
        let key = format!("broker.client_secrets.{name}");
        let Some(tenant) = tenants.iter().find(|t| *t.name == *name) else {
            // A tenant left out for the command at hand has no use for it.
            if left_out
                .iter()
                .any(|why| why.starts_with(&format!("tenant `{name}` ")))
            {
                continue;
            }
            return Err(invalid(key, format!("there is no tenant `{name}`")));
        };
        let value = match ex.expand(&key, &value) {
            Ok(value) => value,
            // Another tenant's local secret, for a command that uses one
            // tenant alone (and never the broker).
            Err(error @ ConfigError::MissingVariable { .. })
                if only.is_some_and(|only| only != name) =>
            {
                left_out.push(format!("{key} left out: {error}"));
                continue;
            }
            Err(error) => return Err(error),
        };
        if value.len() < 16 {
            return Err(invalid(
                key,
                "a local secret must be at least 16 characters",
            ));
        }
        client_secrets.insert(tenant.name.clone(), Secret::new(value));
    }
    Ok(BrokerSettings {
        token_lifetime,
        client_secrets,
        accept_any_secret: server.listen.iter().all(|addr| addr.ip().is_loopback())
            && server.inbound_keys.is_empty(),
    })
}

/// An absolute http(s) URL, returned with exactly one trailing slash: SDKs
/// append paths (`hub/v1/…`, `Service.asmx`) to it.
pub(super) fn parse_public_url(text: &str) -> Result<String, ConfigError> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| invalid("server.public_url", format!("`{text}` is not a URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() || uri.query().is_some() {
        return Err(invalid(
            "server.public_url",
            format!("`{text}` must be an http(s) URL such as \"http://127.0.0.1:8080/\""),
        ));
    }
    Ok(format!("{}/", text.trim_end_matches('/')))
}
