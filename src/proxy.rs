//! The pipeline: one request through guard → route → credential → forward →
//! respond → record, in that order. Each phase lives in its own module; this
//! one only knows their order (and that a keyless SOAP call is identified by
//! the start of its envelope before it is routed).
//!
//! A `Proxy` is one generation of the configuration: its settings and what
//! is built from them (the `/v2/token` client, the upstream client), beside
//! the state every generation shares (token cache, local tokens, pending
//! logins). A reload (see `reload`) builds the next one with [`Proxy::next`];
//! a request keeps the generation it started with to its end.

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response};
use tokio::sync::Semaphore;

use crate::body::{ClientBody, Counted, IdleTimeout, ProxyBody, Sender};
use crate::broker::LocalTokens;
use crate::config::Settings;
use crate::error::ProxyError;
use crate::forward::{Forwarder, Slots};
use crate::guard::Caller;
use crate::login::{LocalStates, LoginStates, PendingLogins};
use crate::route::{Api, Route, Target};
use crate::telemetry::metrics::LateEvents;
use crate::telemetry::{AccessRecord, Logged, Metrics, X_REQUEST_ID};
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{TokenCache, TokenEvents, TokenSource};
use crate::upstream::Upstream;
use crate::{admin, broker, fleet, guard, policy, route, soap, telemetry, tls};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot build the token client: {0}")]
    TokenClient(#[from] reqwest::Error),
    #[error("cannot draw the status page's form token from the system's random source: {0}")]
    Random(rustls::Error),
    #[error("[redis]: {0}")]
    Redis(String),
}

/// Which address a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `server.listen`: everything.
    Main,
    /// `server.admin_listen`: `/_proxy/*` only, without the inbound key.
    Admin,
}

/// Everything a request needs, shared by all connections: one generation
/// of the settings and what is built from them, and (in `Arc`s or clones of
/// one handle) the state all generations share.
pub struct Proxy {
    settings: Arc<Settings>,
    /// `settings.server` as the admin address checks requests (see
    /// `ServerSettings::for_admin_listener`).
    admin_server: crate::config::ServerSettings,
    /// Shared by every generation: a reload keeps the tokens it may keep.
    tokens: TokenCache,
    /// The `/v2/token` client behind `tokens`, also used for logins.
    client: Arc<SfmcTokenClient>,
    /// Where `tokens` gets tokens from: `client`, or with `[redis]` the
    /// fleet's shared tokens in front of it.
    source: Arc<dyn TokenSource>,
    /// Whether `[redis]` answers: shared by every generation, as the metrics.
    redis: Arc<fleet::Health>,
    /// Shared with the next generation unless `[upstream]` changed; a
    /// response streaming from an older one keeps its pool until it ends.
    upstream: Arc<Upstream<ProxyBody>>,
    /// Stand-in tokens the broker issued to SDK tools.
    locals: Arc<LocalTokens>,
    /// Shared by every generation (counts go on across a reload).
    metrics: Arc<Metrics>,
    /// Browser logins started at `/_proxy/login`, waiting for their redirect
    /// on a listener of their own.
    pending_logins: PendingLogins,
    /// Browser logins waiting at `/_proxy/callback`, in this process
    /// (shared by every generation)…
    local_logins: Arc<LocalStates>,
    /// …and this generation's store of them (Redis with `[redis]`), its
    /// Redis probe and the fleet's seal.
    shared: Shared,
    /// The status page's uptime start and form token.
    page: Arc<admin::PageState>,
    /// Each tenant's `max_concurrent_requests`, built from the previous
    /// generation's so that requests still running count.
    slots: Slots,
    /// Requests whose body is being read before their caller is known (a
    /// keyless SOAP call or broker token request): few at a time, so that
    /// strangers cannot make the proxy hold many bodies at once.
    unproven: Arc<Semaphore>,
}

