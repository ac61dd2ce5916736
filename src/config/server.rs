//! `[server]`: where the proxy listens and what it lets in — inbound keys,
//! allowed Host names and browser origins, connection limits and timeouts,
//! the runtime's threads, and what plain `/_proxy/ready` requires.

use std::net::SocketAddr;
use std::time::Duration;

use super::defaults::{
    DEFAULT_ALLOWED_HOSTS, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LOG_PATHS,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_READY_REQUIRES,
    DEFAULT_SHUTDOWN_TIMEOUT,
};
use super::listen::ListenOverride;
use super::raw::RawServer;
use super::values::{Expander, duration_or};
use super::{ConfigError, Secret, invalid};

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Every address the proxy serves (at least one; see `listen`).
    pub listen: Vec<SocketAddr>,
    /// A second, loopback-only address that serves `/_proxy/*` alone, with
    /// no inbound key (a scraper or probe on the same host).
    pub admin_listen: Option<SocketAddr>,
    /// What the token broker advertises as the instance URLs (ends with `/`);
    /// `None`: `http://<the request's Host>/`, i.e. however the client reached us.
    pub public_url: Option<String>,
    pub inbound_keys: Vec<Secret>,
    pub allow_unauthenticated_remote: bool,
    /// Host names (lowercase, no port; IPv6 in brackets) a request may address.
    /// `None` turns the check off: only when listening on an unspecified address
    /// with inbound keys and without `allowed_hosts` configured.
    pub allowed_hosts: Option<Vec<String>>,
    /// Whether `allowed_hosts` was written in the file (else it is derived
    /// from `listen` and the keys, and derived again by [`Self::bound_to`]).
    pub allowed_hosts_configured: bool,
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
    /// Whether the access log names each request's path (never its query).
    pub log_paths: bool,
    /// How plain `/_proxy/ready` combines the tenants' states.
    pub ready_requires: ReadyRequires,
    /// How long in-flight requests may run after shutdown is requested.
    pub shutdown_timeout: Duration,
}

/// `server.ready_requires`: which tenants must be ready (or degraded) for
/// plain `/_proxy/ready` to answer 200. Tenants waiting for a person's login
/// are left out of either rule unless every tenant is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyRequires {
    /// Every tenant (one broken tenant takes the instance out of service).
    All,
    /// At least one (an instance that serves some tenants stays in service).
    Any,
}

impl ReadyRequires {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Any => "any",
        }
    }

    fn parse(text: Option<&str>) -> Result<Self, ConfigError> {
        match text {
            None => Ok(DEFAULT_READY_REQUIRES),
            Some("all") => Ok(Self::All),
            Some("any") => Ok(Self::Any),
            Some(other) => Err(invalid(
                "server.ready_requires",
                format!("`{other}` is neither \"all\" nor \"any\""),
            )),
        }
    }
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

/// A non-loopback address needs inbound keys, or the explicit opt-out;
/// `key` is where the addresses came from.
fn check_exposure(
    key: &str,
    listen: &[SocketAddr],
    inbound_keys: &[Secret],
    allow_unauthenticated_remote: bool,
) -> Result<(), ConfigError> {
    if !inbound_keys.is_empty() || allow_unauthenticated_remote {
        return Ok(());
    }
    match listen.iter().find(|addr| !addr.ip().is_loopback()) {
        None => Ok(()),
        Some(exposed) => Err(invalid(
            key,
            format!(
                "{exposed} is not a loopback address: anyone who can reach it could use your SFMC credentials. Set server.inbound_keys, or server.allow_unauthenticated_remote = true if the network is private"
            ),
        )),
    }
}

/// `allowed_hosts` when the file does not name them.
fn derived_allowed_hosts(listen: &[SocketAddr], inbound_keys: &[Secret]) -> Option<Vec<String>> {
    // Every address, with inbound keys: callers come by any name, and a
    // rebinding web page cannot present a key.
    if listen.iter().any(|addr| addr.ip().is_unspecified()) && !inbound_keys.is_empty() {
        return None;
    }
    // Without keys (loopback, or a container published on the host's
    // loopback) only loopback names and the addresses' own: anything else
    // may be a web page that rebound its own name to this address.
    let mut hosts: Vec<String> = DEFAULT_ALLOWED_HOSTS.map(String::from).into();
    for addr in listen.iter().filter(|addr| !addr.ip().is_unspecified()) {
        let own = super::values::host_of_ip(addr.ip());
        if !hosts.contains(&own) {
            hosts.push(own);
        }
    }
    Some(hosts)
}

/// `server.admin_listen`: an IP:port on loopback, since it asks no key.
fn admin_address(text: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        invalid(
            "server.admin_listen",
            format!("`{text}` is not an IP:port address (e.g. \"127.0.0.1:9090\")"),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(invalid(
            "server.admin_listen",
            format!(
                "{addr} is not a loopback address: the admin address serves /_proxy/* without the inbound key, so only this host may reach it. To scrape from elsewhere, use server.listen with the inbound key (Prometheus: `authorization: {{credentials: KEY}}`)"
            ),
        ));
    }
    Ok(addr)
}

