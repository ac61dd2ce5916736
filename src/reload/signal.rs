//! SIGHUP: the config file is read again exactly as at start-up (the same
//! path, `${VAR}` from the environment, every `*_file` it names) and
//! applied with [`super::Live::reload_from`]. Elsewhere than on unix there
//! is no SIGHUP, and nothing is watched.

use std::sync::Arc;

use super::Live;
use crate::config::{ConfigError, Settings};

/// Reloads with `load` on every SIGHUP from now on (signals that arrive
/// during a reload are coalesced into one more). The handler is installed
/// before this returns, so a SIGHUP no longer ends the process (its default).
#[cfg(unix)]
pub fn watch_sighup<F>(live: Arc<Live>, load: F) -> std::io::Result<()>
where
    F: Fn() -> Result<Settings, ConfigError> + Send + Sync + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let load = Arc::new(load);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let (live, load) = (live.clone(), load.clone());
            // Files are read and certificates parsed: off the runtime's threads.
            let reload = tokio::task::spawn_blocking(move || {
                // Logged (and counted) inside.
                let _ = live.reload_from(|| load());
            });
            if let Err(error) = reload.await {
                tracing::error!(%error, "config reload failed to run; the running configuration stays");
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn watch_sighup<F>(_live: Arc<Live>, _load: F) -> std::io::Result<()>
where
    F: Fn() -> Result<Settings, ConfigError> + Send + Sync + 'static,
{
    Ok(())
}
