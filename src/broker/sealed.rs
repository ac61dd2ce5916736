//! Local tokens any replica can verify (with `[redis]`): instead of random
//! bits known to one process, the token is its own grant — tenant, business
//! unit, scope, expiry and the package it was issued for — sealed with the
//! fleet's key (see `fleet::Sealer`). An SDK tool behind a load balancer
//! then authenticates on one replica and calls through any other.
//!
//! A token stops opening when the key changes (the tool authenticates
//! again, as after a restart without Redis) and stops being honoured when
//! its tenant's auth URL or client id changes, as `LocalTokens::retain`
//! does for the tokens one process holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::fleet::Sealer;
use crate::token::TokenKey;

/// After the `sfmcproxy_` prefix: a sealed token, not random bits.
const SEALED: &str = "f1.";

/// What a sealed local token holds.
#[derive(Serialize, Deserialize)]
struct Grant {
    tenant: String,
    account_id: Option<String>,
    scope: Option<String>,
    /// Unix milliseconds, the grace included.
    until: u64,
    /// The package: `{token_url} {client_id}` when it was issued.
    package: String,
}

/// The fleet's seal and each tenant's package, for one configuration.
pub struct FleetGrants {
    sealer: Sealer,
    /// The AAD name of every sealed local token.
    name: String,
    packages: HashMap<Arc<str>, String>,
}

impl FleetGrants {
    /// For `settings` with `[redis]`; `None` without it (or if the seal's
    /// keys cannot be derived, when local tokens stay per process).
    pub fn new(settings: &Settings) -> Option<Self> {
        let redis = settings.redis.as_ref()?;
        let sealer = Sealer::new(redis).ok()?;
        let packages = settings
            .tenants
            .iter()
            .map(|tenant| {
                (
                    tenant.name.clone(),
                    package(&tenant.token_url, &tenant.client_id),
                )
            })
            .collect();
        Some(Self {
            name: sealer.name("local-token", &[]),
            sealer,
            packages,
        })
    }

    /// The token for `key`, valid until `until` (the grace included), as
    /// text after the local-token prefix; `None` for a tenant not configured.
    pub fn mint(&self, key: &TokenKey, until: SystemTime) -> Option<String> {
        let grant = Grant {
            tenant: key.tenant.to_string(),
            account_id: key.account_id.as_deref().map(str::to_owned),
            scope: key.scope.as_deref().map(str::to_owned),
            until: unix_millis(until),
            package: self.packages.get(&key.tenant)?.clone(),
        };
        let plain = serde_json::to_vec(&grant).ok()?;
        let sealed = self.sealer.seal(&self.name, &plain);
        if sealed.is_empty() {
            return None;
        }
        Some(format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// What a token minted by any replica is bound to, and how long it has
    /// left; `None` when it is not one, does not open, has expired, or names
    /// a tenant or package no longer configured.
    pub fn open(&self, after_prefix: &str, now: SystemTime) -> Option<(TokenKey, Duration)> {
        let encoded = after_prefix.strip_prefix(SEALED)?;
        let sealed = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let plain = self.sealer.open(&self.name, &sealed)?;
        let grant: Grant = serde_json::from_slice(&plain).ok()?;
        let (tenant, package) = self.packages.get_key_value(grant.tenant.as_str())?;
        if *package != grant.package {
            return None;
        }
        let left = Duration::from_millis(grant.until.checked_sub(unix_millis(now))?);
        let key = TokenKey {
            tenant: tenant.clone(),
            account_id: grant.account_id.map(Arc::from),
            scope: grant.scope.map(Arc::from),
        };
        Some((key, left))
    }
}

fn package(token_url: &str, client_id: &str) -> String {
    format!("{token_url} {client_id}")
}

fn unix_millis(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn settings(client_id: &str, key: &str) -> Settings {
        let text = format!(
            r#"
            [redis]
            url = "redis://127.0.0.1:6379/0"
            encryption_key = "{key}"
            [tenants.acme]
            auth_url = "https://example.auth.marketingcloudapis.com/"
            client_id = "{client_id}"
            client_secret = "secret"
            "#
        );
        Settings::from_toml(&text, |_| None, Path::new(".")).expect("settings")
    }

    const KEY: &str = "a-key-of-at-least-32-characters!!";

    fn key() -> TokenKey {
        TokenKey {
            tenant: Arc::from("acme"),
            account_id: Some(Arc::from("100")),
            scope: Some(Arc::from("email_read")),
        }
    }

    #[test]
    fn a_token_minted_by_one_replica_opens_on_another_until_it_expires() {
        let (a, b) = (
            FleetGrants::new(&settings("id", KEY)).expect("redis"),
            FleetGrants::new(&settings("id", KEY)).expect("redis"),
        );
        let now = SystemTime::now();
        let token = a
            .mint(&key(), now + Duration::from_secs(60))
            .expect("minted");
        assert!(token.starts_with(SEALED), "{token}");
        assert!(
            !token.contains("acme") && !token.contains("email_read"),
            "{token}"
        );
        let (bound, left) = b.open(&token, now).expect("opens");
        assert_eq!((bound, left), (key(), Duration::from_secs(60)));
        assert_eq!(
            b.open(&token, now + Duration::from_secs(61)),
            None,
            "expired"
        );
    }

    #[test]
    fn another_key_package_or_a_tampered_token_does_not_open() {
        let a = FleetGrants::new(&settings("id", KEY)).expect("redis");
        let now = SystemTime::now();
        let token = a
            .mint(&key(), now + Duration::from_secs(60))
            .expect("minted");
        let rotated = FleetGrants::new(&settings("id", "another-key-of-32-characters-or-more"));
        assert_eq!(rotated.expect("redis").open(&token, now), None);
        let new_package = FleetGrants::new(&settings("other-id", KEY)).expect("redis");
        assert_eq!(new_package.open(&token, now), None, "the client id changed");
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(a.open(&tampered, now), None);
        assert_eq!(
            a.open("0123456789abcdef", now),
            None,
            "random bits: not sealed"
        );
    }

    #[test]
    fn without_redis_there_is_nothing_to_seal_with() {
        let text = r#"
            [tenants.acme]
            auth_url = "https://example.auth.marketingcloudapis.com/"
            client_id = "id"
            client_secret = "secret"
        "#;
        let settings = Settings::from_toml(text, |_| None, Path::new(".")).expect("settings");
        assert!(FleetGrants::new(&settings).is_none());
    }
}
