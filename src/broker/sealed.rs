//! Local tokens any replica can verify (with `[redis]`): instead of random
//! bits known to one process, the token is its own grant — tenant, business
//! unit, scope, expiry and the package it was issued for — sealed with the
//! fleet's key (see `fleet::Sealer`). An SDK tool behind a load balancer
//! then authenticates on one replica and calls through any other.
//!
//! A token stops opening when the key changes (the tool authenticates
//! again, as after a restart without Redis) and stops being honoured when
//! what admitted it changes — the tenant's auth URL, client id or secret,
//! the broker's local secret, the inbound keys — or its business unit is
//! no longer allowed, as `LocalTokens::retain` does for the tokens one
//! process holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::{Secret, Settings, Tenant};
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
    /// The tenant's admission digest when it was issued.
    package: String,
}

/// The fleet's seal and, per tenant, what a grant must match, for one
/// configuration.
pub struct FleetGrants {
    sealer: Sealer,
    /// The AAD name of every sealed local token.
    name: String,
    tenants: HashMap<Arc<str>, Admission>,
}

/// What a tenant's grants are checked against: its configuration, and an
/// HMAC of everything that decides who may have one.
struct Admission {
    tenant: Arc<Tenant>,
    digest: String,
}

impl FleetGrants {
    /// For `settings` with `[redis]`; `None` without it (or if the seal's
    /// keys cannot be derived, when local tokens stay per process).
    pub fn new(settings: &Settings) -> Option<Self> {
        let redis = settings.redis.as_ref()?;
        let sealer = Sealer::new(redis).ok()?;
        let tenants = settings
            .tenants
            .iter()
            .map(|tenant| {
                let digest = admission_digest(&sealer, settings, tenant);
                let admission = Admission {
                    tenant: tenant.clone(),
                    digest,
                };
                (tenant.name.clone(), admission)
            })
            .collect();
        Some(Self {
            name: sealer.name("local-token", &[]),
            sealer,
            tenants,
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
            package: self.tenants.get(&key.tenant)?.digest.clone(),
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
        let (tenant, admission) = self.tenants.get_key_value(grant.tenant.as_str())?;
        if admission.digest != grant.package {
            return None;
        }
        // A business unit the tenant no longer allows is refused, as the
        // replica that issued it would after the same reload.
        if let Some(mid) = grant.account_id.as_deref()
            && !admission.tenant.account_allowed(mid)
        {
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

/// An HMAC (the fleet's naming key) of what decides who may hold a grant
/// of `tenant`: its auth URL, client id and client secret, the broker's
/// local secret for it (or that any is accepted), and the inbound keys.
/// Changing any of them (a reload, a rotation) ends its sealed tokens on
/// every replica that has the change, as it ends the tokens one process
/// holds.
fn admission_digest(sealer: &Sealer, settings: &Settings, tenant: &Tenant) -> String {
    let secret = tenant.client_secret.as_ref().map_or("", Secret::expose);
    let broker = match settings.broker.client_secrets.get(&tenant.name) {
        Some(local) => local.expose(),
        None if settings.broker.accept_any_secret => "*",
        None => "",
    };
    let keys: Vec<&str> = settings
        .server
        .inbound_keys
        .iter()
        .map(Secret::expose)
        .collect();
    let keys = keys.join("\n");
    let parts = [
        tenant.token_url.as_str(),
        tenant.client_id.as_str(),
        secret,
        broker,
        &keys,
    ];
    sealer.name("admission", &parts)
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
        let rotated_secret = settings("id", KEY);
        let text = format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\nencryption_key = \"{KEY}\"\n[tenants.acme]\nauth_url = \"https://example.auth.marketingcloudapis.com/\"\nclient_id = \"id\"\nclient_secret = \"rotated\"\n"
        );
        let rotated = Settings::from_toml(&text, |_| None, Path::new(".")).expect("settings");
        assert!(
            FleetGrants::new(&rotated_secret)
                .expect("redis")
                .open(&token, now)
                .is_some()
        );
        assert_eq!(
            FleetGrants::new(&rotated).expect("redis").open(&token, now),
            None,
            "the client secret changed"
        );
        let narrowed = text.replace(
            "client_secret = \"rotated\"",
            "client_secret = \"secret\"\naccount_ids = [\"200\"]",
        );
        let narrowed = Settings::from_toml(&narrowed, |_| None, Path::new(".")).expect("settings");
        assert_eq!(
            FleetGrants::new(&narrowed)
                .expect("redis")
                .open(&token, now),
            None,
            "business unit 100 is no longer allowed"
        );
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
