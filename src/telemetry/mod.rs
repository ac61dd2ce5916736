//! Logging: the subscriber set-up (`RUST_LOG`, text or JSON) on stderr
//! through a batching writer off the request path (`writer`); the one
//! access-log event per request (`access`), written when its response ends,
//! encoded straight into its line (`line`); the metrics behind
//! `/_proxy/metrics` (`metrics`), which the same record feeds when the
//! response ends.

mod access;
mod line;
pub mod metrics;
mod writer;

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing_subscriber::EnvFilter;

pub(crate) use access::clip;
pub use access::{AccessRecord, Logged, X_REQUEST_ID, request_id};
use line::{ACCESS, AccessLine};
pub use metrics::Metrics;
pub use writer::{dropped_lines, finish};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where `init` sends access lines it encodes itself. Unset (a terminal's
/// colours, a library user's own subscriber), the access event goes through
/// `tracing` like any other.
static ACCESS_LINES: OnceLock<AccessLines> = OnceLock::new();

struct AccessLines {
    format: LogFormat,
    logs: &'static writer::Batching,
    /// Whether the filter (`RUST_LOG`, read once by `init`) passes access
    /// lines at info and at debug. Asked once: `tracing::enabled!` asks the
    /// subscriber again on every call, some 100 instructions a request.
    info: bool,
    debug: bool,
}

/// Whether a request's access line is wanted: at info, or — a probe's own
/// answer (`probe`) — at debug.
fn access_wanted(probe: bool) -> bool {
    match ACCESS_LINES.get() {
        Some(lines) => lines.info || (probe && lines.debug),
        None => {
            tracing::enabled!(target: ACCESS, tracing::Level::INFO)
                || (probe && tracing::enabled!(target: ACCESS, tracing::Level::DEBUG))
        }
    }
}

/// Writes out the log lines still waiting when dropped (also while a panic
/// unwinds); [`finish`] does the same where no destructor runs (`exit`).
#[must_use = "dropping it at once writes the log without batching"]
pub struct LogGuard {
    /// Only the `init` that installed the subscriber finishes the writer:
    /// a second call's guard, dropped early, must not end batching.
    installed: bool,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if self.installed {
            finish();
        }
    }
}

/// Installs the global subscriber on stderr, through the batching writer.
/// `RUST_LOG` overrides the default filter (`info`). Safe to call twice:
/// the second call does nothing. Keep the guard until the process exits.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes garble files, journald and `docker logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let Some(logs) = writer::install() else {
        // No thread for the writer: straight to stderr, as before.
        let builder = builder.with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        return LogGuard { installed: false };
    };
    let builder = builder.with_writer(writer::Lines(logs));
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // The encoder writes no colours: on a terminal the subscriber does it.
    if installed.is_ok() && !ansi {
        let _ = ACCESS_LINES.set(AccessLines {
            format,
            logs,
            info: tracing::enabled!(target: ACCESS, tracing::Level::INFO),
            debug: tracing::enabled!(target: ACCESS, tracing::Level::DEBUG),
        });
    }
    LogGuard {
        installed: installed.is_ok(),
    }
}

/// Writes one access event (at debug when `debug`): encoded into a reused
/// buffer and handed to the writer when `init` set that up, else as a
/// `tracing` event.
fn write_access(line: &AccessLine<'_>, debug: bool) {
    thread_local! {
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let Some(lines) = ACCESS_LINES.get() else {
        line.event(debug);
        return;
    };
    // The record was kept because info is on; a probe's answer is at debug.
    if debug && !lines.debug {
        return;
    }
    let (format, logs) = (lines.format, lines.logs);
    LINE.with(|buffer| {
        let Ok(mut buffer) = buffer.try_borrow_mut() else {
            return line.event(debug);
        };
        buffer.clear();
        line.encode(format, debug, SystemTime::now(), &mut buffer);
        logs.write_line(&buffer);
        // A 1 KiB path and 256-byte user agent make a line well under 4 KiB.
        buffer.shrink_to(4096);
    });
}
