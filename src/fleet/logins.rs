//! Browser logins waiting for their code, kept in Redis for the fleet (see
//! `login::states`): begun on one replica, finished on whichever the
//! browser comes back to. Each is sealed under a name made from its
//! `state` (the PKCE verifier never reads in Redis) and taken with `GETDEL`,
//! so a code is exchanged once, whichever replica gets it.
//!
//! A `state` is `NONCE.EXPIRY.MAC`: a random nonce, when it stops working
//! (Unix seconds) and a MAC of both under the fleet's key (or the previous
//! one, during a rotation). Any replica refuses a made-up or stale one
//! without asking Redis, so a stranger's requests to `/_proxy/callback`
//! cost no round trip.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::client::Redis;
use super::seal::Sealer;
use crate::login::{LOGIN_WAIT, LoginStates, Started, StatesFuture};

/// The hex characters of a state's MAC (16 bytes).
const MAC_CHARS: usize = 32;

/// The MAC's kind (see `Sealer::tag`).
const KIND: &str = "login-state";

pub struct RedisLogins {
    redis: Redis,
    sealer: Arc<Sealer>,
}

impl RedisLogins {
    pub fn new(redis: Redis, sealer: Arc<Sealer>) -> Self {
        Self { redis, sealer }
    }

    /// Whether the fleet made `state` and it has not expired at `now`
    /// (Unix seconds).
    fn live(&self, state: &str, now: u64) -> bool {
        let mut parts = state.split('.');
        let (Some(nonce), Some(expiry), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let fresh = expiry.parse::<u64>().is_ok_and(|expiry| now < expiry);
        fresh
            && self
                .sealer
                .verify_tag(KIND, &[nonce, expiry], mac, MAC_CHARS)
    }

    /// Where `state`'s login is kept: under the current key's name, and
    /// the previous key's during a rotation.
    fn names(&self, state: &str) -> impl Iterator<Item = String> {
        let current = self.sealer.name("login", &[state]);
        std::iter::once(current).chain(self.sealer.previous_name("login", &[state]))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl LoginStates for RedisLogins {
    fn mint(&self) -> Result<String, rustls::Error> {
        let nonce = crate::tls::random_hex(16)?;
        let expiry = (unix_now() + LOGIN_WAIT.as_secs()).to_string();
        let mut mac = self.sealer.tag(KIND, &[&nonce, &expiry]);
        mac.truncate(MAC_CHARS);
        Ok(format!("{nonce}.{expiry}.{mac}"))
    }

    fn put<'a>(&'a self, state: &'a str, started: Started) -> StatesFuture<'a, ()> {
        Box::pin(async move {
            let name = self.sealer.name("login", &[state]);
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
            if !self.live(state, unix_now()) {
                return Ok(None);
            }
            for name in self.names(state) {
                let Some(sealed) = self.redis.take(&name).await.map_err(|e| e.to_string())? else {
                    continue;
                };
                // What does not open is not a login of this fleet's.
                let started = self
                    .sealer
                    .open(&name, &sealed)
                    .and_then(|plain| serde_json::from_slice(&plain).ok());
                return Ok(started);
            }
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisSettings;
    use crate::fleet::Health;

    fn logins(key: &str, previous: Option<&str>) -> RedisLogins {
        let settings = RedisSettings::for_tests(key, previous);
        let redis = Redis::new(&settings, Arc::new(Health::new())).expect("lazy client");
        RedisLogins::new(redis, Arc::new(Sealer::new(&settings).expect("keys")))
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const NEW_KEY: &str = "fedcba9876543210fedcba9876543210";

    // A runtime: the lazy client wants one, though it never connects here.
    #[tokio::test]
    async fn only_a_live_state_the_fleet_made_is_looked_up() {
        let fleet = logins(KEY, None);
        let state = fleet.mint().expect("state");
        let now = unix_now();
        assert!(fleet.live(&state, now), "{state}");
        assert!(!fleet.live(&state, now + LOGIN_WAIT.as_secs() + 1), "stale");
        let (nonce, rest) = state.split_once('.').expect("parts");
        let (expiry, mac) = rest.split_once('.').expect("parts");
        let later = format!("{nonce}.{}.{mac}", expiry.parse::<u64>().expect("n") + 3600);
        assert!(!fleet.live(&later, now), "a longer life is not the fleet's");
        let mut flipped = state.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(!fleet.live(&flipped, now), "a made-up MAC");
        assert!(!fleet.live("0123", now) && !fleet.live("a.b.c.d", now));
        assert!(!logins(NEW_KEY, None).live(&state, now), "another fleet's");
        // During a rotation the new key's replicas take the old key's states.
        assert!(logins(NEW_KEY, Some(KEY)).live(&state, now));
    }
}