impl ServerSettings {
    /// These settings as a running process applies them on reload: the
    /// addresses and threads it is bound to (`started`'s, until a restart)
    /// in place of the file's, and what depends on the address checked and
    /// derived again for them — so a file that moves `listen` to loopback
    /// and drops the keys cannot leave the network address it still serves
    /// without a key.
    pub fn bound_to(self, started: &ServerSettings) -> Result<Self, ConfigError> {
        let listen = started.listen.clone();
        check_exposure(
            "server.listen",
            &listen,
            &self.inbound_keys,
            self.allow_unauthenticated_remote,
        )
        .map_err(|_| {
            invalid(
                "server.inbound_keys",
                format!(
                    "the proxy still listens on {} (server.listen changes at a restart), which is not only loopback: it cannot drop its inbound keys; keep them, or restart with the new listen",
                    list_addresses(&listen)
                ),
            )
        })?;
        let allowed_hosts = match self.allowed_hosts_configured {
            true => self.allowed_hosts,
            false => derived_allowed_hosts(&listen, &self.inbound_keys),
        };
        Ok(Self {
            listen,
            admin_listen: started.admin_listen,
            worker_threads: started.worker_threads,
            allowed_hosts,
            ..self
        })
    }

    /// The settings the admin address checks requests with: no inbound key,
    /// and only loopback Host names (its own address's among them), whatever
    /// `allowed_hosts` says for the main address — so a web page that rebinds
    /// its name to 127.0.0.1 still cannot read it.
    pub fn for_admin_listener(&self) -> Self {
        let mut hosts: Vec<String> = DEFAULT_ALLOWED_HOSTS.map(String::from).into();
        if let Some(addr) = self.admin_listen {
            let own = super::values::host_of_ip(addr.ip());
            if !hosts.contains(&own) {
                hosts.push(own);
            }
        }
        Self {
            inbound_keys: Vec::new(),
            allowed_hosts: Some(hosts),
            // No page elsewhere may read it: the status page posts to its
            // own origin and needs no CORS.
            allowed_origins: Vec::new(),
            ..self.clone()
        }
    }
}

/// `min(available CPUs, MAX_DEFAULT_WORKER_THREADS)`.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_DEFAULT_WORKER_THREADS)
}

/// `a, b, c`, for messages and logs.
pub fn list_addresses(addresses: &[SocketAddr]) -> String {
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    texts.join(", ")
}

pub(super) fn validate(
    raw: RawServer,
    listen_override: Option<&ListenOverride>,
    ex: &Expander<'_>,
) -> Result<ServerSettings, ConfigError> {
    let listen = super::listen::addresses(raw.listen, listen_override, ex)?;
    let listen_key = listen_override.map_or("server.listen", |given| given.source);
    let admin_listen = match raw.admin_listen {
        Some(text) => Some(admin_address(&ex.expand("server.admin_listen", &text)?)?),
        None => None,
    };
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
    check_exposure(
        listen_key,
        &listen,
        &inbound_keys,
        raw.allow_unauthenticated_remote,
    )?;
    let allowed_hosts_configured = raw.allowed_hosts.is_some();
    let allowed_hosts = match raw.allowed_hosts {
        Some(hosts) => Some(
            hosts
                .iter()
                .map(|h| super::values::normalise_host_name(h))
                .collect(),
        ),
        None => derived_allowed_hosts(&listen, &inbound_keys),
    };
    let allowed_origins = raw
        .allowed_origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    let header_read_timeout = duration_or(
        "server.header_read_timeout",
        raw.header_read_timeout.as_deref(),
        DEFAULT_HEADER_READ_TIMEOUT,
    )?;
    let idle_timeout = duration_or(
        "server.idle_timeout",
        raw.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    )?;
    let max_concurrent_streams = raw
        .max_concurrent_streams
        .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS);
    if max_concurrent_streams == 0 {
        return Err(invalid(
            "server.max_concurrent_streams",
            "must be at least 1",
        ));
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid("server.max_connections", "must be at least 1"));
    }
    let public_url = match raw.public_url {
        Some(text) => Some(super::broker::parse_public_url(
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
    let ready_requires = ReadyRequires::parse(raw.ready_requires.as_deref())?;
    let shutdown_timeout = duration_or(
        "server.shutdown_timeout",
        raw.shutdown_timeout.as_deref(),
        DEFAULT_SHUTDOWN_TIMEOUT,
    )?;
    Ok(ServerSettings {
        listen,
        admin_listen,
        public_url,
        inbound_keys,
        allow_unauthenticated_remote: raw.allow_unauthenticated_remote,
        allowed_hosts,
        allowed_hosts_configured,
        allowed_origins,
        max_connections,
        header_read_timeout,
        idle_timeout,
        max_concurrent_streams,
        worker_threads: raw.worker_threads,
        log_paths: raw.log_paths.unwrap_or(DEFAULT_LOG_PATHS),
        ready_requires,
        shutdown_timeout,
    })
}
