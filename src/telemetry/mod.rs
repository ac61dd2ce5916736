//! Logging: the subscriber set-up (`RUST_LOG`, text or JSON) and the one
//! access-log event per request (`access`), written when its response ends;
//! the metrics behind `/_proxy/metrics` (`metrics`), which the same record
//! feeds when the response ends.

mod access;
pub mod metrics;

use tracing_subscriber::EnvFilter;

pub use access::{AccessRecord, Logged, X_REQUEST_ID, request_id};
pub use metrics::Metrics;

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
