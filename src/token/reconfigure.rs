//! A config reload as the cache sees it: the token source (the `/v2/token`
//! client that knows the new tenants) and the `[token]` bounds are replaced
//! for the fetches that start from then on, and the keys whose tokens no
//! longer mean what they did are dropped. Everything else — the tokens of
//! unchanged tenants above all — is kept: that is what a reload is for.

use std::sync::Arc;

use super::{Limits, TokenCache, TokenKey, TokenSource, Tuning};
use crate::config::TokenSettings;

impl TokenCache {
    /// Fetches from now on go to `source` and follow `settings`: the refresh
    /// margin applies to tokens fetched from now on (a token held keeps the
    /// refresh time it was given), the rate limit and `max_keys` at once. A
    /// fetch already under way finishes with what it started with.
    pub fn reconfigure(&self, source: Arc<dyn TokenSource>, settings: &TokenSettings) {
        self.inner.tuning.store(Arc::new(Tuning {
            source,
            refresh_before: settings.refresh_before_expiry,
            limits: Limits::from(settings),
        }));
    }

    /// Drops every key `keep_key` refuses (token, backoff window, ledger)
    /// and the tenant-wide state (bucket, backoff) of every tenant
    /// `keep_tenant` refuses; returns how many keys went. A fetch in flight
    /// for a dropped key ends in its dropped slot, which nothing reads again,
    /// so no token of old credentials is ever served after this returns.
    pub fn retain(
        &self,
        keep_key: impl Fn(&TokenKey) -> bool,
        keep_tenant: impl Fn(&str) -> bool,
    ) -> usize {
        let before = self.inner.slots.len();
        self.inner.slots.retain(|key, _| keep_key(key));
        let after = self.inner.slots.len();
        self.inner.tenants.retain(|name, _| keep_tenant(name));
        before.saturating_sub(after)
    }
}
