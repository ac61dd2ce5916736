//! The pipeline: one request through guard → route → credential → forward →
//! respond → record, in that order. Each phase lives in its own module; this
//! one only knows their order and the replay-once rule after a 401.

use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::config::Settings;
use crate::error::ProxyError;
use crate::forward::{OutboundBody, Upstream, build_request};
use crate::headers::{strip_hop_by_hop, strip_request_headers};
use crate::route::{Route, Target};
use crate::telemetry::AccessRecord;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{Lease, Outcome, TokenCache};
use crate::{admin, guard, route, tls};

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
    upstream: Upstream,
}

impl Proxy {
    pub fn new(settings: Arc<Settings>) -> Result<Self, BuildError> {
        let tls = tls::client_config(settings.upstream.ca_file.as_deref())?;
        let source = SfmcTokenClient::new(&settings, tls.clone())?;
        let tokens = TokenCache::new(Arc::new(source), settings.token.refresh_before_expiry);
        let upstream = Upstream::new(&settings.upstream, tls);
        Ok(Self {
            settings,
            tokens,
            upstream,
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
        let response = match self.run(parts, body, &mut record).await {
            Ok(response) => response,
            Err(error) => {
                record.error = Some(error.code());
                error.into_response()
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
        match route::route(&parts, &self.settings)? {
            Route::Admin => admin::handle(&parts),
            Route::Api(target) => {
                record.target(&target);
                self.forward(parts, body, &target, record).await
            }
        }
    }

    /// Credential, forward and respond, with one replay after a 401.
    async fn forward(
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
        let request = build_request(
            parts.method.clone(),
            &lease.token.rest_instance,
            &target.path_and_query,
            headers,
            &lease.token,
            body.into_body(),
        )?;
        let response = self.upstream.send(request).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(respond(response));
        }
        // SFMC no longer accepts this token (revoked, or expired early): drop it
        // — unless a concurrent request already replaced it — so the next
        // request gets a fresh one.
        self.tokens.invalidate(&target.key, &lease.token);
        let Some((bytes, headers)) = replay else {
            return Ok(respond(response));
        };
        let lease = self.token(target).await?;
        record.token = Some(Outcome::Fetch);
        record.replayed = true;
        let request = build_request(
            parts.method,
            &lease.token.rest_instance,
            &target.path_and_query,
            headers,
            &lease.token,
            ProxyBody::full(bytes),
        )?;
        Ok(respond(self.upstream.send(request).await?))
    }

    async fn token(&self, target: &Target) -> Result<Lease, ProxyError> {
        self.tokens
            .get(&target.key)
            .await
            .map_err(|failure| failure.into_proxy_error(&target.tenant.name))
    }
}

/// SFMC's response as is — status, headers, streamed body — minus hop-by-hop headers.
fn respond(response: Response<Incoming>) -> Response<ProxyBody> {
    let mut response = response.map(ProxyBody::Stream);
    strip_hop_by_hop(response.headers_mut());
    response
}
