//! The pipeline: one request through guard → route → credential → forward →
//! respond → record, in that order. Each phase lives in its own module; this
//! one only knows their order and the replay-once rule after a 401.

use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::body::{ClientBody, IdleTimeout, ProxyBody, Sender, SfmcBody};
use crate::broker::LocalTokens;
use crate::config::Settings;
use crate::error::ProxyError;
use crate::forward::{OutboundBody, build_request};
use crate::guard::Caller;
use crate::headers::{strip_hop_by_hop, strip_request_headers};
use crate::route::{Api, Route, Target};
use crate::telemetry::AccessRecord;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{Lease, Outcome, TokenCache};
use crate::upstream::Upstream;
use crate::{admin, broker, guard, route, soap, tls};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot build the token client: {0}")]
    TokenClient(#[from] reqwest::Error),
}

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    settings: Arc<Settings>,
    tokens: TokenCache,
    /// The `/v2/token` client behind `tokens`, also used for logins.
    client: Arc<SfmcTokenClient>,
    upstream: Upstream<ProxyBody>,
    /// Stand-in tokens the broker issued to SDK tools.
    locals: LocalTokens,
    /// Browser logins started at `/_proxy/login`, waiting for their redirect.
    pending_logins: admin::PendingLogins,
    /// Requests whose body is being read before their caller is known (a
    /// keyless SOAP call or broker token request): few at a time, so that
    /// strangers cannot make the proxy hold many bodies at once.
    unproven: Semaphore,
}

/// Keyless requests whose credential is read from the body, at once.
const MAX_UNPROVEN: usize = 128;

