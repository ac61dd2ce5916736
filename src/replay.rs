//! The replay-once rule, written once for REST and SOAP: when SFMC refuses
//! the token a request was sent with (REST: a 401; SOAP: a `Token Expired` or
//! `Login failed` fault), that exact token is dropped — unless a concurrent
//! request already replaced it — and the request goes out once more with a
//! fresh one, if its body was kept and unless a token was dropped for this
//! key moments ago (a 401 that no fresh token cures must not cost a token
//! request each time; see `TokenCache::invalidate`).
//!
//! Each API brings its own [`Exchange`]: how to send with a given token, how
//! to tell a refusal, whether the request can be sent again.

use http::Response;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::failures::token_failure;
use crate::route::Target;
use crate::telemetry::AccessRecord;
use crate::token::{Lease, Outcome, TokenCache};

/// What SFMC's answer says, beyond its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An answer to pass on.
    Answered,
    /// SFMC refused the token the request was sent with.
    TokenRefused,
    /// SFMC is throttling (a SOAP `Rate Limited` fault; REST's 429 and 503
    /// are told by their status).
    Throttled,
}

/// One request as an API sends it.
pub(crate) trait Exchange {
    /// Sends the request with `lease`'s token: SFMC's response, and what it says.
    async fn send(&mut self, lease: &Lease) -> Result<(Response<ProxyBody>, Verdict), ProxyError>;

    /// Whether the request can be sent once more (its body was kept).
    fn replayable(&self) -> bool;
}

/// Sends `exchange` with the target's token, and once more with a fresh one
/// if SFMC refused it and the rule above allows.
pub(crate) async fn replay_once(
    exchange: &mut impl Exchange,
    tokens: &TokenCache,
    target: &Target,
    record: &mut AccessRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let first = token_for(tokens, target).await?;
    record.token = Some(first.outcome);
    let (response, verdict) = timed_send(exchange, &first, record).await?;
    if verdict != Verdict::TokenRefused {
        return Ok(response);
    }
    let fresh_may_help = tokens.invalidate(&target.key, &first.token);
    if !fresh_may_help || !exchange.replayable() {
        return Ok(response);
    }
    // Not passed on: let its connection go now, not after the replay.
    drop(response);
    let fresh = token_for(tokens, target).await?;
    record.token = Some(Outcome::Fetch);
    record.replayed = true;
    Ok(timed_send(exchange, &fresh, record).await?.0)
}

/// One send, its time to SFMC's response head (or to the request's end, if
/// it goes away first) and status in the record.
async fn timed_send(
    exchange: &mut impl Exchange,
    lease: &Lease,
    record: &mut AccessRecord,
) -> Result<(Response<ProxyBody>, Verdict), ProxyError> {
    record.upstream_sent();
    let result = exchange.send(lease).await;
    let status = result.as_ref().ok().map(|(response, _)| response.status());
    record.upstream_answered(status);
    if let Ok((_, Verdict::Throttled)) = &result {
        record.throttled = true;
    }
    result
}

/// A valid token for the target, or the proxy's error naming its tenant.
pub(crate) async fn token_for(tokens: &TokenCache, target: &Target) -> Result<Lease, ProxyError> {
    tokens
        .get(&target.key)
        .await
        .map_err(|failure| token_failure(failure, &target.tenant.name))
}
