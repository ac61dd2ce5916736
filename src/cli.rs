//! The command line: `serve` (default), `check`, `token`, `login`, `demo` (with
//! the default feature `demo`, which brings in the fake tenant). Exit codes:
//! 0 ok, 2 bad config or usage (the message names the key or flag), 1 a
//! runtime failure (SFMC refused or unreachable, port in use).

/// `println!` for the subcommands' output, which is often piped
/// (`check | head`): when the reader has gone away the command has nothing
/// left to say, so it exits quietly (0) instead of panicking as `println!`
/// does on a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(error) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
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

use crate::config::{NoTenant, Settings, default_worker_threads};
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::reload::Live;
use crate::telemetry::LogFormat;
use crate::token::KeyRefused;

#[derive(Debug, Parser)]
#[command(
    name = "sfmc-proxy",
    version,
    about = "Authenticating reverse proxy for Salesforce Marketing Cloud APIs"
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
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate the config, get a token for every tenant and business unit
    /// (default and account_ids) and report (never prints tokens).
    Check {
        /// One JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Validate the config and say what would be checked; no token request.
        #[arg(long)]
        offline: bool,
    },
    /// Print a valid access token to stdout (for curl or Postman); reuses the
    /// cached one until its refresh window.
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
    Login {
        /// Tenant name (default: the default tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Business unit MID to log in to (default: the tenant's account_id).
        #[arg(long)]
        account_id: Option<String>,
    },
    /// Start an embedded fake SFMC tenant and the proxy in front of it.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
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
    let result = match cli.command.unwrap_or(Command::Serve) {
        // The config is read before the runtime is built: it says how many
        // threads the runtime gets.
        Command::Serve => load(&cli.config).and_then(|settings| {
            let threads = settings.server.runtime_threads();
            build_runtime(threads)?.block_on(async move {
                // On a worker, not on the thread that called `block_on`: then
                // the accept loop and the connections it spawns share threads
                // instead of waking each other across them.
                let config = cli.config.clone();
                tokio::spawn(async move { serve(&config, settings).await })
                    .await
                    .unwrap_or_else(|e| Err(runtime(format!("the server task failed: {e}"))))
            })
        }),
        command => build_runtime(default_worker_threads())
            .and_then(|rt| rt.block_on(run_command(command, &cli.config))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
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
    Settings::load(path)
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

async fn bind(listen: SocketAddr) -> Result<TcpListener, Failure> {
    bind_as(listen, "server.listen or --listen").await
}

/// Binds `listen`, configured as `key`, which the error names.
async fn bind_as(listen: SocketAddr, key: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(listen).await.map_err(|e| {
        runtime(format!(
            "cannot listen on {listen}: {e} (is another sfmc-proxy running? change {key})"
        ))
    })
}

async fn serve(config: &Path, settings: Arc<Settings>) -> Result<(), Failure> {
    let live = build_live(settings.clone())?;
    let listener = bind(settings.server.listen).await?;
    // Before the line that says the proxy listens: from then on a SIGHUP
    // reloads (re-read as at start: the same path, the same environment)
    // instead of ending the process.
    let path = config.to_owned();
    crate::reload::watch_sighup(live.clone(), move || Settings::load(&path))
        .map_err(|e| runtime(format!("cannot watch for SIGHUP (config reload): {e}")))?;
    // The bound address, not the configured one: with port 0 the system
    // picks the port, and this line is where the user learns it.
    let listen = listener.local_addr().unwrap_or(settings.server.listen);
    tracing::info!(
        %listen,
        tenants = %settings.tenant_names(),
        worker_threads = settings.server.runtime_threads(),
        "sfmc-proxy listening; point SFMC clients at {}",
        client_url(listen)
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
    crate::server::serve_with_admin(listener, admin, live, shutdown_signal()).await;
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
        Command::Serve => serve(config, load(config)?).await,
        Command::Check { json, offline } => check::run(config, json, offline).await,
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

/// A business unit or scope the tenant refuses: a usage error, in the words
/// a client of the proxy would get.
fn refused_key(refused: KeyRefused) -> Failure {
    usage(ProxyError::from(refused).to_string())
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
