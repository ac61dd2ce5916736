//! A login's refresh-token chain in Redis, for a fleet (`[redis]` with an
//! authorization-code tenant): each link sealed like every other entry
//! (see `seal`), beside its version, and a successor stored only after the
//! link it replaces (compare-and-set on the version, in Lua), so that a
//! refresh token is redeemed once for the whole fleet. The refresh itself
//! runs under the key's fleet lock (`tokens`); the version check is what
//! keeps a lease that ran out from forking the chain.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::Redis;
use super::seal::Sealer;
use crate::config::{Secret, Settings};
use crate::token::store::{ChainError, ChainFuture, ChainStore, Link};

/// How long a link is kept without a refresh: SFMC's refresh tokens last
/// 30 days by default; a login unused for three times that is gone.
const LINK_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// What is sealed in a link.
#[derive(Serialize, Deserialize)]
struct Sealed {
    refresh_token: String,
}

/// The fleet's chains, for one configuration.
pub struct RedisChains {
    redis: Redis,
    sealer: Arc<Sealer>,
    settings: Arc<Settings>,
}

impl RedisChains {
    pub fn new(redis: Redis, sealer: Arc<Sealer>, settings: Arc<Settings>) -> Self {
        Self {
            redis,
            sealer,
            settings,
        }
    }

    /// The link's name: the package and the business unit.
    fn name(&self, tenant: &str, account_id: Option<&str>) -> Result<String, ChainError> {
        let configured = self.settings.tenant(tenant).ok_or_else(|| {
            ChainError::Unavailable(format!("tenant `{tenant}` is not configured"))
        })?;
        let parts = [
            tenant,
            configured.token_url.as_str(),
            configured.client_id.as_str(),
            account_id.unwrap_or(""),
        ];
        Ok(self.sealer.name("login", &parts))
    }

    async fn load_link(
        &self,
        tenant: &str,
        account_id: Option<&str>,
    ) -> Result<Option<Link>, ChainError> {
        let name = self.name(tenant, account_id)?;
        let stored = self.redis.link(&name).await.map_err(unavailable)?;
        let Some((version, sealed)) = stored else {
            return Ok(None);
        };
        // A link that does not open (another key, tampered) is no login.
        let opened = self.sealer.open(&name, &sealed);
        let link = opened.and_then(|plain| serde_json::from_slice::<Sealed>(&plain).ok());
        Ok(link.map(|link| Link {
            refresh_token: Secret::new(link.refresh_token),
            version,
        }))
    }

    async fn save_link(
        &self,
        tenant: &str,
        account_id: Option<&str>,
        refresh_token: &str,
        after: Option<u64>,
    ) -> Result<(), ChainError> {
        let name = self.name(tenant, account_id)?;
        let plain = serde_json::to_vec(&Sealed {
            refresh_token: refresh_token.to_owned(),
        })
        .map_err(|e| ChainError::Unavailable(e.to_string()))?;
        let sealed = self.sealer.seal(&name, &plain);
        if sealed.is_empty() {
            return Err(ChainError::Unavailable(
                "the system's random source failed: the refresh token could not be sealed".into(),
            ));
        }
        let saved = self.redis.save_link(&name, after, &sealed, LINK_TTL).await;
        match saved.map_err(unavailable)? {
            Some(_) => Ok(()),
            None => Err(ChainError::Conflict),
        }
    }
}

fn unavailable(error: super::RedisError) -> ChainError {
    ChainError::Unavailable(error.to_string())
}

impl ChainStore for RedisChains {
    fn load<'a>(
        &'a self,
        tenant: &'a str,
        account_id: Option<&'a str>,
    ) -> ChainFuture<'a, Option<Link>> {
        Box::pin(self.load_link(tenant, account_id))
    }

    fn save<'a>(
        &'a self,
        tenant: &'a str,
        account_id: Option<&'a str>,
        refresh_token: &'a str,
        after: Option<u64>,
    ) -> ChainFuture<'a, ()> {
        Box::pin(self.save_link(tenant, account_id, refresh_token, after))
    }
}
