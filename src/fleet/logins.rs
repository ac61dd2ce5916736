//! Browser logins waiting for their code, kept in Redis for the fleet (see
//! `login::states`): begun on one replica, finished on whichever the
//! browser comes back to. Each is sealed under a name made from its
//! `state` (the PKCE verifier never reads in Redis) and taken with `GETDEL`,
//! so a code is exchanged once, whichever replica gets it.
//!
//! A `state` is a random nonce and its MAC under the fleet's key: any
//! replica tells one the fleet made from a made-up one without asking Redis,
//! so a stranger's requests to `/_proxy/callback` cost no round trip.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::client::Redis;
use super::seal::Sealer;
use crate::login::{LOGIN_WAIT, LoginStates, Started, StatesFuture};

/// The hex characters of a state's nonce, and of its MAC (both 16 bytes).
const PART: usize = 32;

pub struct RedisLogins {
    redis: Redis,
    sealer: Arc<Sealer>,
}

impl RedisLogins {
    pub fn new(redis: Redis, sealer: Arc<Sealer>) -> Self {
        Self { redis, sealer }
    }

    /// The MAC half of `nonce`'s state.
    fn mac(&self, nonce: &str) -> String {
        let mut tag = self.sealer.tag("login-state", &[nonce]);
        tag.truncate(PART);
        tag
    }

    /// Whether the fleet made `state`.
    fn made_here(&self, state: &str) -> bool {
        if state.len() != 2 * PART || !state.is_ascii() {
            return false;
        }
        let (nonce, mac) = state.split_at(PART);
        bool::from(self.mac(nonce).as_bytes().ct_eq(mac.as_bytes()))
    }

    fn name(&self, state: &str) -> String {
        self.sealer.name("login", &[state])
    }
}

impl LoginStates for RedisLogins {
    fn mint(&self) -> Result<String, rustls::Error> {
        let nonce = crate::tls::random_hex(PART / 2)?;
        let mac = self.mac(&nonce);
        Ok(nonce + &mac)
    }

    fn put<'a>(&'a self, state: &'a str, started: Started) -> StatesFuture<'a, ()> {
        Box::pin(async move {
            let name = self.name(state);
            let plain = serde_json::to_vec(&started).map_err(|e| e.to_string())?;
            let sealed = self.sealer.seal(&name, &plain);
            if sealed.is_empty() {
                return Err("cannot seal the login (the system's random source failed)".into());
            }
            self.redis
                .set(&name, &sealed, LOGIN_WAIT)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn take<'a>(&'a self, state: &'a str) -> StatesFuture<'a, Option<Started>> {
        Box::pin(async move {
            if !self.made_here(state) {
                return Ok(None);
            }
            let name = self.name(state);
            let Some(sealed) = self.redis.take(&name).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            // What does not open is not a login of this fleet's.
            let started = self
                .sealer
                .open(&name, &sealed)
                .and_then(|plain| serde_json::from_slice(&plain).ok());
            Ok(started)
        })
    }
}
