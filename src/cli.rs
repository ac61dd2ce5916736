//! The command line: `serve` (default), `check`, `token`, `login`, `demo` (with
//! the default feature `demo`, which brings in the fake tenant). Exit codes:
//! 0 ok, 2 bad config or usage (the message names the key or flag), 1 a
//! runtime failure (SFMC refused or unreachable, port in use).

/// `println!` for the subcommands' output, which is often piped
/// (`check | head`): when the reader has gone away the command has nothing
/// left to say, so it exits quietly (0) instead of panicking as `println!`
/// does on a closed pipe. Any other write error ends it with exit 1.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(error) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            // No destructor runs after `exit`: the log lines first.
            crate::telemetry::finish();
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            // A full disk, say: the output is lost, which must not look
            // like success (`token > file` would leave an empty file).
            eprintln!("error: cannot write to standard output: {error}");
            std::process::exit(1);
        }
    }};
}

mod check;
#[cfg(feature = "demo")]
mod demo;
mod login;
mod token;
mod token_cache;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{
    ConfigError, ListenOverride, LoadOptions, MID_RULE, NoTenant, Settings, default_worker_threads,
};
use crate::proxy::Proxy;
use crate::reload::Live;
use crate::telemetry::LogFormat;
use crate::token::KeyRefused;

/// Shown under every `--help`.
const AFTER_HELP: &str = "\
Environment (a flag wins over its variable, a variable over the config file):
  SFMC_PROXY_CONFIG      the config file (--config)
  SFMC_PROXY_LOG_FORMAT  text or json (--log-format)
  SFMC_PROXY_LISTEN      serve's addresses, comma-separated (--listen)
  RUST_LOG               what is logged, e.g. RUST_LOG=debug

Exit codes:
  0  ok
  1  a runtime failure: SFMC refused or is unreachable, a port is in use
  2  bad config or usage: the message names the key or flag";

#[derive(Debug, Parser)]
#[command(
    name = "sfmc-proxy",
    version,
    about = "Authenticating reverse proxy for Salesforce Marketing Cloud APIs",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "SFMC_PROXY_CONFIG",
        default_value = "proxy.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SFMC_PROXY_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// `serve`'s flags, for `sfmc-proxy` with no subcommand (`sfmc-proxy
    /// --listen ADDR` is `sfmc-proxy serve --listen ADDR`).
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Whether `--config` was typed (not taken from the environment or the
    /// default): `demo` refuses it.
    #[arg(skip)]
    pub config_given: bool,
    /// Whether `--listen` was typed before a subcommand other than `serve`
    /// (which does not take it), or both before and after `serve`.
    #[arg(skip)]
    pub listen_misplaced: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Listen on ADDR instead of server.listen: IP:port, [IPv6]:port or
    /// localhost:port (127.0.0.1 and [::1]). Repeat it for several
    /// addresses.
    #[arg(
        long = "listen",
        value_name = "ADDR",
        env = "SFMC_PROXY_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// Where `listen` came from (`--listen` or `SFMC_PROXY_LISTEN`).
    #[arg(skip)]
    pub listen_source: Option<&'static str>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    #[command(after_help = AFTER_HELP)]
    Serve(ServeArgs),
    /// Validate the config, get a token for every tenant and business unit
    /// (default and account_ids) and report (never prints tokens).
    #[command(after_help = AFTER_HELP)]
    Check {
        /// One JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Validate the config and say what would be checked; no token request.
        #[arg(long)]
        offline: bool,
        /// Ask SFMC for a new token for every business unit instead of
        /// trusting cached ones: proves the credentials work now (e.g. after
        /// a secret was regenerated).
        #[arg(long, conflicts_with = "offline")]
        fresh: bool,
    },
    /// Print a valid access token to stdout (for curl or Postman); reuses the
    /// cached one until its refresh window.
    #[command(after_help = AFTER_HELP)]
    Token {
        /// Tenant name (default: the default tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Business unit MID (default: the tenant's account_id).
        #[arg(long)]
        account_id: Option<String>,
        /// Scope (default: the tenant's scope).
        #[arg(long)]
        scope: Option<String>,
        /// Ask SFMC for a new token even if the cached one is still valid.
        #[arg(long)]
        fresh: bool,
    },
    /// Log in as a person, for a Web or Public App tenant (authorization code).
    #[command(after_help = AFTER_HELP)]
    Login {
        /// Tenant name (default: the default tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Business unit MID to log in to (default: the tenant's account_id).
        #[arg(long)]
        account_id: Option<String>,
    },
    /// Start an embedded fake SFMC tenant and the proxy in front of it (no
    /// config file: it makes its own).
    #[cfg(feature = "demo")]
    #[command(after_help = AFTER_HELP)]
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
}