/// The `/v2/token` client and the token cache's source for `settings`:
/// the client itself, or with `[redis]` the fleet's shared tokens in front
/// of it, and the logins' refresh tokens in Redis; and what else the
/// generation shares with the fleet.
fn token_source(
    client: SfmcTokenClient,
    settings: &Arc<Settings>,
    health: &Arc<fleet::Health>,
    local_logins: &Arc<LocalStates>,
) -> Result<Sources, BuildError> {
    let Some(fleet) = fleet::Fleet::connect(settings, health).map_err(BuildError::Redis)? else {
        let client = Arc::new(client);
        let shared = Shared {
            logins: local_logins.clone(),
            _probe: None,
            seal: None,
        };
        return Ok((client.clone(), client, shared));
    };
    let client = Arc::new(client.with_chains(fleet.chains()));
    let shared = Shared {
        logins: fleet.logins(),
        _probe: fleet.probe(),
        seal: Some(fleet.sealer()),
    };
    Ok((client.clone(), fleet.tokens(client), shared))
}

/// The token client, the cache's source and the rest of [`token_source`].
type Sources = (Arc<SfmcTokenClient>, Arc<dyn TokenSource>, Shared);

/// What one generation shares with the other replicas (with `[redis]`)
/// besides tokens, or keeps in this process without it.
struct Shared {
    /// Where browser logins wait at `/_proxy/callback`.
    logins: Arc<dyn LoginStates>,
    /// Pings Redis while this generation lives.
    _probe: Option<fleet::Probe>,
    /// The fleet's seal (the status page's form tokens).
    seal: Option<Arc<fleet::Sealer>>,
}

/// Keyless requests whose credential is read from the body, at once.
const MAX_UNPROVEN: usize = 128;

impl Proxy {
    pub fn new(settings: Arc<Settings>) -> Result<Self, BuildError> {
        let tls = tls::client_config(settings.upstream.ca_file.as_deref())?;
        // The metrics read the cache, and the token client behind it tells
        // the metrics of each request it sends: the client is made first,
        // with a hook the metrics are connected to once they exist.
        let events = Arc::new(LateEvents::default());
        let client = SfmcTokenClient::new(&settings, tls.clone())?.with_events(events.clone());
        let redis = Arc::new(fleet::Health::new());
        let local_logins = Arc::new(LocalStates::default());
        let (client, source, shared) = token_source(client, &settings, &redis, &local_logins)?;
        let tokens = TokenCache::configured(source.clone(), &settings.token);
        let locals = Arc::new(LocalTokens::new(settings.broker.token_lifetime));
        locals.share(broker::FleetGrants::new(&settings));
        let live = locals.clone();
        let with_redis = settings.redis.is_some().then_some(&*redis);
        let metrics = Metrics::new(&settings, tokens.clone(), move || live.live(), with_redis);
        events.connect(metrics.clone());
        let upstream = Upstream::new(&settings.upstream, tls, metrics.upstream_connections());
        let upstream = Arc::new(upstream);
        let slots = Slots::new(&settings, None, |tenant| metrics.queue(tenant));
        let page = Arc::new(admin::PageState::new().map_err(BuildError::Random)?);
        Ok(Self {
            source,
            slots,
            redis,
            admin_server: settings.server.for_admin_listener(),
            settings,
            tokens,
            client,
            upstream,
            locals,
            metrics,
            pending_logins: PendingLogins::default(),
            local_logins,
            shared,
            page,
            unproven: Arc::new(Semaphore::new(MAX_UNPROVEN)),
        })
    }

