//! Outside programs some tests drive: Debian's `prometheus`, `tinyproxy`,
//! `stunnel4` and `redis-server`, and a Python with `prometheus_client` (its strict OpenMetrics
//! parser). Each is set up here the first time a test asks, so `cargo test`
//! needs no step before it: the Python package goes into a venv under the
//! tests' target directory; a Debian package is installed with apt-get when
//! missing and the tests run as root (CI), and otherwise the test says how to
//! install it. Also how a test starts such a program and waits until its
//! log says it is ready.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::Child;

/// The `prometheus-client` version the parser check uses (PyPI).
const PYTHON_PROMETHEUS_CLIENT: &str = "prometheus-client==0.26.0";

/// One set-up at a time (the tests of this binary run as threads).
static SETUP: Mutex<()> = Mutex::new(());

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Debian's `prometheus` binary, installed first if need be.
pub fn prometheus() -> PathBuf {
    debian_binary("prometheus", "/usr/bin/prometheus")
}

/// Debian's `tinyproxy` (the forward proxy of the egress tests), installed
/// first if need be.
pub fn tinyproxy() -> PathBuf {
    debian_binary("tinyproxy", "/usr/bin/tinyproxy")
}

/// Debian's `stunnel` (the TLS front of an `https://` egress proxy), from
/// the `stunnel4` package, installed first if need be.
pub fn stunnel() -> PathBuf {
    debian_binary("stunnel4", "/usr/bin/stunnel4")
}

/// Debian's `redis-server` (the fleet tests' shared store), installed
/// first if need be.
pub fn redis_server() -> PathBuf {
    debian_binary("redis-server", "/usr/bin/redis-server")
}

/// `binary` from Debian's `package`: as it is when present, else installed
/// with apt-get when the tests run as root (CI); otherwise the test fails
/// saying how to install it.
fn debian_binary(package: &str, binary: &str) -> PathBuf {
    let binary = PathBuf::from(binary);
    let _once = SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if binary.exists() {
        return binary;
    }
    assert!(
        is_root(),
        "this test drives Debian's {package}: install it \
         (sudo apt-get install --no-install-recommends {package}) and run it again"
    );
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    );
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {package}"),
    );
    assert!(
        binary.exists(),
        "apt-get installed {package} but {binary:?} is missing"
    );
    binary
}

/// A Python that has `prometheus_client`: a venv made once under the tests'
/// target directory.
pub fn python_with_prometheus_client() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-prometheus-client");
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    let _once = SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if ready.exists() {
        return python;
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    );
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PYTHON_PROMETHEUS_CLIENT,
        ]),
        "pip install prometheus-client",
    );
    std::fs::write(&ready, PYTHON_PROMETHEUS_CLIENT).expect("mark the venv ready");
    python
}

/// How long a child may take to say it listens.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// How often its log is read meanwhile.
const POLL: Duration = Duration::from_millis(10);

/// Spawns `command` with its stderr in `stderr` (read when it fails to
/// start), killed when the `Child` drops.
pub fn spawn(mut command: tokio::process::Command, stderr: &Path) -> Child {
    let file = File::create(stderr).unwrap_or_else(|e| panic!("create {stderr:?}: {e}"));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"))
}

/// Reads `log` until it has `needle`, for at most `READY_WITHIN`; fails
/// early, with the log and stderr, when the child exits first.
pub async fn wait_for_line(child: &mut Child, log: &Path, stderr: &Path, needle: &str, what: &str) {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let text = read_lossy(log);
        if text.contains(needle) {
            return;
        }
        if let Some(status) = child.try_wait().expect("child status") {
            panic!(
                "{what} exited ({status}) before it listened:\n{text}\nstderr:\n{}",
                read_lossy(stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not log {needle:?} within {READY_WITHIN:?}:\n{text}\nstderr:\n{}",
            read_lossy(stderr)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A file's text, "" while it does not exist yet.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
