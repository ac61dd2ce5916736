//! Forwarding: the rewrite of a client request into an SFMC request (sent by
//! [`crate::upstream`]), the preparation of the request body for a possible
//! replay, the tenant's request slot (`slots`), and each API's send (`rest`,
//! `soap`) as an `Exchange` for the rules in `crate::replay` (replay once
//! after a refused token, retry after throttling).
//!
//! Bodies stream: only a body small enough to replay (`replay_body_limit`,
//! announced by `Content-Length`) is held in memory; everything else flows
//! through frame by frame.

mod rest;
mod slots;
mod soap;

pub use slots::Slots;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::body::{ClientBody, ProxyBody};
use crate::config::Tenant;
use crate::error::{ProxyError, error_chain};
use crate::headers::strip_hop_by_hop;
use crate::replay::{self, Exchange};
use crate::route::Target;
use crate::telemetry::AccessRecord;
use crate::throttle::RetryRule;
use crate::token::{Token, TokenCache};
use crate::upstream::{InstanceBase, Upstream};

/// What forwarding a request uses of the proxy: the client to SFMC, the
/// token cache, how much of a body is held for a replay, the tenants'
/// request slots, and the longest `Retry-After` waited out.
pub struct Forwarder<'a> {
    pub upstream: &'a Upstream<ProxyBody>,
    pub tokens: &'a TokenCache,
    pub replay_limit: usize,
    pub slots: &'a Slots,
    pub max_retry_wait: std::time::Duration,
}

impl Forwarder<'_> {
    /// Sends `exchange` under the rules of `replay`, holding one of the
    /// tenant's request slots (if it has a limit) until SFMC's response ends.
    async fn send(
        &self,
        exchange: &mut impl Exchange,
        target: &Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let taken = self.slots.take(&target.tenant).await?;
        if let Some(taken) = &taken {
            record.queued = Some(taken.waited);
        }
        let retry = self.retry_rule(&target.tenant);
        let response = replay::replay_once(exchange, self.tokens, target, retry, record).await?;
        Ok(match taken {
            Some(taken) => response.map(|body| ProxyBody::Holding(Box::new(body), taken.slot)),
            None => response,
        })
    }

    fn retry_rule(&self, tenant: &Tenant) -> RetryRule {
        RetryRule {
            enabled: tenant.retry_throttled,
            max_wait: self.max_retry_wait,
        }
    }
}

/// A request body ready to send: held (and so replayable after a 401) or streamed.
pub enum OutboundBody {
    Replayable(Bytes),
    Streaming(ClientBody),
}

impl OutboundBody {
    /// Holds the body only when it is known to fit in `limit` bytes.
    pub async fn prepare(body: ClientBody, limit: usize) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(Self::Replayable(Bytes::new()));
        }
        let fits = body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= limit as u64);
        if !fits {
            return Ok(Self::Streaming(body));
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(Self::Replayable(collected.to_bytes())),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(ProxyError::BodyTooLarge { limit })
            }
            Err(error) => Err(ProxyError::BadRequest(format!(
                "could not read the request body: {}",
                error_chain(&*error)
            ))),
        }
    }

    /// The held bytes, if this body can be sent again.
    pub fn replay_copy(&self) -> Option<Bytes> {
        match self {
            Self::Replayable(bytes) => Some(bytes.clone()),
            Self::Streaming(_) => None,
        }
    }

    pub fn into_body(self) -> ProxyBody {
        match self {
            Self::Replayable(bytes) => ProxyBody::full(bytes),
            Self::Streaming(body) => ProxyBody::Stream(body),
        }
    }
}

/// The upstream request: the instance URL plus the client's path and query byte
/// for byte, the client's headers (already stripped of hop-by-hop, control and
/// credential headers) and, for REST, the token's `Authorization` (SOAP carries
/// it in the envelope instead).
pub fn build_request(
    method: Method,
    instance: &InstanceBase,
    path_and_query: &PathAndQuery,
    mut headers: HeaderMap,
    bearer: Option<&Token>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, ProxyError> {
    let uri = instance
        .origin_form(path_and_query)
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
    if let Some(token) = bearer {
        headers.insert(header::AUTHORIZATION, token.bearer().clone());
    }
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// A response from SFMC minus its hop-by-hop headers.
fn strip_response(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    strip_hop_by_hop(response.headers_mut());
    response
}
