//! Reload without drops: [`Live`] holds the generation of the proxy (see
//! `proxy`) that new requests get, and [`Live::reload`] replaces it. A
//! request takes the current generation once, at its start (one
//! `ArcSwap` load), and keeps it to its end, so a reload never changes a
//! request mid-way; a response still streaming keeps the upstream pool it
//! came from.
//!
//! What a reload keeps and drops (see `diff` for how tenants are compared):
//! the token cache is kept, minus the keys of tenants removed or with new
//! credentials (and every key when `upstream.allowed_instance_hosts`
//! changed); local broker tokens and waiting logins of those tenants are
//! dropped. `signal` re-reads the file on SIGHUP.

mod diff;
mod signal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Request, Response};

use crate::config::{ConfigError, Settings};
use crate::proxy::{BuildError, Entry, Proxy};
use crate::telemetry::Logged;
use crate::token::TokenKey;

pub use diff::{Changes, same_credentials, same_local_admission};
pub use signal::watch_sighup;

/// The proxy that serves new requests, replaceable while requests run.
pub struct Live {
    current: ArcSwap<Proxy>,
    /// The settings the process started with: what `server.listen` is
    /// bound to and how many threads run, until a restart.
    started: Arc<Settings>,
    /// One reload at a time (a SIGHUP during a test's own reload, say).
    reloading: Mutex<()>,
}

/// Why a reload was refused: the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid (the message names the key and
    /// never quotes a secret).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Valid, but what it names could not be built (an unreadable
    /// `upstream.ca_file`, say).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What a reload did.
#[derive(Debug)]
pub struct ReloadReport {
    pub changes: Changes,
    /// Cached SFMC tokens dropped.
    pub tokens_dropped: usize,
    /// Broker local tokens dropped.
    pub local_tokens_dropped: usize,
    /// Waiting browser logins cancelled.
    pub logins_cancelled: usize,
}

impl Live {
    pub fn new(settings: Arc<Settings>) -> Result<Self, BuildError> {
        Ok(Self::from_proxy(Proxy::new(settings)?))
    }

    pub fn from_proxy(proxy: Proxy) -> Self {
        Self {
            started: proxy.settings().clone(),
            current: ArcSwap::from_pointee(proxy),
            reloading: Mutex::new(()),
        }
    }

    /// The generation new requests get.
    pub fn current(&self) -> Arc<Proxy> {
        self.current.load_full()
    }

    /// The settings new requests get.
    pub fn settings(&self) -> Arc<Settings> {
        self.current.load().settings().clone()
    }

    /// Runs one request on the current generation, which it keeps to its
    /// end; `entry` is the address it came in on. Not an `async fn`: the
    /// generation's own future is handed out as it is, one layer less to
    /// copy into place on every request.
    pub fn handle(
        &self,
        request: Request<crate::body::Inbound>,
        client: SocketAddr,
        entry: Entry,
    ) -> impl Future<Output = Response<Logged>> + Send + 'static {
        self.current.load_full().handle(request, client, entry)
    }

    /// Reads a configuration with `load` and applies it; logs the outcome
    /// in one line (a refusal at error level: the running one stays) and
    /// counts it (`sfmc_proxy_config_reloads_total{result}`). The one place
    /// a reload's outcome is known, signal or not.
    pub fn reload_from(
        &self,
        load: impl FnOnce() -> Result<Settings, ConfigError>,
    ) -> Result<ReloadReport, ReloadError> {
        let result = load()
            .map_err(ReloadError::from)
            .and_then(|settings| self.reload(Arc::new(settings)));
        // The one count of reloads, whatever asked for it.
        let metrics = self.current.load().metrics().clone();
        metrics.config_reloaded(result.is_ok());
        match &result {
            Ok(report) => log_applied(report),
            Err(error) => tracing::error!(
                %error,
                "config reload refused, the running configuration stays: {error}"
            ),
        }
        result
    }

    /// Applies `settings` to new requests; in-flight ones finish with the
    /// generation they began with. Nothing changes when it fails.
    pub fn reload(&self, settings: Arc<Settings>) -> Result<ReloadReport, ReloadError> {
        let _one = crate::sync::lock(&self.reloading);
        let old = self.current.load_full();
        // What the file changed, restart-only keys included (they are
        // reported); then the settings as this process applies them.
        let changes = Changes::between(old.settings(), &settings, &self.started);
        let mut settings = Arc::unwrap_or_clone(settings);
        settings.server = settings.server.bound_to(&self.started.server)?;
        let settings = Arc::new(settings);
        let next = old.next(settings.clone(), changes.upstream)?;
        // The cache's source first: from here on every fetch knows the new
        // tenants, so a new tenant's first request never meets the old client.
        let tokens = next.tokens().clone();
        tokens.reconfigure(next.token_source().clone(), &settings.token);
        next.locals().set_lifetime(settings.broker.token_lifetime);
        next.locals()
            .share(crate::broker::FleetGrants::new(&settings));
        next.metrics().configure(&settings);
        let report = forget_void(old.settings(), &next, changes);
        self.current.store(Arc::new(next));
        // A request of the old generation may have made a key of a removed
        // tenant since the first pass (its fetch fails: the tenant is gone).
        tokens.retain(
            |key| settings.tenant(&key.tenant).is_some(),
            |tenant| settings.tenant(tenant).is_some(),
        );
        if settings.token.prefetch {
            let changes = &report.changes;
            let fresh = |name: &str| changes.credentials_void(name) || changes.instance_hosts;
            crate::prefetch::start_some(&settings, &tokens, |tenant| fresh(&tenant.name));
        }
        Ok(report)
    }
}

/// Drops what `changes` made void before `next` serves: cached tokens (and
/// the tenant-wide backoff and budget) of tenants removed or with new
/// credentials, or of business units no longer allowed; their local tokens
/// (also when the broker's admission changed) and waiting logins.
fn forget_void(old: &Settings, next: &Proxy, changes: Changes) -> ReloadReport {
    let settings = next.settings();
    let allowed = |key: &TokenKey| {
        settings.tenant(&key.tenant).is_some_and(|tenant| {
            key.account_id
                .as_deref()
                .is_none_or(|mid| tenant.account_allowed(mid))
        })
    };
    let tokens_dropped = next.tokens().retain(
        |key| !changes.tokens_void(&key.tenant) && allowed(key),
        |tenant| !changes.credentials_void(tenant),
    );
    let same_admission = |tenant: &str| same_local_admission(old, settings, tenant);
    let local_tokens_dropped = next.locals().retain(|key| {
        !changes.credentials_void(&key.tenant) && same_admission(&key.tenant) && allowed(key)
    });
    let logins_cancelled = next
        .pending_logins()
        .cancel(|tenant| changes.credentials_void(tenant));
    ReloadReport {
        changes,
        tokens_dropped,
        local_tokens_dropped,
        logins_cancelled,
    }
}

fn log_applied(report: &ReloadReport) {
    let changes = &report.changes;
    let (tokens, locals, logins) = (
        report.tokens_dropped,
        report.local_tokens_dropped,
        report.logins_cancelled,
    );
    let summary = format!(
        "config reloaded: {changes}; dropped {tokens} cached token(s), {locals} local token(s), {logins} waiting login(s)"
    );
    if changes.needs_restart.is_empty() {
        tracing::info!(tokens_dropped = tokens, "{summary}");
    } else {
        let restart = changes.needs_restart.join(", ");
        tracing::warn!(
            tokens_dropped = tokens,
            needs_restart = %restart,
            "{summary}; restart sfmc-proxy to apply {restart} (the rest applies now)"
        );
    }
}
