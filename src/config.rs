//! Configuration: `proxy.toml` parsed into raw serde structs (unknown keys are
//! errors), then validated into typed [`Settings`] whose errors name the key.
//!
//! `${VAR}` in any string value is replaced from the environment (a missing
//! variable is an error naming it). Secrets are held in [`Secret`], whose `Debug`
//! never shows the value. This module is a leaf: it knows nothing of HTTP serving.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

mod broker;
mod login;
mod parse_error;
mod raw;
mod tenant;
mod values;

pub use broker::BrokerSettings;
pub use login::{AppType, Grant};
use raw::{RawConfig, RawServer, RawSoap, RawToken, RawUpstream};
use values::{Expander, parse_duration};
pub use values::{MID_RULE, is_loopback_host, is_mid, normalise_scope, parse_size};

/// A secret string (client secret, inbound key, token). Its `Debug` is
/// redacted and it has no `Display`, so it can sit in structs that get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value itself: call only where it is sent to SFMC or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source} (copy the annotated proxy.toml from the project, or pass --config PATH)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Everything the proxy needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub token: TokenSettings,
    pub upstream: UpstreamSettings,
    pub soap: SoapSettings,
    pub broker: BrokerSettings,
    /// In name order; at least one.
    pub tenants: Vec<Arc<Tenant>>,
    /// Index into `tenants` of the tenant that serves requests with no selector.
    pub default_tenant: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// What the token broker advertises as the instance URLs (ends with `/`);
    /// `None`: `http://<the request's Host>/`, i.e. however the client reached us.
    pub public_url: Option<String>,
    pub inbound_keys: Vec<Secret>,
    pub allow_unauthenticated_remote: bool,
    /// Host names (lowercase, no port; IPv6 in brackets) a request may address.
    /// `None` turns the check off: only when listening on an unspecified address
    /// with inbound keys and without `allowed_hosts` configured.
    pub allowed_hosts: Option<Vec<String>>,
    /// Browser origins (`scheme://host[:port]`, lowercase) allowed to call.
    pub allowed_origins: Vec<String>,
    pub max_connections: usize,
    /// Time a new connection has to send its first request head (slowloris).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving either way
    /// for this long is closed: idle keep-alive, a stalled request body, a
    /// client that stopped reading its response, a silent HTTP/2 connection.
    pub idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Threads of the async runtime that serves requests; `None`: see
    /// [`ServerSettings::runtime_threads`].
    pub worker_threads: Option<usize>,
}

/// The default runtime size is capped here: a sidecar for SFMC traffic (SFMC
/// itself rate-limits to a few thousand calls per second per tenant) is far
/// from needing more, and should not take every core of a big host.
pub const MAX_DEFAULT_WORKER_THREADS: usize = 4;

/// The most `server.worker_threads` accepts: more threads than that only cost
/// memory for a proxy whose work per request is a few microseconds.
pub const MAX_WORKER_THREADS: usize = 256;

impl ServerSettings {
    /// How many runtime threads to start: `server.worker_threads`, or else the
    /// CPUs this process may use (affinity and cgroup quota included, so a
    /// container limited to one CPU gets one thread), at most
    /// [`MAX_DEFAULT_WORKER_THREADS`].
    pub fn runtime_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(default_worker_threads)
    }
}

/// `min(available CPUs, MAX_DEFAULT_WORKER_THREADS)`.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_DEFAULT_WORKER_THREADS)
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub refresh_before_expiry: Duration,
    pub replay_body_limit: usize,
    /// Refresh tokens of authorization-code tenants (see `token::store`).
    pub store_file: Option<PathBuf>,
    /// Token requests a tenant may send to SFMC at once (a token bucket's size).
    pub rate_burst: u32,
    /// One token request is regained per interval.
    pub rate_interval: Duration,
    /// (tenant, business unit, scope) keys the token cache holds at most.
    pub max_keys: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Lowercase host suffixes an instance URL must match (`.example.com` matches
    /// subdomains; `example.com` also matches itself). Loopback is always allowed.
    pub allowed_instance_hosts: Vec<String>,
    /// A response body from SFMC that sends nothing for this long is cut.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SoapSettings {
    /// How much of an envelope may be held to find where the token goes: up to
    /// the end of the Header, or the whole envelope when the Header follows the Body.
    pub header_limit: usize,
    /// How much of an envelope is read, at most, to find a local token in
    /// `fueloauth` while the caller has not proved who it is.
    pub preauth_limit: usize,
}

/// One SFMC installed package (server-to-server, client credentials).
#[derive(Debug)]
pub struct Tenant {
    pub name: Arc<str>,
    /// `{auth_url}/v2/token`.
    pub token_url: String,
    /// `{auth_url}/v2/authorize`, where a user logs in (authorization code).
    pub authorize_url: String,
    pub client_id: String,
    /// `None` only for a public app, which has none and sends none.
    pub client_secret: Option<Secret>,
    pub grant: Grant,
    /// Default business unit (MID); `None` = the BU that owns the package.
    pub account_id: Option<Arc<str>>,
    /// BUs a request may select; `None` = any.
    pub account_ids: Option<Vec<String>>,
    pub scope: Option<Arc<str>>,
    /// `/name`-style prefix that selects this tenant (stripped before forwarding).
    pub path_prefix: Option<String>,
}