impl ServeArgs {
    /// How `serve` reads the config file: these addresses replace the file's.
    fn load_options(self) -> LoadOptions {
        let mut addresses = self.listen;
        // An empty variable (`SFMC_PROXY_LISTEN=` in an env file) is an
        // unset one, as most tools take it; a typed `--listen ""` is not.
        if self.listen_source == Some("SFMC_PROXY_LISTEN") {
            addresses.retain(|address| !address.trim().is_empty());
        }
        let listen = match (self.listen_source, addresses.is_empty()) {
            (Some("SFMC_PROXY_LISTEN"), true) | (None, _) => None,
            (Some(source), _) => Some(ListenOverride { source, addresses }),
        };
        LoadOptions {
            listen,
            only_tenant: None,
        }
    }
}

impl Cli {
    /// Parses the process's arguments (exiting with clap's message and code
    /// 2 on a usage error), noting where values came from.
    pub fn from_command_line() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        let serve_matches = match matches.subcommand() {
            Some(("serve", sub)) => sub,
            _ => &matches,
        };
        let source = |matches: &clap::ArgMatches| match matches.value_source("listen") {
            Some(clap::parser::ValueSource::CommandLine) => Some("--listen"),
            Some(clap::parser::ValueSource::EnvVariable) => Some("SFMC_PROXY_LISTEN"),
            _ => None,
        };
        let typed_first = matches!(
            matches.value_source("listen"),
            Some(clap::parser::ValueSource::CommandLine)
        );
        match &mut cli.command {
            None => cli.serve.listen_source = source(&matches),
            // `sfmc-proxy --listen A serve`: the same as after `serve`.
            Some(Command::Serve(args)) => {
                args.listen_source = source(serve_matches);
                if typed_first {
                    cli.listen_misplaced = args.listen_source == Some("--listen");
                    args.listen_source = Some("--listen");
                    args.listen = std::mem::take(&mut cli.serve.listen);
                }
            }
            Some(_) => cli.listen_misplaced = typed_first,
        }
        cli.config_given = typed(&matches, "config");
        cli
    }
}

/// Whether `id` was typed on the command line, before or after a subcommand
/// (a global argument's value and source end up in the subcommand's matches).
fn typed(matches: &clap::ArgMatches, id: &str) -> bool {
    let here = matches!(
        matches.value_source(id),
        Some(clap::parser::ValueSource::CommandLine)
    );
    here || matches.subcommand().is_some_and(|(_, sub)| typed(sub, id))
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn runtime(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let config = cli.config;
    let result = match cli.command {
        Some(_) if cli.listen_misplaced => Err(usage(
            "--listen: it is serve's flag; give it once, as `sfmc-proxy serve --listen ADDR` (repeat --listen for several addresses; demo has its own)",
        )),
        None => run_serve(&config, cli.serve),
        Some(Command::Serve(args)) => run_serve(&config, args),
        #[cfg(feature = "demo")]
        Some(Command::Demo { .. }) if cli.config_given => Err(usage(
            "--config: `demo` reads no config file (it makes its own, for its fake tenant); drop --config. To try your own config: `sfmc-proxy check --config PATH`, then `sfmc-proxy serve --config PATH`",
        )),
        Some(command) => build_runtime(default_worker_threads())
            .and_then(|rt| rt.block_on(run_command(command, &config))),
    };
    // Every log line out before the process ends (a short command must not
    // lose its lines; `serve` is past its graceful shutdown here), and
    // before the error, which is the last word.
    crate::telemetry::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `serve`: the config is read before the runtime is built, since it says
/// how many threads the runtime gets.
fn run_serve(config: &Path, args: ServeArgs) -> Result<(), Failure> {
    let options = args.load_options();
    let settings = load_with(config, &options)?;
    let threads = settings.server.runtime_threads();
    build_runtime(threads)?.block_on(async move {
        // On a worker, not on the thread that called `block_on`: then the
        // accept loop and the connections it spawns share threads instead
        // of waking each other across them.
        let config = config.to_owned();
        tokio::spawn(async move { serve(&config, options, settings).await })
            .await
            .unwrap_or_else(|e| Err(runtime(format!("the server task failed: {e}"))))
    })
}

/// The async runtime with `threads` threads. One thread gets tokio's
/// single-threaded scheduler: with nothing to steal work from, the
/// multi-threaded one only adds synchronisation to every wake-up (and its
/// `block_on` thread would sit beside the one worker).
fn build_runtime(threads: usize) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| runtime(format!("cannot start the async runtime: {e}")))
}

fn load(path: &Path) -> Result<Arc<Settings>, Failure> {
    load_with(path, &LoadOptions::default())
}

