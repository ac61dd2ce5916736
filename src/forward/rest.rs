//! A REST call: the token in `Authorization`, the client's body streamed or
//! held, a resend on a fresh connection if a kept-alive one closes under an
//! idempotent request, the replay after a 401 and the retry after a 429 or
//! 503 (the rules are `replay`'s).

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::{Forwarder, OutboundBody, build_request, strip_response};
use crate::body::{ClientBody, ProxyBody, SfmcBody};
use crate::error::ProxyError;
use crate::headers::strip_request_headers;
use crate::replay::{self, Verdict};
use crate::route::Target;
use crate::telemetry::{AccessRecord, X_REQUEST_ID};
use crate::throttle::{self, Throttling};
use crate::token::Lease;
use crate::upstream::Upstream;

impl Forwarder<'_> {
    /// Credential, forward and respond, with one replay after a 401 and
    /// the retries after throttling that the tenant's rule allows.
    pub async fn rest(
        &self,
        parts: Parts,
        body: ClientBody,
        target: &Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let body = OutboundBody::prepare(body, self.replay_limit).await?;
        let mut headers = parts.headers;
        strip_request_headers(&mut headers);
        // Again after the strip: a client's `Connection: x-request-id` must
        // not keep from SFMC the id the log and the client are given.
        headers.insert(X_REQUEST_ID, record.request_id().clone());
        let mut exchange = RestExchange {
            upstream: self.upstream,
            method: parts.method,
            target,
            replay: body.replay_copy().map(|bytes| (bytes, headers.clone())),
            first: Some((headers, body)),
        };
        self.send(&mut exchange, target, record).await
    }
}

/// A REST request: sent first with the client's body (streamed or held),
/// resent on a fresh connection if a kept-alive one closes under it, and
/// sent again from the held copy after a 401 or throttling.
struct RestExchange<'a> {
    upstream: &'a Upstream<ProxyBody>,
    method: Method,
    target: &'a Target,
    /// The headers and body of the first send (taken by it).
    first: Option<(HeaderMap, OutboundBody)>,
    /// A copy of both when the body was held (each later send clones it).
    replay: Option<(Bytes, HeaderMap)>,
}

impl RestExchange<'_> {
    /// The request for SFMC with a lease's token.
    fn request(
        &self,
        lease: &Lease,
        headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        let (method, instance) = (self.method.clone(), &lease.token.rest_instance);
        let pq = &self.target.path_and_query;
        build_request(method, instance, pq, headers, Some(&*lease.token), body)
    }
}

impl replay::Exchange for RestExchange<'_> {
    async fn send(&mut self, lease: &Lease) -> Result<(Response<ProxyBody>, Verdict), ProxyError> {
        let instance = &lease.token.rest_instance;
        // The first send takes the client's body (streamed or held); a later
        // one (a replay, a retry) the held copy.
        let request = match self.first.take() {
            Some((headers, body)) => self.request(lease, headers, body.into_body())?,
            None => {
                let (bytes, headers) = self.replay.clone().ok_or_else(|| {
                    ProxyError::Internal("a streamed REST request was sent again".into())
                })?;
                self.request(lease, headers, ProxyBody::full(bytes))?
            }
        };
        // Sent again once if a kept-alive connection closes under it: only
        // an idempotent request with its body held.
        let resend = self
            .replay
            .as_ref()
            .filter(|_| self.method.is_idempotent())
            .map(|(bytes, headers)| {
                || self.request(lease, headers.clone(), ProxyBody::full(bytes.clone()))
            });
        let response = self
            .upstream
            .send_or_resend(instance, request, resend)
            .await?;
        let verdict = match response.status() {
            StatusCode::UNAUTHORIZED => Verdict::TokenRefused,
            status if throttle::is_throttling(status) => {
                let throttling = Throttling::rest(status, response.headers(), &self.method);
                Verdict::Throttled(throttling)
            }
            _ => Verdict::Answered,
        };
        Ok((respond(response), verdict))
    }

    fn replayable(&self) -> bool {
        self.replay.is_some()
    }
}

/// SFMC's response as is — status, headers, streamed body — minus hop-by-hop headers.
fn respond(response: Response<SfmcBody>) -> Response<ProxyBody> {
    strip_response(response.map(ProxyBody::Upstream))
}
