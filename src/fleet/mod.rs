//! The fleet: what replicas of the proxy share through Redis (`[redis]`),
//! so that they behave as one — one token per (tenant, business unit,
//! scope) for all of them. `tokens` is the token source that makes it so,
//! `client` the Redis client, `seal` what protects what is stored and
//! names it, `health` whether Redis answers (metrics, logs, readiness),
//! `chains` a login's refresh tokens, `logins` the browser logins waiting
//! for their code, `probe` a ping every few seconds.
//!
//! Without `[redis]` nothing here runs.

mod chains;
mod client;
mod health;
mod logins;
mod probe;
mod seal;
mod tokens;

pub use client::RedisError;
pub use health::Health;
pub use probe::Probe;
pub use seal::Sealer;

use std::sync::Arc;

use crate::config::Settings;
use crate::login::LoginStates;
use crate::token::TokenSource;
use crate::token::store::ChainStore;
use chains::RedisChains;
use client::Redis;
use logins::RedisLogins;
use tokens::SharedTokens;

/// The fleet of one configuration with `[redis]`: its client and seal, from
/// which the token source and the logins' chain store are made.
pub struct Fleet {
    redis: Redis,
    sealer: Arc<Sealer>,
    settings: Arc<Settings>,
}

impl Fleet {
    /// For `settings`' `[redis]` (`None` without one); connects on first use.
    pub fn connect(settings: &Arc<Settings>, health: &Arc<Health>) -> Result<Option<Self>, String> {
        let Some(redis) = &settings.redis else {
            return Ok(None);
        };
        let sealer = Sealer::new(redis)
            .map_err(|_| "cannot derive the keys that seal Redis entries".to_owned())?;
        let client = Redis::new(redis, health.clone()).map_err(|e| e.to_string())?;
        Ok(Some(Self {
            redis: client,
            sealer: Arc::new(sealer),
            settings: settings.clone(),
        }))
    }

    /// Where logins keep their refresh tokens: Redis.
    pub fn chains(&self) -> Arc<dyn ChainStore> {
        let (redis, sealer) = (self.redis.clone(), self.sealer.clone());
        Arc::new(RedisChains::new(redis, sealer, self.settings.clone()))
    }

    /// Where browser logins wait for their code at `/_proxy/callback`:
    /// Redis, so any replica finishes them.
    pub fn logins(&self) -> Arc<dyn LoginStates> {
        Arc::new(RedisLogins::new(self.redis.clone(), self.sealer.clone()))
    }

    /// What seals and names the fleet's entries, and makes its MACs.
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// Pings Redis every few seconds while the returned probe lives, so
    /// that its health is known without waiting for a token lookup.
    pub fn probe(&self) -> Option<Probe> {
        Probe::start(self.redis.clone())
    }

    /// The token source that shares `sfmc`'s tokens with the fleet.
    pub fn tokens(&self, sfmc: Arc<dyn TokenSource>) -> Arc<dyn TokenSource> {
        let (redis, sealer) = (self.redis.clone(), self.sealer.clone());
        Arc::new(SharedTokens::new(
            sfmc,
            redis,
            sealer,
            self.settings.clone(),
        ))
    }
}