    /// The generation after this one, for `settings`: a new `/v2/token`
    /// client (it knows the new tenants; `upstream.ca_file` is read again),
    /// a new upstream client when `new_upstream` (else this one's pool), and
    /// this generation's shared state. Changes nothing in this one: the
    /// caller puts the client into the cache and swaps generations.
    pub fn next(&self, settings: Arc<Settings>, new_upstream: bool) -> Result<Self, BuildError> {
        let tls = tls::client_config(settings.upstream.ca_file.as_deref())?;
        let events: Arc<dyn TokenEvents> = self.metrics.clone();
        let client = SfmcTokenClient::new(&settings, tls.clone())?.with_events(events);
        let (client, source, shared) =
            token_source(client, &settings, &self.redis, &self.local_logins)?;
        let upstream = match new_upstream {
            true => Arc::new(Upstream::new(
                &settings.upstream,
                tls,
                self.metrics.upstream_connections(),
            )),
            false => self.upstream.clone(),
        };
        let slots = Slots::new(&settings, Some(&self.slots), |tenant| {
            self.metrics.queue(tenant)
        });
        Ok(Self {
            source,
            slots,
            redis: self.redis.clone(),
            admin_server: settings.server.for_admin_listener(),
            settings,
            tokens: self.tokens.clone(),
            client,
            upstream,
            locals: self.locals.clone(),
            metrics: self.metrics.clone(),
            pending_logins: self.pending_logins.clone(),
            local_logins: self.local_logins.clone(),
            shared,
            page: self.page.clone(),
            unproven: self.unproven.clone(),
        })
    }

    /// What the admin paths may use of this generation.
    fn admin_context(&self) -> admin::Context<'_> {
        admin::Context {
            settings: &self.settings,
            tokens: &self.tokens,
            client: &self.client,
            pending: &self.pending_logins,
            logins: &self.shared.logins,
            fleet_seal: self.shared.seal.as_deref(),
            metrics: &self.metrics,
            page: &self.page,
            redis: self.settings.redis.as_ref().map(|_| &*self.redis),
        }
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    pub fn client(&self) -> &Arc<SfmcTokenClient> {
        &self.client
    }

    /// What the token cache asks for tokens under this generation.
    pub fn token_source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    pub fn locals(&self) -> &LocalTokens {
        &self.locals
    }

    pub fn pending_logins(&self) -> &PendingLogins {
        &self.pending_logins
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs one request to completion of its response head; never fails: a
    /// failure becomes the proxy's own error response. `client` is the
    /// peer's address, for the access log; the response body writes the
    /// request's log event when it ends. The future keeps its generation.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<crate::body::Inbound>,
        client: SocketAddr,
        entry: Entry,
    ) -> Response<Logged> {
        let (mut parts, body) = request.into_parts();
        let server = &self.settings.server;
        let request_id = telemetry::request_id(&mut parts.headers);
        let (body, bytes_in) =
            Counted::new(IdleTimeout::new(body, server.idle_timeout, Sender::Client));
        let mut record = AccessRecord::new(
            &parts,
            client,
            request_id,
            bytes_in,
            server.log_paths,
            self.metrics.clone(),
        );
        let soap_shaped = route::soap_shaped(&parts.method, parts.uri.path());
        let origin = guard::allowed_origin(&parts.headers, server);
        let mut response = match self.run(parts, body, entry, &mut record).await {
            Ok(response) => response,
            Err(error) => {
                record.failed(&error);
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
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID, record.request_id().clone());
        let status = response.status();
        response.map(|body| Logged::new(body, record, status))
    }

    async fn run(
        &self,
        parts: Parts,
        body: ClientBody,
        entry: Entry,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Liveness answers before the guard: it reveals nothing, and probes from
        // an orchestrator carry neither an allowed Host nor an inbound key.
        if parts.uri.path() == route::HEALTH_PATH {
            return Ok(admin::health());
        }
        let server = match entry {
            Entry::Main => &self.settings.server,
            // A person's login acts for the tenant: never without the key.
            Entry::Admin
                if [route::LOGIN_PATH, route::CALLBACK_PATH].contains(&parts.uri.path()) =>
            {
                return Err(ProxyError::NotFound(format!(
                    "{}: logins are not served on server.admin_listen (it asks no key); use server.listen or `sfmc-proxy login`",
                    parts.uri.path()
                )));
            }
            Entry::Admin if route::is_admin_path(parts.uri.path()) => &self.admin_server,
            Entry::Admin => {
                return Err(ProxyError::NotFound(format!(
                    "{}: server.admin_listen serves only /_proxy/*; send API calls to server.listen",
                    parts.uri.path()
                )));
            }
        };
        guard::check(&parts, server)?;
        if let Some(answer) = guard::answer_locally(&parts, server) {
            return Ok(answer);
        }
        // A browser's icon request carries no credential and needs none.
        if matches!(parts.method, http::Method::GET | http::Method::HEAD)
            && parts.uri.path() == route::FAVICON_PATH
        {
            return Ok(admin::favicon());
        }
        // A browser back from SFMC's login page has no key: the login's
        // one-time state proves it (checked before anything else is done).
        if parts.uri.path() == route::CALLBACK_PATH {
            return admin::callback(&parts, &self.admin_context()).await;
        }
        // Who is calling comes before routing, whose errors name tenants.
        let caller = guard::identify(&parts, server, &self.locals)?;
        if caller == Caller::Unproven {
            return Box::pin(self.unproven_soap(parts, body, caller, record)).await;
        }
        match route::route(&parts, &self.settings, caller.bound())? {
            Route::Admin => {
                // The admin paths take the inbound key itself, not a local token.
                if !matches!(caller, Caller::Key | Caller::Anonymous) {
                    return Err(ProxyError::InboundKeyRequired);
                }
                admin::handle(&parts, body, &self.admin_context()).await
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
                    Api::Rest => {
                        policy::check_rest(&parts, &target)?;
                        self.forwarder().rest(parts, body, &target, record).await
                    }
                    // Boxed: the SOAP state (envelope reader, fault inspection)
                    // would otherwise make every request's future larger, and
                    // that future is moved into place once per request.
                    Api::Soap => Box::pin(self.soap(parts, body, caller, target, record)).await,
                }
            }
        }
    }