impl Tenant {
    pub fn account_allowed(&self, mid: &str) -> bool {
        self.account_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == mid))
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `server.idle_timeout` and `upstream.idle_timeout` (nginx's keep-alive and
/// send timeouts are of the same order).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why [`Settings::tenant_or_default`] found no tenant.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTenant<'n> {
    /// No tenant has this name.
    Unknown(&'n str),
    /// No name was given, and several tenants are configured, none the default.
    NoDefault,
}

impl Settings {
    /// Reads and validates a config file; relative file paths inside it
    /// (`client_secret_file`, `ca_file`) are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, |name| std::env::var(name).ok(), base)
    }

    /// Parses and validates TOML text. `env` resolves `${VAR}`.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        // Worded by `parse_error`: toml's own report would quote a secret's line.
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(parse_error::describe(text, &e)))?;
        let expander = Expander::new(&env, base_dir);
        let server = validate_server(raw.server, &expander)?;
        let token = validate_token(raw.token, &expander)?;
        let upstream = validate_upstream(raw.upstream, &expander)?;
        let soap = validate_soap(raw.soap)?;
        let (tenants, default_tenant) = tenant::validate_tenants(raw.tenants, &expander)?;
        let broker = broker::validate(raw.broker, &server, &tenants, &expander)?;
        let needs_store = tenants.iter().any(|t| t.grant != Grant::ClientCredentials);
        if needs_store && token.store_file.is_none() {
            return Err(invalid(
                "token.store_file",
                "an authorization_code tenant needs a file for its refresh tokens, and neither HOME nor XDG_STATE_HOME is set; set token.store_file",
            ));
        }
        Ok(Self {
            server,
            token,
            upstream,
            soap,
            broker,
            tenants,
            default_tenant,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| &*t.name == name)
    }

    /// The tenant `name`, or the default tenant when no name is given: the
    /// one choice the CLI, the login page and request routing all make. Each
    /// caller words the error for its own user.
    pub fn tenant_or_default<'n>(
        &self,
        name: Option<&'n str>,
    ) -> Result<&Arc<Tenant>, NoTenant<'n>> {
        match name {
            Some(name) => self.tenant(name).ok_or(NoTenant::Unknown(name)),
            None => self
                .default_tenant
                .and_then(|index| self.tenants.get(index))
                .ok_or(NoTenant::NoDefault),
        }
    }

    pub fn tenant_names(&self) -> String {
        let names: Vec<&str> = self.tenants.iter().map(|t| &*t.name).collect();
        names.join(", ")
    }
}

fn validate_server(raw: RawServer, ex: &Expander<'_>) -> Result<ServerSettings, ConfigError> {
    let listen_text = ex.expand(
        "server.listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
    )?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("`{listen_text}` is not an IP:port address (e.g. \"127.0.0.1:8080\")"),
        )
    })?;
    let mut inbound_keys = Vec::new();
    for (i, key) in raw.inbound_keys.iter().enumerate() {
        let name = format!("server.inbound_keys[{i}]");
        let value = ex.expand(&name, key)?;
        if value.len() < 16 {
            return Err(invalid(
                name,
                "an inbound key must be at least 16 characters",
            ));
        }
        inbound_keys.push(Secret::new(value));
    }
    if !listen.ip().is_loopback() && inbound_keys.is_empty() && !raw.allow_unauthenticated_remote {
        return Err(invalid(
            "server.listen",
            format!(
                "{listen} is not a loopback address: anyone who can reach it could use your SFMC credentials. Set server.inbound_keys, or server.allow_unauthenticated_remote = true if the network is private"
            ),
        ));
    }
    let allowed_hosts = match raw.allowed_hosts {
        Some(hosts) => Some(
            hosts
                .iter()
                .map(|h| values::normalise_host_name(h))
                .collect(),
        ),
        // Every address, with inbound keys: callers come by any name, and a
        // rebinding web page cannot present a key.
        None if listen.ip().is_unspecified() && !inbound_keys.is_empty() => None,
        None => {
            // Without keys (loopback, or a container published on the host's
            // loopback) only loopback names: anything else may be a web page
            // that rebound its own name to this address.
            let mut hosts: Vec<String> =
                ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
            let own = values::host_of_ip(listen.ip());
            if !listen.ip().is_unspecified() && !hosts.contains(&own) {
                hosts.push(own);
            }
            Some(hosts)
        }
    };
    let allowed_origins = raw
        .allowed_origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    let header_read_timeout = match raw.header_read_timeout {
        Some(text) => parse_duration("server.header_read_timeout", &text)?,
        None => Duration::from_secs(30),
    };
    let idle_timeout = match raw.idle_timeout {
        Some(text) => parse_duration("server.idle_timeout", &text)?,
        None => DEFAULT_IDLE_TIMEOUT,
    };
    let max_concurrent_streams = raw.max_concurrent_streams.unwrap_or(100);
    if max_concurrent_streams == 0 {
        return Err(invalid(
            "server.max_concurrent_streams",
            "must be at least 1",
        ));
    }
    let max_connections = raw.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        return Err(invalid("server.max_connections", "must be at least 1"));
    }
    let public_url = match raw.public_url {
        Some(text) => Some(broker::parse_public_url(
            &ex.expand("server.public_url", &text)?,
        )?),
        None => None,
    };
    if let Some(threads) = raw.worker_threads
        && !(1..=MAX_WORKER_THREADS).contains(&threads)
    {
        return Err(invalid(
            "server.worker_threads",
            format!(
                "must be between 1 and {MAX_WORKER_THREADS} (omit it for the default: the available CPUs, at most {MAX_DEFAULT_WORKER_THREADS})"
            ),
        ));
    }
    Ok(ServerSettings {
        listen,
        public_url,
        inbound_keys,
        allow_unauthenticated_remote: raw.allow_unauthenticated_remote,
        allowed_hosts,
        allowed_origins,
        max_connections,
        header_read_timeout,
        idle_timeout,
        max_concurrent_streams,
        worker_threads: raw.worker_threads,
    })
}