/// The settings for a command that uses one tenant (`token`, `login`): with
/// `--tenant X`, another tenant whose `${VAR}` is unset does not stop it —
/// it is left out, with a note on stderr.
fn load_for_tenant(path: &Path, tenant: Option<&str>) -> Result<Arc<Settings>, Failure> {
    let options = LoadOptions {
        only_tenant: tenant.map(str::to_owned),
        ..LoadOptions::default()
    };
    let settings = Settings::load_with(path, &options).map_err(|error| {
        let other_tenants = matches!(
            &error,
            ConfigError::MissingVariable { key, .. } if key.starts_with("tenants.")
        );
        match (tenant, other_tenants) {
            // A tenant the command may not even use stops it: say how to
            // use one tenant alone.
            (None, true) => usage(format!(
                "{error} (to use one tenant without the others' variables, name it: --tenant NAME)"
            )),
            _ => usage(error.to_string()),
        }
    })?;
    let settings = Arc::new(settings);
    for note in &settings.left_out {
        eprintln!("note: {note}");
    }
    Ok(settings)
}

fn load_with(path: &Path, options: &LoadOptions) -> Result<Arc<Settings>, Failure> {
    Settings::load_with(path, options)
        .map(Arc::new)
        .map_err(|e| usage(e.to_string()))
}

fn build(settings: Arc<Settings>) -> Result<Arc<Proxy>, Failure> {
    Proxy::new(settings)
        .map(Arc::new)
        .map_err(|e| usage(e.to_string()))
}

/// The proxy `serve` and `demo` run, which a reload may replace.
fn build_live(settings: Arc<Settings>) -> Result<Arc<Live>, Failure> {
    Live::new(settings)
        .map(Arc::new)
        .map_err(|e| usage(e.to_string()))
}

/// Binds `listen`, configured as `key`, which the error names.
async fn bind_as(listen: SocketAddr, key: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(listen).await.map_err(|e| {
        runtime(format!(
            "cannot listen on {listen}: {e} (is another sfmc-proxy running? change {key})"
        ))
    })
}

/// Binds every address `listen` names. `localhost:PORT` became 127.0.0.1
/// and [::1]: with port 0 the second gets the port the system gave the
/// first, and on a host without IPv6 its [::1] is left out with a warning.
async fn bind_all(listen: &[SocketAddr], key: &str) -> Result<Vec<TcpListener>, Failure> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    for (i, &addr) in listen.iter().enumerate() {
        let v4_twin = i
            .checked_sub(1)
            .and_then(|before| listen.get(before))
            .filter(|before| {
                addr.ip() == std::net::Ipv6Addr::LOCALHOST
                    && before.ip() == std::net::Ipv4Addr::LOCALHOST
                    && before.port() == addr.port()
            });
        let mut target = addr;
        if let (Some(_), 0, Some(bound)) = (
            v4_twin,
            addr.port(),
            listeners.last().and_then(|l| l.local_addr().ok()),
        ) {
            target.set_port(bound.port());
        }
        match TcpListener::bind(target).await {
            Ok(listener) => listeners.push(listener),
            Err(error) if v4_twin.is_some() && error.kind() != std::io::ErrorKind::AddrInUse => {
                tracing::warn!(%error, "localhost: [::1] cannot be had on this host (no IPv6 loopback?); listening on 127.0.0.1 only");
            }
            Err(error) => {
                return Err(runtime(format!(
                    "cannot listen on {target}: {error} (is another sfmc-proxy running? change {key})"
                )));
            }
        }
    }
    Ok(listeners)
}

/// Raises the open-files limit, and says so when it is still too low for
/// `server.max_connections` (plus the proxy's own: listeners, SFMC pools).
fn warn_if_few_open_files(settings: &Settings) {
    let Some(files) = crate::server::raise_open_files_limit() else {
        return;
    };
    let max_connections = settings.server.max_connections;
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(128);
    if files < wanted {
        tracing::warn!(
            open_files_limit = files,
            max_connections,
            "this process may open only {files} files, fewer than server.max_connections ({max_connections}) needs: when they run out, the connection idle the longest is closed for a new one. Raise the limit (ulimit -n; LimitNOFILE= in systemd; SoftResourceLimits in launchd) or lower server.max_connections"
        );
    }
}

