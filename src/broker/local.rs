//! Local tokens: the stand-ins the broker hands to SDK tools. Each is 256 random
//! bits from the TLS library's CSPRNG, bound to one (tenant, business unit,
//! scope), held in memory only, and expires like an SFMC token — or, with
//! `[redis]`, its own grant sealed for the fleet (`sealed`), so that any
//! replica honours it. A request that presents one is served with the real
//! token of what it is bound to.
//!
//! No one client can fill the table: an identical request (same tenant, MID,
//! scope and presented `client_id`) gets the live token it was given before,
//! with its remaining lifetime, and one (tenant, `client_id`) holds at most
//! `MAX_TOKENS_PER_CLIENT` live tokens. So a tool that authenticates before
//! every call, or one that cycles scopes, costs a few entries, and the global
//! cap is never reached by one client refusing everyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use tokio::time::Instant;

use super::sealed::FleetGrants;
use crate::token::TokenKey;

/// Marks a token as the proxy's own, so a stale one (after a restart) is
/// answered with a 401 that makes the tool re-authenticate, while any other
/// `Authorization` a script sends keeps being ignored as before.
pub const LOCAL_TOKEN_PREFIX: &str = "sfmcproxy_";
const RANDOM_BYTES: usize = 32;
/// Live local tokens at most; far above what tools renewing every ~15 minutes
/// need, and a bound on memory whatever clients do.
const MAX_LIVE_TOKENS: usize = 100_000;
/// Live local tokens one (tenant, presented `client_id`) may hold: a tool
/// needs one per (MID, scope) it uses, and identical requests share one.
pub const MAX_TOKENS_PER_CLIENT: usize = 64;
/// Tools use a token up to its announced last second (fuel-auth, sfmc-sdk):
/// honour it a little longer so a call made at that instant is not refused.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);

/// What a presented bearer value means.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// A live local token: serve it as this key.
    Bound(TokenKey),
    /// One of ours, but unknown or expired: the tool must authenticate again.
    Invalid,
    /// Not a local token at all.
    Foreign,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the system random generator failed")]
    Random,
    #[error(
        "too many live local tokens ({MAX_LIVE_TOKENS}); is a client requesting a token per call?"
    )]
    Full,
    #[error(
        "client `{client_id}` of tenant `{tenant}` already holds {MAX_TOKENS_PER_CLIENT} live local tokens (one per business unit and scope); reuse them, or wait until one expires"
    )]
    ClientFull { tenant: String, client_id: String },
}

/// A local token handed out: the value, and the lifetime to announce.
/// `Debug` never shows the token: it stands in for a real one.
#[derive(PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub expires_in: Duration,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

pub struct LocalTokens {
    /// Token → what it is bound to: read on every request that presents one.
    grants: DashMap<Box<str>, Grant>,
    /// Who holds which live token: only issuing (rare) takes this lock.
    holders: Mutex<HashMap<Holder, Vec<Held>>>,
    /// `broker.token_lifetime` in milliseconds, for tokens issued from now
    /// on: a reload may change it (an atomic, so issuing reads no lock for it).
    lifetime_ms: AtomicU64,
    /// With `[redis]`: tokens are sealed grants any replica opens (see
    /// `sealed`); without, random bits this process alone knows.
    fleet: ArcSwapOption<FleetGrants>,
}

struct Grant {
    key: TokenKey,
    expires_at: Instant,
}

/// One client as the broker knows it: the tenant and the `client_id` it sent
/// (the tenant's name or its real client id).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Holder {
    tenant: std::sync::Arc<str>,
    client_id: Box<str>,
}

/// A live token a holder was given; `expires_at` is the announced expiry
/// (without the grace).
struct Held {
    token: Box<str>,
    key: TokenKey,
    expires_at: Instant,
}

