//! The binary run once to completion, as a user types it: its exit code,
//! stdout and stderr, with a config file written for the test.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use super::temp_dir;

/// `sfmc-proxy --config CONFIG ARGS…` with `envs` set (and none of the
/// proxy's own variables inherited from the test's environment). Its state
/// (the token store, `token`'s and `check`'s token cache) is kept in
/// `state/` beside the config, never in the real home.
pub async fn run_binary(args: &[&str], config: &Path, envs: &[(&str, &str)]) -> Output {
    binary_command(args, config, envs)
        .output()
        .await
        .expect("binary runs")
}

/// [`run_binary`] with its stdout going to `stdout` (a closed pipe, a full
/// disk), not to a pipe the test reads; the output's stdout is then empty.
pub async fn run_binary_into(args: &[&str], config: &Path, stdout: Stdio) -> Output {
    // Not `output()`: it would replace stdout with a pipe of its own.
    binary_command(args, config, &[])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs")
        .wait_with_output()
        .await
        .expect("binary ends")
}

/// The command [`run_binary`] runs, for a test that drives the process itself.
pub fn binary_command(
    args: &[&str],
    config: &Path,
    envs: &[(&str, &str)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"));
    command.arg("--config").arg(config).args(args);
    command.env("XDG_STATE_HOME", state_dir(config));
    for name in [
        "SFMC_PROXY_CONFIG",
        "SFMC_PROXY_LISTEN",
        "SFMC_PROXY_LOG_FORMAT",
    ] {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.kill_on_drop(true);
    command
}

/// Where `run_binary` keeps the binary's state for `config`: `state/` beside it.
pub fn state_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("state")
}

/// `text` as `proxy.toml` in a new temp directory.
pub fn config_file(name: &str, text: &str) -> PathBuf {
    let path = temp_dir(name).join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The stdout of a run that must have exited 0 (else the test fails,
/// showing both streams).
pub fn succeeded(output: &Output) -> String {
    let printed = stdout_of(output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{printed}{}",
        stderr_of(output)
    );
    printed
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
