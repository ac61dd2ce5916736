//! The two rules for sending a request again, written once for REST and SOAP.
//!
//! Replay once: when SFMC refuses the token a request was sent with (REST: a
//! 401; SOAP: a `Token Expired` or `Login failed` fault), that exact token is
//! dropped — unless a concurrent request already replaced it — and the
//! request goes out once more with a fresh one, if its body was kept and
//! unless a token was dropped for this key moments ago (a 401 that no fresh
//! token cures must not cost a token request each time; see
//! `TokenCache::invalidate`).
//!
//! Retry after throttling: when SFMC throttles a send (REST 429 or 503,
//! SOAP `Rate Limited`) and the tenant's `retry_throttled` rule allows (see
//! `throttle`), the proxy waits what SFMC asked and sends it again, with the
//! same token; each retry is logged, and every throttled answer counted.
//!
//! Each API brings its own [`Exchange`]: how to send with a given token, how
//! to tell a refusal or throttling, whether the request can be sent again.

use http::Response;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::failures::token_failure;
use crate::route::Target;
use crate::telemetry::AccessRecord;
use crate::throttle::{self, RetryRule};
use crate::token::{Lease, Outcome, TokenCache};

/// What SFMC's answer says, beyond its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An answer to pass on.
    Answered,
    /// SFMC refused the token the request was sent with.
    TokenRefused,
    /// SFMC is throttling (REST 429 or 503, a SOAP `Rate Limited` fault),
    /// as this says.
    Throttled(throttle::Throttling),
}

/// One request as an API sends it.
pub(crate) trait Exchange {
    /// Sends the request with `lease`'s token: SFMC's response, and what it says.
    async fn send(&mut self, lease: &Lease) -> Result<(Response<ProxyBody>, Verdict), ProxyError>;

    /// Whether the request can be sent once more (its body was kept).
    fn replayable(&self) -> bool;
}

/// Sends `exchange` with the target's token, and once more with a fresh one
/// if SFMC refused it and the rule above allows; each send is retried after
/// throttling as `retry` allows (at most `throttle::MAX_RETRIES` in all).
pub(crate) async fn replay_once(
    exchange: &mut impl Exchange,
    tokens: &TokenCache,
    target: &Target,
    retry: RetryRule,
    record: &mut AccessRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    let first = token_for(tokens, target).await?;
    record.token = Some(first.outcome);
    let mut send = Sender {
        target,
        retry,
        record,
    };
    let (response, verdict) = send.patiently(exchange, &first).await?;
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
    send.record.token = Some(Outcome::Fetch);
    send.record.replayed = true;
    Ok(send.patiently(exchange, &fresh).await?.0)
}

/// The sends of one request: its target, retry rule and record.
struct Sender<'a, 'r> {
    target: &'a Target,
    retry: RetryRule,
    record: &'r mut AccessRecord,
}

impl Sender<'_, '_> {
    /// One send with `lease`, sent again after throttling while the retry
    /// rule allows; SFMC's last answer and what it says.
    async fn patiently(
        &mut self,
        exchange: &mut impl Exchange,
        lease: &Lease,
    ) -> Result<(Response<ProxyBody>, Verdict), ProxyError> {
        loop {
            let (response, verdict) = self.timed(exchange, lease).await?;
            let Verdict::Throttled(throttling) = verdict else {
                return Ok((response, verdict));
            };
            let retries = self.record.throttle_retries;
            let wait = match self
                .retry
                .decide(throttling, retries, exchange.replayable())
            {
                Ok(wait) => wait,
                Err(why) => {
                    if self.retry.enabled {
                        self.log_passed_on(response.status(), why);
                    }
                    return Ok((response, verdict));
                }
            };
            self.record.throttle_retries += 1;
            tracing::info!(
                request_id = self.record.request_id().to_str().unwrap_or("-"),
                tenant = %self.target.tenant.name,
                api = self.target.api.as_str(),
                status = response.status().as_u16(),
                wait = %humantime::format_duration(wait),
                retry = retries + 1,
                of = throttle::MAX_RETRIES,
                "SFMC is throttling the tenant; sending the request again after the wait SFMC asked for"
            );
            // Not passed on: let its connection go before the wait.
            drop(response);
            let wait = throttle::jittered(wait);
            tokio::time::sleep(wait).await;
            let waited = self.record.throttle_wait.unwrap_or_default() + wait;
            self.record.throttle_wait = Some(waited);
        }
    }

    fn log_passed_on(&self, status: http::StatusCode, why: throttle::PassOn) {
        tracing::info!(
            request_id = self.record.request_id().to_str().unwrap_or("-"),
            tenant = %self.target.tenant.name,
            api = self.target.api.as_str(),
            status = status.as_u16(),
            "SFMC is throttling the tenant; its answer goes to the client, not retried: {why}"
        );
    }

    /// One send, its time to SFMC's response head (or to the request's end,
    /// if it goes away first), status and throttling in the record.
    async fn timed(
        &mut self,
        exchange: &mut impl Exchange,
        lease: &Lease,
    ) -> Result<(Response<ProxyBody>, Verdict), ProxyError> {
        self.record.upstream_sent();
        let result = exchange.send(lease).await;
        let status = result.as_ref().ok().map(|(response, _)| response.status());
        self.record.upstream_answered(status);
        if let Ok((_, Verdict::Throttled(_))) = &result {
            self.record.throttled += 1;
        }
        result
    }
}

/// A valid token for the target, or the proxy's error naming its tenant.
pub(crate) async fn token_for(tokens: &TokenCache, target: &Target) -> Result<Lease, ProxyError> {
    tokens
        .get(&target.key)
        .await
        .map_err(|failure| token_failure(failure, &target.tenant.name))
}