    /// A SOAP call without a key: only a small prefix of the envelope is read,
    /// within the head's deadline, for a local token in `fueloauth`; nothing
    /// else is said to a caller who has not proved who it is.
    async fn unproven_soap(
        &self,
        parts: Parts,
        body: ClientBody,
        caller: Caller,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let server = &self.settings.server;
        let limit = self.settings.soap.preauth_limit;
        let mut start = {
            let _slot = self.unproven_slot()?;
            let read = soap::Envelope::start(body, &parts.headers, limit);
            match tokio::time::timeout(server.header_read_timeout, read).await {
                Ok(Ok(start)) => start,
                Ok(Err(_)) | Err(_) => return Err(ProxyError::InboundKeyRequired),
            }
        };
        let caller = caller.from_envelope(start.client_token(), &self.locals)?;
        match route::route(&parts, &self.settings, caller.bound())? {
            Route::Api(target) if target.api == Api::Soap => {
                record.target(&target);
                let limit = self.settings.soap.header_limit;
                policy::check_soap(&parts, &target, &mut start, limit).await?;
                self.forwarder().soap(parts, start, target, record).await
            }
            _ => Err(ProxyError::BadRequest(
                "a call that carries its local token in fueloauth must be POST /Service.asmx"
                    .into(),
            )),
        }
    }

    fn forwarder(&self) -> Forwarder<'_> {
        Forwarder {
            upstream: &self.upstream,
            tokens: &self.tokens,
            replay_limit: self.settings.token.replay_body_limit,
            slots: &self.slots,
            max_retry_wait: self.settings.upstream.max_retry_wait,
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
        let mut start = soap::Envelope::start(body, &parts.headers, limit).await?;
        // A local token as bearer already binds the call; else one in
        // `fueloauth` does, and the call is routed again with it.
        let target = match caller {
            Caller::Local(_) => target,
            caller => match caller.from_envelope(start.client_token(), &self.locals)? {
                Caller::Local(key) => match route::route(&parts, &self.settings, Some(&key))? {
                    Route::Api(bound) => bound,
                    _ => target,
                },
                _ => target,
            },
        };
        record.target(&target);
        policy::check_soap(&parts, &target, &mut start, limit).await?;
        self.forwarder().soap(parts, start, target, record).await
    }
}