async fn serve(
    config: &Path,
    options: LoadOptions,
    settings: Arc<Settings>,
) -> Result<(), Failure> {
    let live = build_live(settings.clone())?;
    let key = options
        .listen
        .as_ref()
        .map_or("server.listen or --listen", |given| given.source);
    warn_if_few_open_files(&settings);
    let listeners = bind_all(&settings.server.listen, key).await?;
    // Before the line that says the proxy listens: from then on a SIGHUP
    // reloads (re-read as at start: the same path, flags and environment)
    // instead of ending the process.
    let path = config.to_owned();
    crate::reload::watch_sighup(live.clone(), move || Settings::load_with(&path, &options))
        .map_err(|e| runtime(format!("cannot watch for SIGHUP (config reload): {e}")))?;
    // The bound addresses, not the configured ones: with port 0 the system
    // picks the port, and this line is where the user learns it.
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|listener| listener.local_addr().ok())
        .collect();
    let first = bound
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    tracing::info!(
        listen = %first,
        listen_all = %crate::config::list_addresses(&bound),
        tenants = %settings.tenant_names(),
        worker_threads = settings.server.runtime_threads(),
        "sfmc-proxy listening on {}; point SFMC clients at {}",
        crate::config::list_addresses(&bound),
        client_url(first)
    );
    for note in settings.tenants.iter().flat_map(|t| &t.notes) {
        tracing::warn!("config: {note}; write it so to silence this");
    }
    let admin = match settings.server.admin_listen {
        Some(addr) => {
            let admin = bind_as(addr, "server.admin_listen").await?;
            let bound = admin.local_addr().unwrap_or(addr);
            tracing::info!(admin_listen = %bound, "admin paths (/_proxy/*, no inbound key) on http://{bound}/_proxy/");
            Some(admin)
        }
        None => None,
    };
    crate::server::serve_with_admin(listeners, admin, live, shutdown_signal()).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` sends); in-flight
/// requests then get `server.shutdown_timeout` to finish.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// Every command but a plain `serve`, on the default runtime.
async fn run_command(command: Command, config: &Path) -> Result<(), Failure> {
    match command {
        Command::Serve(args) => {
            let options = args.load_options();
            serve(config, options.clone(), load_with(config, &options)?).await
        }
        Command::Check {
            json,
            offline,
            fresh,
        } => check::run(config, json, offline, fresh).await,
        Command::Token {
            tenant,
            account_id,
            scope,
            fresh,
        } => {
            token::run(
                config,
                tenant.as_deref(),
                account_id.as_deref(),
                scope.as_deref(),
                fresh,
            )
            .await
        }
        Command::Login { tenant, account_id } => {
            login::run(config, tenant.as_deref(), account_id.as_deref()).await
        }
        #[cfg(feature = "demo")]
        Command::Demo { listen } => demo::run(listen).await,
    }
}

/// `--tenant NAME`, or the default tenant.
fn pick_tenant<'a>(
    settings: &'a Settings,
    name: Option<&str>,
) -> Result<&'a Arc<crate::config::Tenant>, Failure> {
    settings
        .tenant_or_default(name)
        .map_err(|missing| match missing {
            NoTenant::Unknown(name) => usage(format!(
                "--tenant {name}: no such tenant (configured: {})",
                settings.tenant_names()
            )),
            NoTenant::NoDefault => usage(format!(
                "several tenants and no default: pass --tenant ({})",
                settings.tenant_names()
            )),
        })
}

/// A business unit or scope the tenant refuses, in the words of the flag
/// that asked for it (not the header a proxy client would have sent).
fn refused_flag(refused: KeyRefused) -> Failure {
    usage(match refused {
        KeyRefused::NotAMid(mid) => {
            format!("--account-id {mid}: not a business unit MID ({MID_RULE})")
        }
        KeyRefused::MidNotAllowed { tenant, mid } => format!(
            "--account-id {mid}: tenant `{tenant}` does not allow business unit {mid} (not in tenants.{tenant}.account_ids)"
        ),
        KeyRefused::BadScope => "--scope: must be space-separated scope names".to_owned(),
    })
}

/// Where a client should point, for the start-up line: the address itself,
/// unless it is 0.0.0.0 or [::] — every interface, which no client can call.
fn client_url(listen: SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return format!("http://{listen}/");
    }
    let port = listen.port();
    let this_host = match listen {
        SocketAddr::V4(_) => format!("http://127.0.0.1:{port}/"),
        SocketAddr::V6(_) => format!("http://[::1]:{port}/"),
    };
    format!(
        "{this_host} on this host, or this host's name or address on port {port} from elsewhere ({} listens on every interface)",
        listen.ip()
    )
}

#[cfg(test)]
mod tests {
    use super::client_url;

    #[test]
    fn the_start_up_line_names_an_address_a_client_can_call() {
        let url = |text: &str| client_url(text.parse().expect("address"));
        assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080/");
        assert_eq!(url("[::1]:8080"), "http://[::1]:8080/");
        assert_eq!(url("192.0.2.7:8080"), "http://192.0.2.7:8080/");
        let every = url("0.0.0.0:8080");
        assert!(
            every.starts_with("http://127.0.0.1:8080/ on this host"),
            "{every}"
        );
        assert!(
            every.contains("0.0.0.0 listens on every interface"),
            "{every}"
        );
        assert!(!every.contains("http://0.0.0.0"), "{every}");
        assert!(url("[::]:9000").starts_with("http://[::1]:9000/ on this host"));
    }
}