impl LocalTokens {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            grants: DashMap::new(),
            holders: Mutex::new(HashMap::new()),
            lifetime_ms: AtomicU64::new(millis(lifetime)),
            fleet: ArcSwapOption::empty(),
        }
    }

    /// Tokens issued from now on are sealed for the fleet (`Some`), or
    /// random (`None`), and tokens other replicas sealed are honoured with
    /// `grants`' key and packages (a config reload calls it again).
    pub fn share(&self, grants: Option<FleetGrants>) {
        self.fleet.store(grants.map(Arc::new));
    }

    /// The lifetime of tokens issued from now on (a config reload); those
    /// issued before keep theirs.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_ms.store(millis(lifetime), Ordering::Relaxed);
    }

    fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    /// Drops every local token whose key `keep` refuses (a config reload
    /// removed its tenant, changed its credentials or no longer allows its
    /// business unit); a tool that presents one is told to authenticate
    /// again. Returns how many live tokens went.
    pub fn retain(&self, keep: impl Fn(&TokenKey) -> bool) -> usize {
        let mut holders = crate::sync::lock(&self.holders);
        holders.retain(|_, held| {
            held.retain(|h| keep(&h.key));
            !held.is_empty()
        });
        let before = self.grants.len();
        self.grants.retain(|_, grant| keep(&grant.key));
        before.saturating_sub(self.grants.len())
    }

    /// A local token bound to `key` for the client that presented
    /// `client_id`: the one it holds for the same key when at least half its
    /// lifetime remains (tools renew on their own schedule from the announced
    /// `expires_in`), else a fresh one (the old one stays valid until it expires).
    pub fn issue(&self, key: TokenKey, client_id: &str) -> Result<Issued, IssueError> {
        let now = Instant::now();
        let lifetime = self.lifetime();
        let holder = Holder {
            tenant: key.tenant.clone(),
            client_id: client_id.into(),
        };
        let mut holders = crate::sync::lock(&self.holders);
        let held = holders.entry(holder).or_default();
        held.retain(|h| h.expires_at + EXPIRY_GRACE > now);
        let reusable = held
            .iter()
            .filter(|h| h.key == key)
            .map(|h| (h, h.expires_at.saturating_duration_since(now)))
            .filter(|(_, left)| *left >= lifetime / 2)
            .max_by_key(|(_, left)| *left);
        if let Some((h, left)) = reusable {
            return Ok(Issued {
                token: h.token.to_string(),
                expires_in: left,
            });
        }
        if held.len() >= MAX_TOKENS_PER_CLIENT {
            return Err(IssueError::ClientFull {
                tenant: key.tenant.to_string(),
                client_id: client_id.to_owned(),
            });
        }
        if self.grants.len() >= MAX_LIVE_TOKENS {
            // Issuing is rare (once per tool per ~15 min): a sweep here is cheap.
            self.grants.retain(|_, grant| grant.expires_at > now);
            if self.grants.len() >= MAX_LIVE_TOKENS {
                return Err(IssueError::Full);
            }
        }
        let token: Box<str> = format!("{LOCAL_TOKEN_PREFIX}{}", self.mint(&key, lifetime)?).into();
        let expires_at = now + lifetime;
        let grant = Grant {
            key: key.clone(),
            expires_at: expires_at + EXPIRY_GRACE,
        };
        self.grants.insert(token.clone(), grant);
        held.push(Held {
            token: token.clone(),
            key,
            expires_at,
        });
        Ok(Issued {
            token: token.into(),
            expires_in: lifetime,
        })
    }

    /// The text after the prefix of a new token for `key`: sealed for the
    /// fleet when it shares, else 256 random bits.
    fn mint(&self, key: &TokenKey, lifetime: Duration) -> Result<String, IssueError> {
        let until = std::time::SystemTime::now() + lifetime + EXPIRY_GRACE;
        let sealed = self
            .fleet
            .load()
            .as_ref()
            .and_then(|fleet| fleet.mint(key, until));
        match sealed {
            Some(sealed) => Ok(sealed),
            None => crate::tls::random_hex(RANDOM_BYTES).map_err(|_| IssueError::Random),
        }
    }

    /// What `presented` (a bearer value or `fueloauth` text) stands for.
    pub fn resolve(&self, presented: &str) -> Presented {
        let presented = presented.trim();
        let Some(after_prefix) = presented.strip_prefix(LOCAL_TOKEN_PREFIX) else {
            return Presented::Foreign;
        };
        let now = Instant::now();
        let bound = self
            .grants
            .get(presented)
            .map(|grant| (grant.expires_at > now).then(|| grant.key.clone()));
        match bound {
            Some(Some(key)) => Presented::Bound(key),
            Some(None) => {
                self.grants.remove(presented);
                Presented::Invalid
            }
            None => self.resolve_sealed(presented, after_prefix, now),
        }
    }

    /// A token another replica sealed: honoured while it opens, and kept
    /// (while there is room) so the next request does not open it again.
    fn resolve_sealed(&self, presented: &str, after_prefix: &str, now: Instant) -> Presented {
        let fleet = self.fleet.load();
        let opened = fleet
            .as_ref()
            .and_then(|fleet| fleet.open(after_prefix, std::time::SystemTime::now()));
        let Some((key, left)) = opened else {
            return Presented::Invalid;
        };
        if self.grants.len() < MAX_LIVE_TOKENS {
            let grant = Grant {
                key: key.clone(),
                expires_at: now + left,
            };
            self.grants.insert(presented.into(), grant);
        }
        Presented::Bound(key)
    }

    /// How many issued tokens are still valid (the metrics' gauge; read at
    /// scrape time, so a walk over the map is fine).
    pub fn live(&self) -> usize {
        let now = Instant::now();
        self.grants.iter().filter(|g| g.expires_at > now).count()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(mid: &str) -> TokenKey {
        TokenKey {
            tenant: Arc::from("acme"),
            account_id: Some(Arc::from(mid)),
            scope: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_random_bound_and_expire() {
        let tokens = LocalTokens::new(Duration::from_secs(1080));
        let a = tokens.issue(key("1"), "acme").expect("issue").token;
        let b = tokens.issue(key("2"), "acme").expect("issue").token;
        assert_ne!(a, b);
        assert_eq!(a.len(), LOCAL_TOKEN_PREFIX.len() + 64, "256 bits, hex");
        assert_eq!(tokens.resolve(&a), Presented::Bound(key("1")));
        assert_eq!(tokens.resolve(&b), Presented::Bound(key("2")));
        assert_eq!(tokens.resolve("sfmcproxy_00"), Presented::Invalid);
        assert_eq!(tokens.resolve("a-real-sfmc-token"), Presented::Foreign);
        tokio::time::advance(Duration::from_secs(1080 + 29)).await;
        assert_eq!(
            tokens.resolve(&a),
            Presented::Bound(key("1")),
            "grace at expiry"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(tokens.resolve(&a), Presented::Invalid);
        assert_eq!(tokens.grants.len(), 1, "the expired grant is dropped");
    }

    fn scoped(scope: &str) -> TokenKey {
        TokenKey {
            scope: Some(Arc::from(scope)),
            ..key("1")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retain_drops_the_refused_keys_and_a_new_lifetime_applies_to_new_tokens() {
        let tokens = LocalTokens::new(Duration::from_secs(1080));
        let kept = tokens.issue(key("1"), "acme").expect("issue").token;
        let dropped = tokens.issue(key("2"), "acme").expect("issue").token;
        let gone = tokens.retain(|k| k.account_id.as_deref() != Some("2"));
        assert_eq!(gone, 1);
        assert_eq!(tokens.resolve(&kept), Presented::Bound(key("1")));
        assert_eq!(tokens.resolve(&dropped), Presented::Invalid);
        // The holder forgot it too: the same request gets a new token.
        let again = tokens.issue(key("2"), "acme").expect("issue").token;
        assert_ne!(again, dropped);
        tokens.set_lifetime(Duration::from_secs(600));
        let short = tokens.issue(key("3"), "acme").expect("issue");
        assert_eq!(short.expires_in, Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn identical_requests_share_one_live_token() {
        let tokens = LocalTokens::new(Duration::from_secs(1080));
        let first = tokens.issue(key("1"), "acme").expect("issue");
        assert_eq!(first.expires_in, Duration::from_secs(1080));
        for _ in 0..999 {
            let again = tokens.issue(key("1"), "acme").expect("issue");
            assert_eq!(again.token, first.token);
        }
        assert_eq!(tokens.grants.len(), 1);
        // The remaining lifetime is announced.
        tokio::time::advance(Duration::from_secs(500)).await;
        let later = tokens.issue(key("1"), "acme").expect("issue");
        assert_eq!(later.token, first.token);
        assert_eq!(later.expires_in, Duration::from_secs(580));
        // Under half left: a fresh one; the old one stays valid until it expires.
        tokio::time::advance(Duration::from_secs(41)).await;
        let fresh = tokens.issue(key("1"), "acme").expect("issue");
        assert_ne!(fresh.token, first.token);
        assert_eq!(fresh.expires_in, Duration::from_secs(1080));
        assert_eq!(tokens.resolve(&first.token), Presented::Bound(key("1")));
        // Another client id (the real one), another MID: each its own.
        let other = tokens.issue(key("1"), "real-client-id").expect("issue");
        assert_ne!(other.token, fresh.token);
        let mid2 = tokens.issue(key("2"), "acme").expect("issue");
        assert_ne!(mid2.token, fresh.token);
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_holds_a_bounded_number_of_tokens_and_others_still_get_one() {
        let tokens = LocalTokens::new(Duration::from_secs(1080));
        let mut refused = 0;
        for i in 0..1000 {
            match tokens.issue(scoped(&format!("scope_{i}")), "acme") {
                Ok(_) => {}
                Err(IssueError::ClientFull { .. }) => refused += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(refused, 1000 - MAX_TOKENS_PER_CLIENT);
        assert_eq!(tokens.grants.len(), MAX_TOKENS_PER_CLIENT);
        // The same client may still renew what it holds…
        assert!(tokens.issue(scoped("scope_0"), "acme").is_ok());
        // …another client (another tenant, or the real client id) gets one.
        let beta = TokenKey {
            tenant: Arc::from("beta"),
            ..key("1")
        };
        assert!(tokens.issue(beta, "beta").is_ok());
        assert!(tokens.issue(scoped("x"), "real-client-id").is_ok());
        // Once the held ones expire, the client may have new ones.
        tokio::time::advance(Duration::from_secs(1080 + 30)).await;
        assert!(tokens.issue(scoped("new"), "acme").is_ok());
    }
}
