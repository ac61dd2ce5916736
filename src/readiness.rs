//! Per-tenant readiness: each tenant's [`State`], read from its default
//! business unit's token, and the `server.ready_requires` rule that makes one
//! answer of them for plain `/_proxy/ready`.
//!
//! A probe costs SFMC nothing the cache would not spend anyway: a valid token
//! is a cache hit (a stale one starts the refresh traffic would start), a key
//! or tenant in backoff answers with its refusal and sends nothing, and a
//! fetch already in flight (the start-up prefetch, a request's) is reported,
//! not joined, so a probe never waits on a hanging token endpoint it did not
//! call. Only a tenant with neither a token nor a fetch in flight nor an open
//! backoff window is fetched for, once per window — which is also what lets a
//! failing tenant recover without traffic.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{ReadyRequires, Tenant};
use crate::error::ProxyError;
use crate::failures::token_failure;
use crate::token::{Attempt, TokenCache, TokenError, TokenFailure, TokenKey};

/// Where a tenant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A valid token, or the last fetch succeeded.
    Ready,
    /// The first fetch (the start-up prefetch, usually) has not finished.
    Starting,
    /// An authorization-code tenant with no usable refresh token: a person
    /// must log in.
    LoginRequired,
    /// The last fetch failed (the report carries SFMC's words).
    Failing,
    /// Serving, but with something it depends on impaired: the fleet's
    /// Redis is down, so each replica fetches its own tokens.
    Degraded,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Starting => "starting",
            Self::LoginRequired => "login_required",
            Self::Failing => "failing",
            Self::Degraded => "degraded",
        }
    }

    /// Whether the tenant serves requests: `ready` or `degraded`.
    pub fn serving(self) -> bool {
        matches!(self, Self::Ready | Self::Degraded)
    }
}

/// How long a probe waits for a fetch it started before answering `starting`.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// One tenant's state and what explains it.
#[derive(Debug)]
pub struct Report {
    pub state: State,
    /// Time left on the token, when there is one.
    pub expires_in: Option<Duration>,
    /// Why it is not ready: the error a request would get.
    pub error: Option<ProxyError>,
    /// Why it is `degraded`, when it is.
    pub degraded: Option<String>,
}

impl Report {
    /// A first fetch still in flight: nothing to say yet but that.
    fn starting() -> Self {
        Self {
            state: State::Starting,
            expires_in: None,
            error: None,
            degraded: None,
        }
    }

    /// `ready` becomes `degraded` (for `why`): the fleet's Redis is down.
    pub fn degrade(&mut self, why: String) {
        if self.state == State::Ready {
            self.state = State::Degraded;
            self.degraded = Some(why);
        }
    }
}

/// Each tenant's report, in the order given. Every tenant's fetch (where one
/// is needed) is started before any is waited for, so they run side by side.
/// One deadline for all of them: a probe over many tenants waits
/// [`PROBE_WAIT`] at most in all, not once per tenant.
pub async fn check_all(tenants: &[Arc<Tenant>], tokens: &TokenCache) -> Vec<Report> {
    let deadline = Instant::now() + PROBE_WAIT;
    let attempts: Vec<_> = tenants.iter().map(|t| start(t, tokens)).collect();
    let mut reports = Vec::with_capacity(attempts.len());
    for (tenant, attempt) in tenants.iter().zip(attempts) {
        reports.push(finish(tenant, attempt, deadline).await);
    }
    reports
}

/// One tenant's report.
pub async fn check(tenant: &Tenant, tokens: &TokenCache) -> Report {
    finish(tenant, start(tenant, tokens), Instant::now() + PROBE_WAIT).await
}

fn start(tenant: &Tenant, tokens: &TokenCache) -> Result<Attempt, ProxyError> {
    let key = TokenKey::for_tenant(tenant, None, None)?;
    Ok(tokens.try_get(&key))
}

async fn finish(
    tenant: &Tenant,
    attempt: Result<Attempt, ProxyError>,
    deadline: Instant,
) -> Report {
    let result = match attempt {
        Ok(Attempt::Done(result)) => result,
        // The fetch runs in its own task: a probe waits for it a moment at
        // most (a hung auth host must not hang the probe), then says `starting`.
        Ok(Attempt::Started(fetch)) => {
            match tokio::time::timeout_at(deadline, fetch.finish()).await {
                Ok(result) => result,
                Err(_) => return Report::starting(),
            }
        }
        Ok(Attempt::Busy {
            last: Some(failure),
            ..
        }) => Err(failure),
        // A re-fetch in flight for a key whose last fetch succeeded: the
        // tenant was serving and nothing says it stopped.
        Ok(Attempt::Busy {
            last: None,
            succeeded_before: true,
        }) => {
            return Report {
                state: State::Ready,
                expires_in: None,
                error: None,
                degraded: None,
            };
        }
        Ok(Attempt::Busy { last: None, .. }) => return Report::starting(),
        Err(refused) => return failing(State::Failing, refused),
    };
    match result {
        Ok(lease) => Report {
            state: State::Ready,
            expires_in: Some(
                lease
                    .token
                    .expires_at
                    .saturating_duration_since(Instant::now()),
            ),
            error: None,
            degraded: None,
        },
        Err(failure) => refused(tenant, failure),
    }
}

fn refused(tenant: &Tenant, failure: TokenFailure) -> Report {
    let state = match failure.error {
        TokenError::LoginRequired { .. } => State::LoginRequired,
        _ => State::Failing,
    };
    failing(state, token_failure(failure, &tenant.name))
}

fn failing(state: State, error: ProxyError) -> Report {
    Report {
        state,
        expires_in: None,
        error: Some(error),
        degraded: None,
    }
}

/// Plain `/_proxy/ready`: `all` — every tenant serving; `any` — at least one.
/// Tenants waiting for a login are left out (a person, not the proxy, has to
/// act), unless every tenant is one: then nothing can serve, and it says so.
pub fn overall(states: &[State], requires: ReadyRequires) -> bool {
    let counted: Vec<State> = states
        .iter()
        .copied()
        .filter(|state| *state != State::LoginRequired)
        .collect();
    let counted = if counted.is_empty() { states } else { &counted };
    match requires {
        ReadyRequires::All => !counted.is_empty() && counted.iter().all(|s| s.serving()),
        ReadyRequires::Any => counted.iter().any(|s| s.serving()),
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    #[test]
    fn all_needs_every_tenant_and_any_one() {
        use ReadyRequires::{All, Any};
        assert!(overall(&[Ready, Degraded], All));
        assert!(!overall(&[Ready, Failing], All));
        assert!(overall(&[Ready, Failing], Any));
        assert!(!overall(&[Starting, Failing], Any));
        assert!(!overall(&[Starting], All), "starting is not ready");
    }

    #[test]
    fn login_tenants_count_only_when_every_tenant_is_one() {
        use ReadyRequires::{All, Any};
        assert!(overall(&[Ready, LoginRequired], All), "left out");
        assert!(!overall(&[Failing, LoginRequired], Any));
        for requires in [All, Any] {
            assert!(!overall(&[LoginRequired, LoginRequired], requires));
        }
    }

    #[test]
    fn state_names_are_the_documented_ones() {
        let names: Vec<&str> = [Ready, Starting, LoginRequired, Failing, Degraded]
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            names,
            ["ready", "starting", "login_required", "failing", "degraded"]
        );
        assert!(Degraded.serving() && !Starting.serving());
    }
}
