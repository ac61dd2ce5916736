//! Logins whose code comes back to the proxy's own `/_proxy/callback` (a
//! `redirect_uri` behind a TLS front, see `config::proxy_callback_host`):
//! what each one began, kept under its `state` from the redirect to SFMC
//! until the browser returns — in this process ([`LocalStates`]) or, with
//! `[redis]`, in Redis, sealed (`fleet::RedisLogins`), so that the replica
//! the browser comes back to finishes what another began. A state works
//! once, for [`LOGIN_WAIT`] at most.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::LOGIN_WAIT;
use crate::sync::lock;

/// What a login began with, and what its code exchange needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub tenant: String,
    pub account_id: Option<String>,
    /// What the tenant's package was when the login began (see
    /// [`package_of`]): after a reload that changed it, the code is not
    /// exchanged with the new one.
    pub package: String,
    /// A hash of the browser's login cookie: only the browser that began
    /// the login finishes it (RFC 6749 §10.12), not one it was sent to.
    pub browser: String,
    /// PKCE's verifier (`None` with `pkce = false`).
    pub code_verifier: Option<String>,
}

/// A digest of what a login's code is exchanged under: the auth URL, the
/// client id, the grant (app type, redirect URI, PKCE). No secret goes in.
pub fn package_of(tenant: &crate::config::Tenant) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in [
        tenant.token_url.as_str(),
        tenant.client_id.as_str(),
        &format!("{:?}", tenant.grant),
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    data_encoding::HEXLOWER.encode(&digest.finalize())
}

/// The verifier is a secret of the login's: never shown.
impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("tenant", &self.tenant)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

pub type StatesFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where logins wait for their code, by `state`.
pub trait LoginStates: Send + Sync {
    /// A new `state`, of a form only this store makes (so a made-up one is
    /// refused without a look-up).
    fn mint(&self) -> Result<String, rustls::Error>;

    /// Keeps `started` under `state` for [`LOGIN_WAIT`].
    fn put<'a>(&'a self, state: &'a str, started: Started) -> StatesFuture<'a, ()>;

    /// What `state` began, removed as it is read: `None` when no login
    /// waits under it (finished, expired, or never begun here). An error is
    /// the store's (Redis did not answer); the login is then still there.
    fn take<'a>(&'a self, state: &'a str) -> StatesFuture<'a, Option<Started>>;
}

/// At most this many logins wait in one process: a caller with the key
/// clicking `/_proxy/login` in a loop pushes out its own oldest, not memory.
const MAX_WAITING: usize = 64;

/// Logins waiting in this process, shared by every configuration
/// generation (a reload does not lose one).
#[derive(Default)]
pub struct LocalStates(Mutex<HashMap<String, (Started, Instant)>>);

impl LoginStates for LocalStates {
    fn mint(&self) -> Result<String, rustls::Error> {
        crate::tls::random_hex(16)
    }

    fn put<'a>(&'a self, state: &'a str, started: Started) -> StatesFuture<'a, ()> {
        let now = Instant::now();
        let mut waiting = lock(&self.0);
        waiting.retain(|_, (_, began)| now.duration_since(*began) < LOGIN_WAIT);
        if waiting.len() >= MAX_WAITING
            && let Some(oldest) = waiting
                .iter()
                .min_by_key(|(_, (_, began))| *began)
                .map(|(state, _)| state.clone())
        {
            waiting.remove(&oldest);
        }
        waiting.insert(state.to_owned(), (started, now));
        Box::pin(std::future::ready(Ok(())))
    }

    fn take<'a>(&'a self, state: &'a str) -> StatesFuture<'a, Option<Started>> {
        let taken = lock(&self.0).remove(state);
        let live = taken
            .filter(|(_, began)| began.elapsed() < LOGIN_WAIT)
            .map(|(started, _)| started);
        Box::pin(std::future::ready(Ok(live)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(tenant: &str) -> Started {
        Started {
            tenant: tenant.into(),
            account_id: None,
            package: "p".into(),
            browser: "b".into(),
            code_verifier: Some("verifier".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_works_once_and_not_after_the_wait() {
        let states = LocalStates::default();
        let (once, late) = (states.mint().expect("state"), states.mint().expect("state"));
        assert_ne!(once, late);
        states.put(&once, started("a")).await.expect("put");
        states.put(&late, started("b")).await.expect("put");
        assert_eq!(states.take(&once).await.expect("take"), Some(started("a")));
        assert_eq!(states.take(&once).await.expect("again"), None);
        tokio::time::advance(LOGIN_WAIT).await;
        assert_eq!(states.take(&late).await.expect("late"), None);
        assert!(!format!("{:?}", started("a")).contains("verifier"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_login_makes_room_when_too_many_wait() {
        let states = LocalStates::default();
        let first = states.mint().expect("state");
        states.put(&first, started("first")).await.expect("put");
        for _ in 0..MAX_WAITING {
            tokio::time::advance(std::time::Duration::from_millis(1)).await;
            let state = states.mint().expect("state");
            states.put(&state, started("later")).await.expect("put");
        }
        assert_eq!(lock(&states.0).len(), MAX_WAITING);
        assert_eq!(states.take(&first).await.expect("take"), None);
    }
}