impl Proxy {
    pub fn new(settings: Arc<Settings>) -> Result<Self, BuildError> {
        let tls = tls::client_config(settings.upstream.ca_file.as_deref())?;
        let client = Arc::new(SfmcTokenClient::new(&settings, tls.clone())?);
        let tokens = TokenCache::configured(client.clone(), &settings.token);
        let upstream = Upstream::new(&settings.upstream, tls);
        let locals = LocalTokens::new(settings.broker.token_lifetime);
        Ok(Self {
            settings,
            tokens,
            client,
            upstream,
            locals,
            pending_logins: admin::PendingLogins::default(),
            unproven: Semaphore::new(MAX_UNPROVEN),
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Runs one request to completion of its response head; never fails: a
    /// failure becomes the proxy's own error response.
    pub async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let idle = self.settings.server.idle_timeout;
        let body = IdleTimeout::new(body, idle, Sender::Client);
        let mut record = AccessRecord::new(&parts);
        let soap_shaped = route::soap_shaped(&parts.method, parts.uri.path());
        let origin = guard::allowed_origin(&parts.headers, &self.settings.server);
        let mut response = match self.run(parts, body, &mut record).await {
            Ok(response) => response,
            Err(error) => {
                record.error = Some(error.code());
                // A SOAP client understands a Fault, not JSON; before routing
                // decided, the path tells.
                if record.api.map_or(soap_shaped, |api| api == Api::Soap) {
                    soap::fault_response(error)
                } else {
                    error.into_response()
                }
            }
        };
        if let Some(origin) = origin {
            guard::grant_origin(origin, &mut response);
        }
        record.finish(response.status(), started.elapsed());
        response
    }

    async fn run(
        &self,
        parts: Parts,
        body: ClientBody,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Liveness answers before the guard: it reveals nothing, and probes from
        // an orchestrator carry neither an allowed Host nor an inbound key.
        if parts.uri.path() == admin::HEALTH_PATH {
            return Ok(admin::health());
        }
        let server = &self.settings.server;
        guard::check(&parts, server)?;
        if let Some(answer) = guard::answer_locally(&parts, server) {
            return Ok(answer);
        }
        // Who is calling comes before routing, whose errors name tenants.
        let caller = guard::identify(&parts, server, &self.locals)?;
        if caller == Caller::Unproven {
            // A SOAP call without a key: read only a small prefix of the
            // envelope, within the head's deadline, for a local token in
            // `fueloauth`; nothing else is said to a caller who has not
            // proved who it is.
            let limit = self.settings.soap.preauth_limit;
            let start = {
                let _slot = self.unproven_slot()?;
                let read = soap::Envelope::start(body, &parts.headers, limit);
                match tokio::time::timeout(server.header_read_timeout, read).await {
                    Ok(Ok(start)) => start,
                    Ok(Err(_)) | Err(_) => return Err(ProxyError::InboundKeyRequired),
                }
            };
            let caller = caller.from_envelope(start.client_token(), &self.locals)?;
            return match route::route(&parts, &self.settings, caller.bound())? {
                Route::Api(target) if target.api == Api::Soap => {
                    Box::pin(self.forward_soap(parts, start, target, record)).await
                }
                _ => Err(ProxyError::BadRequest(
                    "a call that carries its local token in fueloauth must be POST /Service.asmx"
                        .into(),
                )),
            };
        }
        match route::route(&parts, &self.settings, caller.bound())? {
            Route::Admin => {
                // The admin paths take the inbound key itself, not a local token.
                if !matches!(caller, Caller::Key | Caller::Anonymous) {
                    return Err(ProxyError::InboundKeyRequired);
                }
                let context = admin::Context {
                    settings: &self.settings,
                    tokens: &self.tokens,
                    client: &self.client,
                    pending: &self.pending_logins,
                };
                admin::handle(&parts, &context).await
            }
            // The broker authenticates the tool itself, by its local secret.
            Route::Broker => {
                let (settings, tokens) = (&self.settings, &self.tokens);
                let trusted = caller.trusted();
                // A stranger's token request counts against the few bodies
                // read before a caller is known.
                let _slot = if trusted {
                    None
                } else {
                    Some(self.unproven_slot()?)
                };
                Ok(broker::issue(&parts, body, settings, tokens, &self.locals, trusted).await)
            }
            Route::Api(target) => {
                record.target(&target);
                match target.api {
                    Api::Rest => self.forward_rest(parts, body, &target, record).await,
                    // Boxed: the SOAP state (envelope reader, fault inspection)
                    // would otherwise make every request's future larger, and
                    // that future is moved into place once per request.
                    Api::Soap => Box::pin(self.soap(parts, body, caller, target, record)).await,
                }
            }
        }
    }

    fn unproven_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ProxyError> {
        self.unproven.try_acquire().map_err(|_| {
            ProxyError::Overloaded(format!(
                "{MAX_UNPROVEN} requests without an inbound key are already being read; send the inbound key"
            ))
        })
    }

    /// A SOAP call from a known caller: the envelope's start is read (up to
    /// `soap.header_limit`); a local token in its `fueloauth` binds the call
    /// to that token's tenant and business unit, routed again with it.
    async fn soap(
        &self,
        parts: Parts,
        body: ClientBody,
        caller: Caller,
        target: Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let limit = self.settings.soap.header_limit;
        let start = soap::Envelope::start(body, &parts.headers, limit).await?;
        let bound_before = caller.bound().is_some();
        let caller = caller.from_envelope(start.client_token(), &self.locals)?;
        let target = match caller.bound() {
            Some(key) if !bound_before => match route::route(&parts, &self.settings, Some(key))? {
                Route::Api(target) => target,
                _ => target,
            },
            _ => target,
        };
        self.forward_soap(parts, start, target, record).await
    }

    /// Credential, forward and respond, with one replay after a 401.
    async fn forward_rest(
        &self,
        parts: Parts,
        body: ClientBody,
        target: &Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let body = OutboundBody::prepare(body, self.settings.token.replay_body_limit).await?;
        let mut headers = parts.headers;
        strip_request_headers(&mut headers);
        let lease = self.token(target).await?;
        record.token = Some(lease.outcome);
        let replay = body.replay_copy().map(|bytes| (bytes, headers.clone()));
        // The request for SFMC with a lease's token: sent, possibly sent
        // again, or replayed after a 401.
        let rest_request = |lease: &Lease, headers, body| {
            let (method, instance) = (parts.method.clone(), &lease.token.rest_instance);
            let pq = &target.path_and_query;
            build_request(method, instance, pq, headers, Some(&*lease.token), body)
        };
        let request = rest_request(&lease, headers, body.into_body())?;
        // Sent again once if a kept-alive connection closes under it: only
        // an idempotent request with its body held.
        let resend = replay
            .as_ref()
            .filter(|_| parts.method.is_idempotent())
            .map(|(bytes, headers)| {
                || rest_request(&lease, headers.clone(), ProxyBody::full(bytes.clone()))
            });
        let response = self
            .upstream
            .send_or_resend(&lease.token.rest_instance, request, resend)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(respond(response));
        }
        // SFMC no longer accepts this token (revoked, or expired early): drop it
        // — unless a concurrent request already replaced it — so the next
        // request gets a fresh one; unless 401s keep coming whatever the token.
        let fresh_may_help = self.tokens.invalidate(&target.key, &lease.token);
        let Some((bytes, headers)) = replay.filter(|_| fresh_may_help) else {
            return Ok(respond(response));
        };
        // Not passed on: let its connection go now, not after the replay.
        drop(response);
        let lease = self.token(target).await?;
        record.token = Some(Outcome::Fetch);
        record.replayed = true;
        let request = rest_request(&lease, headers, ProxyBody::full(bytes))?;
        let instance = &lease.token.rest_instance;
        Ok(respond(self.upstream.send(instance, request).await?))
    }

    /// The same for SOAP: the token goes into the envelope, and SFMC's
    /// `Token Expired` / `Login failed` faults take the place of the 401.
    async fn forward_soap(
        &self,
        parts: Parts,
        start: soap::EnvelopeStart,
        target: Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        record.target(&target);
        let replay_limit = self.settings.token.replay_body_limit;
        let mut envelope = start.finish(replay_limit).await?;
        let target = &target;
        let mut headers = parts.headers;
        strip_request_headers(&mut headers);
        let lease = self.token(target).await?;
        record.token = Some(lease.outcome);
        let replayable = envelope.replayable(replay_limit);
        let replay_headers = replayable.then(|| headers.clone());
        let (response, token_fault) = self
            .send_soap(&parts.method, target, headers, &lease, &mut envelope)
            .await?;
        if !token_fault {
            return Ok(strip_response(response));
        }
        let fresh_may_help = self.tokens.invalidate(&target.key, &lease.token);
        let Some(headers) = replay_headers.filter(|_| fresh_may_help) else {
            return Ok(strip_response(response));
        };
        let lease = self.token(target).await?;
        record.token = Some(Outcome::Fetch);
        record.replayed = true;
        let (response, _) = self
            .send_soap(&parts.method, target, headers, &lease, &mut envelope)
            .await?;
        Ok(strip_response(response))
    }

    /// Sends the envelope with this lease's token to the tenant's SOAP
    /// instance, with a `Content-Length` that matches the rewrite; returns the
    /// response and whether it is a token fault.
    async fn send_soap(
        &self,
        method: &http::Method,
        target: &Target,
        mut headers: http::HeaderMap,
        lease: &Lease,
        envelope: &mut soap::Envelope,
    ) -> Result<(Response<ProxyBody>, bool), ProxyError> {
        let instance = lease.token.soap_instance.as_ref().ok_or_else(|| {
            ProxyError::UpstreamUnavailable(format!(
                "SFMC's token response for tenant `{}` had no soap_instance_url",
                target.tenant.name
            ))
        })?;
        let (body, length) = envelope.request_body(lease.token.access_token());
        match length {
            Some(length) => headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(length),
            ),
            None => headers.remove(http::header::CONTENT_LENGTH),
        };
        let request = build_request(
            method.clone(),
            instance,
            &target.path_and_query,
            headers,
            None,
            body,
        )?;
        Ok(soap::inspect_response(self.upstream.send(instance, request).await?).await)
    }

    async fn token(&self, target: &Target) -> Result<Lease, ProxyError> {
        self.tokens
            .get(&target.key)
            .await
            .map_err(|failure| failure.into_proxy_error(&target.tenant.name))
    }
}

/// SFMC's response as is — status, headers, streamed body — minus hop-by-hop headers.
fn respond(response: Response<SfmcBody>) -> Response<ProxyBody> {
    strip_response(response.map(ProxyBody::Upstream))
}

fn strip_response(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    strip_hop_by_hop(response.headers_mut());
    response
}
