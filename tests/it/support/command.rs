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

/// Starts `demo` on a free port with `envs` set and `unset` removed, and
/// returns it (killed when dropped) with what it printed up to its
/// "Press Ctrl-C" line: the self-check, then the lines to try.
#[cfg(feature = "demo")]
pub async fn demo_ready(
    envs: &[(&str, &str)],
    unset: &[&str],
) -> (tokio::process::Child, Vec<String>) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"));
    command
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in unset {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut printed = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read stdout") {
        let done = line.contains("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    (child, printed)
}
