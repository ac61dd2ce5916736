//! A SOAP call: the envelope (read up to the end of its Header by `soap`) is
//! rewritten with each lease's token in `fueloauth`, and SFMC's
//! `Token Expired` / `Login failed` faults take the place of REST's 401 in
//! the replay, its `Rate Limited` fault that of REST's 429 in the retry
//! (the rules are `replay`'s).

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, header};

use super::{Forwarder, build_request, strip_response};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers::strip_request_headers;
use crate::replay::{self, Verdict};
use crate::route::Target;
use crate::soap::{self, Envelope, EnvelopeStart};
use crate::telemetry::{AccessRecord, X_REQUEST_ID};
use crate::throttle::{self, Throttling};
use crate::token::Lease;

impl Forwarder<'_> {
    /// Reads the rest of the envelope (held when it fits the replay limit),
    /// then sends it with the target's token, replaying once after a token fault.
    pub async fn soap(
        &self,
        parts: Parts,
        start: EnvelopeStart,
        target: Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        record.target(&target);
        let envelope = start.finish(self.replay_limit).await?;
        let mut headers = parts.headers;
        strip_request_headers(&mut headers);
        // Again after the strip: a client's `Connection: x-request-id` must
        // not keep from SFMC the id the log and the client are given.
        headers.insert(X_REQUEST_ID, record.request_id().clone());
        let mut exchange = SoapExchange {
            forwarder: self,
            method: parts.method,
            target: &target,
            replayable: envelope.replayable(self.replay_limit),
            headers,
            envelope,
        };
        self.send(&mut exchange, &target, record).await
    }
}

/// A SOAP request: the envelope is rewritten with each lease's token.
struct SoapExchange<'a> {
    forwarder: &'a Forwarder<'a>,
    method: Method,
    target: &'a Target,
    headers: HeaderMap,
    envelope: Envelope,
    replayable: bool,
}

impl SoapExchange<'_> {
    /// Sends the envelope with this lease's token to the tenant's SOAP
    /// instance, with a `Content-Length` that matches the rewrite; returns the
    /// response and whether it is a token fault.
    async fn send_with(
        &mut self,
        lease: &Lease,
    ) -> Result<(Response<ProxyBody>, Verdict), ProxyError> {
        let instance = lease.token.soap_instance.as_ref().ok_or_else(|| {
            ProxyError::UpstreamUnavailable(format!(
                "SFMC's token response for tenant `{}` had no soap_instance_url",
                self.target.tenant.name
            ))
        })?;
        let mut headers = self.headers.clone();
        let (body, length) = self.envelope.request_body(lease.token.access_token());
        match length {
            Some(length) => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length)),
            None => headers.remove(header::CONTENT_LENGTH),
        };
        let pq = &self.target.path_and_query;
        let request = build_request(self.method.clone(), instance, pq, headers, None, body)?;
        let response = self.forwarder.upstream.send(instance, request).await?;
        let (response, fault) = soap::inspect_response(response).await;
        let verdict = match fault {
            Some(soap::Fault::TokenRefused) => Verdict::TokenRefused,
            Some(soap::Fault::RateLimited) => Verdict::Throttled(Throttling::soap_rate_limited()),
            // A 429 or 503 before the SOAP service (SFMC's edge): counted,
            // and sent again only as the rule allows (a 503 never: POST).
            None if throttle::is_throttling(response.status()) => {
                let status = response.status();
                let headers = response.headers();
                Verdict::Throttled(Throttling::rest(status, headers, &self.method))
            }
            None => Verdict::Answered,
        };
        Ok((response, verdict))
    }
}

impl replay::Exchange for SoapExchange<'_> {
    async fn send(&mut self, lease: &Lease) -> Result<(Response<ProxyBody>, Verdict), ProxyError> {
        let (response, verdict) = self.send_with(lease).await?;
        Ok((strip_response(response), verdict))
    }

    fn replayable(&self) -> bool {
        self.replayable
    }
}
