//! Logging: the subscriber set-up (`RUST_LOG`, text or JSON) and the one
//! access-log event per request. The event carries method, path (never the
//! query: SFMC filters hold customer data), status, duration, tenant, MID and
//! how the token was obtained — never a token, secret or header value.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use tracing_subscriber::EnvFilter;

use crate::route::{Api, Target};
use crate::token::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber on stderr. `RUST_LOG` overrides the default
/// filter (`info`). Safe to call twice: the second call does nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes garble files, journald and `docker logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The access log's target: `RUST_LOG=sfmc_proxy::access=off` silences it.
const ACCESS: &str = "sfmc_proxy::access";

/// What the access log says about one request, filled in as it travels.
pub struct AccessRecord {
    /// Whether the event will be emitted at all: when the log level filters it
    /// out, nothing is copied for it (this runs on every request).
    enabled: bool,
    method: Method,
    path: Option<PathAndQuery>,
    tenant: Option<Arc<str>>,
    account_id: Option<Arc<str>>,
    pub api: Option<Api>,
    pub token: Option<Outcome>,
    pub replayed: bool,
    pub error: Option<&'static str>,
}

impl AccessRecord {
    pub fn new(parts: &Parts) -> Self {
        let enabled = tracing::enabled!(target: ACCESS, tracing::Level::INFO);
        Self {
            enabled,
            method: if enabled {
                parts.method.clone()
            } else {
                Method::GET
            },
            path: parts.uri.path_and_query().filter(|_| enabled).cloned(),
            tenant: None,
            account_id: None,
            api: None,
            token: None,
            replayed: false,
            error: None,
        }
    }

    pub fn target(&mut self, target: &Target) {
        self.api = Some(target.api);
        if self.enabled {
            self.tenant = Some(target.key.tenant.clone());
            self.account_id = target.key.account_id.clone();
        }
    }

    pub fn finish(self, status: StatusCode, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: ACCESS,
            method = %self.method,
            path = self.path.as_ref().map_or("/", |p| p.path()),
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            tenant = self.tenant.as_deref(),
            account_id = self.account_id.as_deref(),
            api = self.api.map(Api::as_str),
            token = self.token.map(Outcome::as_str),
            replayed = self.replayed,
            error = self.error,
            "request"
        );
    }
}
