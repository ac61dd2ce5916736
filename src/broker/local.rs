//! Local tokens: the stand-ins the broker hands to SDK tools. Each is 256 random
//! bits from the TLS library's CSPRNG, bound to one (tenant, business unit,
//! scope), held in memory only, and expires like an SFMC token. A request that
//! presents one is served with the real token of what it is bound to.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::token::TokenKey;

/// Marks a token as the proxy's own, so a stale one (after a restart) is
/// answered with a 401 that makes the tool re-authenticate, while any other
/// `Authorization` a script sends keeps being ignored as before.
pub const LOCAL_TOKEN_PREFIX: &str = "sfmcproxy_";
const RANDOM_BYTES: usize = 32;
/// Live local tokens at most; far above what tools renewing every ~15 minutes
/// need, and a bound on memory if a client loops on `/v2/token`.
const MAX_LIVE_TOKENS: usize = 100_000;
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
}

pub struct LocalTokens {
    grants: DashMap<Box<str>, Grant>,
    lifetime: Duration,
}

struct Grant {
    key: TokenKey,
    expires_at: Instant,
}

impl LocalTokens {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            grants: DashMap::new(),
            lifetime,
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A fresh local token bound to `key`.
    pub fn issue(&self, key: TokenKey) -> Result<String, IssueError> {
        let now = Instant::now();
        if self.grants.len() >= MAX_LIVE_TOKENS {
            // Issuing is rare (once per tool per ~15 min): a sweep here is cheap.
            self.grants.retain(|_, grant| grant.expires_at > now);
            if self.grants.len() >= MAX_LIVE_TOKENS {
                return Err(IssueError::Full);
            }
        }
        let random = crate::tls::random_hex(RANDOM_BYTES).map_err(|_| IssueError::Random)?;
        let token = format!("{LOCAL_TOKEN_PREFIX}{random}");
        let grant = Grant {
            key,
            expires_at: now + self.lifetime + EXPIRY_GRACE,
        };
        self.grants.insert(token.clone().into_boxed_str(), grant);
        Ok(token)
    }

    /// What `presented` (a bearer value or `fueloauth` text) stands for.
    pub fn resolve(&self, presented: &str) -> Presented {
        let presented = presented.trim();
        if !presented.starts_with(LOCAL_TOKEN_PREFIX) {
            return Presented::Foreign;
        }
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
            None => Presented::Invalid,
        }
    }
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
        let a = tokens.issue(key("1")).expect("issue");
        let b = tokens.issue(key("2")).expect("issue");
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
}