fn validate_token(raw: RawToken, ex: &Expander<'_>) -> Result<TokenSettings, ConfigError> {
    let refresh_before_expiry = match raw.refresh_before_expiry {
        Some(text) => parse_duration("token.refresh_before_expiry", &text)?,
        None => Duration::from_secs(120),
    };
    let replay_body_limit = match raw.replay_body_limit {
        Some(text) => parse_size("token.replay_body_limit", &text)?,
        None => 64 * 1024,
    };
    let rate_burst = raw.rate_burst.unwrap_or(4);
    if rate_burst == 0 {
        return Err(invalid(
            "token.rate_burst",
            "must be at least 1 (0 would never let a token request through)",
        ));
    }
    let rate_interval = match raw.rate_interval {
        Some(text) => parse_duration("token.rate_interval", &text)?,
        None => Duration::from_secs(5),
    };
    if rate_interval.is_zero() {
        return Err(invalid(
            "token.rate_interval",
            "must be longer than 0s (it is the time one token request is regained in)",
        ));
    }
    let max_keys = raw.max_keys.unwrap_or(1024);
    if max_keys == 0 {
        return Err(invalid("token.max_keys", "must be at least 1"));
    }
    Ok(TokenSettings {
        refresh_before_expiry,
        replay_body_limit,
        store_file: login::store_file(raw.store_file.as_deref(), ex)?,
        rate_burst,
        rate_interval,
        max_keys,
    })
}

fn validate_upstream(raw: RawUpstream, ex: &Expander<'_>) -> Result<UpstreamSettings, ConfigError> {
    let connect_timeout = match raw.connect_timeout {
        Some(text) => parse_duration("upstream.connect_timeout", &text)?,
        None => Duration::from_secs(5),
    };
    let response_timeout = match raw.response_timeout {
        Some(text) => parse_duration("upstream.response_timeout", &text)?,
        None => Duration::from_secs(300),
    };
    let ca_file = match raw.ca_file {
        Some(path) => Some(ex.path("upstream.ca_file", &path)?),
        None => None,
    };
    let allowed_instance_hosts = match raw.allowed_instance_hosts {
        Some(list) => {
            let mut hosts = Vec::new();
            for (i, host) in list.iter().enumerate() {
                let host = host.trim().to_ascii_lowercase();
                if host.is_empty() || host == "." {
                    return Err(invalid(
                        format!("upstream.allowed_instance_hosts[{i}]"),
                        "an empty suffix would allow every host",
                    ));
                }
                hosts.push(host);
            }
            hosts
        }
        None => vec![".marketingcloudapis.com".to_owned()],
    };
    let idle_timeout = match raw.idle_timeout {
        Some(text) => parse_duration("upstream.idle_timeout", &text)?,
        None => DEFAULT_IDLE_TIMEOUT,
    };
    Ok(UpstreamSettings {
        connect_timeout,
        response_timeout,
        ca_file,
        allowed_instance_hosts,
        idle_timeout,
    })
}

fn validate_soap(raw: RawSoap) -> Result<SoapSettings, ConfigError> {
    let header_limit = match raw.header_limit {
        Some(text) => parse_size("soap.header_limit", &text)?,
        None => 1024 * 1024,
    };
    let preauth_limit = match raw.preauth_limit {
        Some(text) => parse_size("soap.preauth_limit", &text)?,
        None => 8 * 1024,
    };
    Ok(SoapSettings {
        header_limit,
        preauth_limit: preauth_limit.min(header_limit),
    })
}

/// Deserialisable MID: SFMC MIDs are numbers, but TOML users write both
/// `account_id = 12345` and `account_id = "12345"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum MidValue {
    Number(u64),
    Text(String),
}

#[cfg(test)]
mod tests;
