//! The pipeline: one request through guard → route → credential → forward →
//! respond → record, in that order. Each phase lives in its own module; this
//! one only knows their order and the replay-once rule after a 401.

use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::broker::{LocalTokens, Presented};
use crate::config::Settings;
use crate::error::ProxyError;
use crate::forward::{OutboundBody, build_request};
use crate::headers::{strip_hop_by_hop, strip_request_headers};
use crate::route::{Api, Route, Target};
use crate::telemetry::AccessRecord;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{Lease, Outcome, TokenCache};
use crate::upstream::{Upstream, UpstreamBody};
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
    upstream: Upstream,
    /// Stand-in tokens the broker issued to SDK tools.
    locals: LocalTokens,
    /// Browser logins started at `/_proxy/login`, waiting for their redirect.
    pending_logins: admin::PendingLogins,
}

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
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let mut record = AccessRecord::new(&parts);
        let soap_shaped = route::soap_shaped(&parts.method, parts.uri.path());
        let response = match self.run(parts, body, &mut record).await {
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
        record.finish(response.status(), started.elapsed());
        response
    }

    async fn run(
        &self,
        parts: Parts,
        body: Incoming,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Liveness answers before the guard: it reveals nothing, and probes from
        // an orchestrator carry neither an allowed Host nor an inbound key.
        if parts.uri.path() == admin::HEALTH_PATH {
            return Ok(admin::health());
        }
        guard::check(&parts, &self.settings.server)?;
        // The inbound key comes before routing (whose errors name tenants),
        // unless the request may carry the broker's own credential instead.
        if !self.may_carry_local_credential(&parts) {
            guard::check_inbound_key(&parts.headers, &self.settings.server)?;
        }
        match route::route(&parts, &self.settings)? {
            Route::Admin => {
                guard::check_inbound_key(&parts.headers, &self.settings.server)?;
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
                Ok(broker::issue(&parts, body, settings, tokens, &self.locals).await)
            }
            Route::Api(mut target) => {
                record.target(&target);
                match target.api {
                    Api::Rest => {
                        self.authorise(bearer(&parts.headers), &parts.headers, &mut target)?;
                        record.target(&target);
                        self.forward_rest(parts, body, &target, record).await
                    }
                    // Boxed: the SOAP state (envelope reader, fault inspection)
                    // would otherwise make every request's future larger, and
                    // that future is moved into place once per request.
                    Api::Soap => Box::pin(self.forward_soap(parts, body, target, record)).await,
                }
            }
        }
    }

    /// A token request to the broker, a local token as bearer, or a SOAP
    /// envelope (whose `fueloauth` may hold one): checked after routing.
    fn may_carry_local_credential(&self, parts: &Parts) -> bool {
        route::is_token_request(&parts.method, parts.uri.path())
            || bearer(&parts.headers).is_some_and(|b| b.starts_with(broker::LOCAL_TOKEN_PREFIX))
            || route::soap_shaped(&parts.method, parts.uri.path())
    }

    /// Who the request is for and whether it may be served: a broker-issued
    /// local token binds it to its tenant, business unit and scope (and stands
    /// in for the inbound key); a stale one is refused so the tool
    /// re-authenticates; anything else needs the inbound key where one is set.
    fn authorise(
        &self,
        presented: Option<&str>,
        headers: &http::HeaderMap,
        target: &mut Target,
    ) -> Result<(), ProxyError> {
        match presented.map(|token| self.locals.resolve(token)) {
            Some(Presented::Bound(key)) => target.bind(key, &self.settings),
            Some(Presented::Invalid) => Err(ProxyError::LocalTokenInvalid),
            // Checked before routing already, unless the request looked as if it
            // might carry a local token (SOAP, a `sfmcproxy_` bearer): then here.
            Some(Presented::Foreign) | None => {
                guard::check_inbound_key(headers, &self.settings.server)
            }
        }
    }

    /// Credential, forward and respond, with one replay after a 401.
    async fn forward_rest(
        &self,
        parts: Parts,
        body: Incoming,
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
        body: Incoming,
        mut target: Target,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (limit, replay_limit) = (
            self.settings.soap.header_limit,
            self.settings.token.replay_body_limit,
        );
        let mut envelope = soap::Envelope::read(body, &parts.headers, limit, replay_limit).await?;
        let presented = bearer(&parts.headers).or(envelope.client_token());
        self.authorise(presented, &parts.headers, &mut target)?;
        record.target(&target);
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

/// The token in `Authorization: Bearer …`, if the client sent one.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// SFMC's response as is — status, headers, streamed body — minus hop-by-hop headers.
fn respond(response: Response<UpstreamBody>) -> Response<ProxyBody> {
    strip_response(response.map(ProxyBody::Upstream))
}

fn strip_response(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    strip_hop_by_hop(response.headers_mut());
    response
}
