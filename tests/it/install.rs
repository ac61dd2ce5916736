//! Installing and running it (README "Install"): each shipped file run
//! through the binary the way its service manager starts it, against the
//! fake tenant — the systemd unit's `ExecStart`, with its config, its
//! credentials and state directory, and its `ExecReload`; the launchd agent's
//! `ProgramArguments`; the image's `CMD` with `proxy.container.toml` and the
//! environment `docker run -e` passes; contrib/fleet's replicas with the
//! secrets and variables its compose.yaml gives them, on a Redis with a
//! password, probed as its haproxy.cfg probes them.
//!
//! `serve --listen` does not exist (yet), and 8080 may be taken: a test that
//! serves runs a temporary copy of the shipped config with its `listen` line
//! alone changed to port 0 (the proxy logs the port it bound).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use http::Request;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use crate::support::redis::RedisServer;
use crate::support::*;

const KEY: &str = "install-test-inbound-key-0123";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read_repo(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `text` with its one `listen = …` line set to `listen`.
fn with_listen(text: &str, listen: &str) -> String {
    let mut found = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.starts_with("listen = ") {
            true => {
                found += 1;
                format!("listen = \"{listen}\"")
            }
            false => line.to_owned(),
        })
        .collect();
    assert_eq!(found, 1, "one listen line in:\n{text}");
    lines.join("\n") + "\n"
}

/// The values of `Key=` lines in a unit file, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .collect()
}

/// The binary started with exactly `args` and `envs` (nothing inherited: a
/// service manager passes no shell environment), its stderr read line by line.
struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    log: Vec<String>,
}

impl Running {
    fn spawn(args: &[String], envs: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
            .args(args)
            .env_clear()
            .envs(envs.iter().map(|(name, value)| (*name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("proxy starts");
        let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Reads stderr up to the next line `wanted` accepts (the timeout only
    /// bounds a test that would otherwise hang).
    async fn line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read stderr") {
                self.log.push(line.clone());
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_secs(20), read).await {
            Ok(Some(line)) => line,
            _ => panic!("no such line in the log:\n{}", self.log.join("\n")),
        }
    }

    /// A line already read that `wanted` accepts, else the next one (the
    /// prefetch's line may come before or after the start-up line).
    async fn seen(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        match self.log.iter().find(|l| wanted(l)) {
            Some(line) => line.clone(),
            None => self.line(wanted).await,
        }
    }

    /// Waits for the start-up line; the address a client on this host calls
    /// (127.0.0.1 for a proxy on 0.0.0.0), from its `listen` field in either
    /// log format.
    async fn started(&mut self) -> SocketAddr {
        let line = self.line(|l| l.contains("sfmc-proxy listening")).await;
        let listen = match serde_json::from_str::<Value>(&line) {
            Ok(event) => event["listen"].as_str().unwrap_or_default().to_owned(),
            Err(_) => line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("listen="))
                .unwrap_or_default()
                .to_owned(),
        };
        let mut addr: SocketAddr = listen
            .parse()
            .unwrap_or_else(|_| panic!("a listen address in {line}"));
        assert_ne!(addr.port(), 0, "{line}");
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        addr
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the proxy runs").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Its exit status after SIGTERM, and the whole log.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.log.push(line);
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the proxy exits")
            .expect("exit status");
        (status, self.log.join("\n"))
    }
}

async fn run_once(args: &[&str], envs: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"))
        .args(args)
        .env_clear()
        .envs(envs.iter().map(|(name, value)| (*name, value)))
        .kill_on_drop(true)
        .output()
        .await
        .expect("binary runs")
}

/// A request to `addr` with `Host: host` and `headers`.
async fn call(
    method: &str,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    TestClient::new()
        .fetch(builder.body(empty()).expect("request"))
        .await
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// What systemd gives the unit's process: its credentials (LoadCredential=,
/// named as the unit names them) in $CREDENTIALS_DIRECTORY, its
/// $STATE_DIRECTORY, and the unit's Environment= (the tenant, as a drop-in
/// sets it).
struct SystemdRun {
    dir: PathBuf,
    envs: Vec<(&'static str, String)>,
}

fn systemd_run(name: &str, fake: &FakeTenant, unit: &str) -> SystemdRun {
    let dir = temp_dir(name);
    let credentials = dir.join("credentials");
    let state = dir.join("state");
    std::fs::create_dir_all(&credentials).expect("mkdir");
    std::fs::create_dir_all(&state).expect("mkdir");
    let mut names = BTreeSet::new();
    for credential in unit_values(unit, "LoadCredential") {
        let (name, source) = credential
            .split_once(':')
            .expect("LoadCredential=NAME:PATH");
        assert!(source.starts_with("/etc/sfmc-proxy/"), "{credential}");
        let value = match name {
            "client-secret" => CLIENT_SECRET,
            "inbound-keys" => KEY,
            other => panic!("a credential the test does not know: {other}"),
        };
        write_private(&credentials.join(name), &format!("{value}\n"));
        names.insert(name);
    }
    assert_eq!(
        names,
        BTreeSet::from(["client-secret", "inbound-keys"]),
        "the unit loads the secret and the inbound keys"
    );
    let envs = vec![
        ("CREDENTIALS_DIRECTORY", credentials.display().to_string()),
        ("STATE_DIRECTORY", state.display().to_string()),
        ("SFMC_AUTH_URL", fake.auth_url()),
        ("SFMC_CLIENT_ID", CLIENT_ID.to_owned()),
    ];
    SystemdRun { dir, envs }
}

#[tokio::test]
async fn the_systemd_config_reads_its_credentials_and_state_directory_from_the_unit() {
    let fake = start_fake().await;
    let unit = read_repo("contrib/sfmc-proxy.service");
    let config = read_repo("contrib/proxy.systemd.toml");
    // Every credential the unit loads is read by the config from where
    // systemd puts it, and the token store is in the unit's StateDirectory.
    for credential in unit_values(&unit, "LoadCredential") {
        let name = credential.split(':').next().unwrap_or_default();
        assert!(
            config.contains(&format!("\"${{CREDENTIALS_DIRECTORY}}/{name}\"")),
            "the config reads credential {name}"
        );
    }
    assert_eq!(unit_values(&unit, "StateDirectory"), ["sfmc-proxy"]);
    assert!(config.contains("store_file = \"${STATE_DIRECTORY}/tokens.json\""));

    let run = systemd_run("systemd-check", &fake, &unit);
    let path = repo_file("contrib/proxy.systemd.toml");
    let path = path.to_str().expect("utf-8 path");
    let output = run_once(&["--config", path, "check"], &run.envs).await;
    let (stdout, stderr) = (succeeded(&output), stderr_of(&output));
    assert!(
        stdout.contains("main BU of the package (default): ok"),
        "{stdout}"
    );
    assert_eq!(fake.token_requests(), 1);
    let token_request = fake.last_token_request().expect("a token request");
    assert_eq!(
        token_request["client_secret"], CLIENT_SECRET,
        "read from the credential"
    );
    assert!(!stdout.contains(CLIENT_SECRET) && !stderr.contains(CLIENT_SECRET));

    // Outside the unit (no $CREDENTIALS_DIRECTORY) it says what is missing.
    let outside: Vec<_> = run
        .envs
        .iter()
        .filter(|(name, _)| *name != "CREDENTIALS_DIRECTORY")
        .cloned()
        .collect();
    let output = run_once(&["--config", path, "check"], &outside).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("CREDENTIALS_DIRECTORY is not set"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&run.dir);
}

#[tokio::test]
async fn the_systemd_units_exec_start_serves_with_the_key_reloads_on_exec_reload_and_stops_cleanly()
{
    let fake = start_fake().await;
    let unit = read_repo("contrib/sfmc-proxy.service");
    let run = systemd_run("systemd-serve", &fake, &unit);
    let config = run.dir.join("proxy.toml");
    let shipped = read_repo("contrib/proxy.systemd.toml");
    std::fs::write(&config, with_listen(&shipped, "127.0.0.1:0")).expect("write config");

    // ExecStart as written, with the config moved to the test's copy.
    let exec_start = unit_values(&unit, "ExecStart");
    assert_eq!(exec_start.len(), 1, "{exec_start:?}");
    let mut words = exec_start[0].split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/sfmc-proxy"));
    let args: Vec<String> = words
        .map(|word| match word {
            "/etc/sfmc-proxy/proxy.toml" => config.display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    assert!(args.contains(&config.display().to_string()), "{args:?}");
    let mut proxy = Running::spawn(&args, &run.envs);
    let addr = proxy.started().await;
    let host = addr.to_string();
    proxy
        .seen(|l| l.contains("prefetch: tenant `main` got a token"))
        .await;

    let keyless = call("POST", addr, &host, "/hub/v1/x", &[]).await;
    assert_eq!(keyless.status, 401, "{}", keyless.text());
    assert_eq!(keyless.proxy_error(), Some("inbound_key_required"));
    let keyed = call("POST", addr, &host, "/hub/v1/x", &[("x-proxy-key", KEY)]).await;
    assert_eq!(keyed.status, 200, "{}", keyed.text());
    assert_eq!(fake.token_requests(), 1, "the prefetched token serves");

    // ExecReload: the operator edits proxy.toml, `systemctl reload` sends
    // SIGHUP; the file is read again with the same ${CREDENTIALS_DIRECTORY}.
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        ["/bin/kill -HUP $MAINPID"]
    );
    let edited = std::fs::read_to_string(&config).expect("read") + "read_only = true\n";
    std::fs::write(&config, edited).expect("edit config");
    proxy.signal("HUP");
    let reloaded = proxy.line(|l| l.contains("config reload")).await;
    assert!(reloaded.contains("config reloaded"), "{reloaded}");
    let refused = call("POST", addr, &host, "/hub/v1/x", &[("x-proxy-key", KEY)]).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.proxy_error(), Some("method_not_allowed"));
    let read = call("GET", addr, &host, "/hub/v1/x", &[("x-proxy-key", KEY)]).await;
    assert_eq!(read.status, 200, "{}", read.text());

    // `systemctl stop` sends SIGTERM: a clean exit, which Restart=on-failure
    // leaves stopped.
    assert_eq!(unit_values(&unit, "Restart"), ["on-failure"]);
    let (status, log) = proxy.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        !log.contains(CLIENT_SECRET) && !log.contains(KEY),
        "no secret logged"
    );
    let _ = std::fs::remove_dir_all(&run.dir);
}

/// The plist as JSON, by Python's plistlib (which refuses a malformed one).
fn plist(path: &Path) -> Value {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "plistlib reads {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

#[tokio::test]
async fn the_launchd_agents_program_arguments_run_the_proxy() {
    let path = repo_file("contrib/local.sfmc-proxy.plist");
    let agent = plist(&path);
    assert_eq!(agent["Label"], "local.sfmc-proxy", "the file's name");
    assert_eq!(agent["RunAtLoad"], true);
    assert_eq!(agent["KeepAlive"]["SuccessfulExit"], false);
    assert!(
        agent["StandardErrorPath"]
            .as_str()
            .is_some_and(|p| p.starts_with("/Users/USERNAME/Library/Logs/")),
        "{agent}"
    );
    assert!(
        agent.get("EnvironmentVariables").is_none(),
        "no secret in the plist"
    );
    let arguments: Vec<&str> = agent["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    // Where `cargo install` puts the binary.
    assert_eq!(arguments[0], "/Users/USERNAME/.cargo/bin/sfmc-proxy");

    // The arguments as launchd passes them, the config moved to the test's
    // (the fake tenant, its secret from a client_secret_file as the README
    // says), HOME as launchd sets it.
    let fake = start_fake().await;
    let dir = temp_dir("launchd");
    write_private(&dir.join("client-secret"), &format!("{CLIENT_SECRET}\n"));
    let config = dir.join("proxy.toml");
    let text = TestProxy::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .tenant(Tenant::new("acme", &fake))
        .render()
        .replace(
            &format!("client_secret = \"{CLIENT_SECRET}\""),
            "client_secret_file = \"client-secret\"",
        );
    assert!(text.contains("client_secret_file"), "{text}");
    std::fs::write(&config, text).expect("write config");
    let at = arguments
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    assert_eq!(
        arguments[at + 1],
        "/Users/USERNAME/.config/sfmc-proxy/proxy.toml"
    );
    let args: Vec<String> = arguments[1..]
        .iter()
        .enumerate()
        .map(|(i, a)| match i + 1 == at + 1 {
            true => config.display().to_string(),
            false => (*a).to_owned(),
        })
        .collect();
    let mut proxy = Running::spawn(&args, &[("HOME", dir.display().to_string())]);
    let addr = proxy.started().await;
    let reply = call("GET", addr, &addr.to_string(), "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(fake.token_requests(), 1);
    let (status, log) = proxy.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `docker run -e SFMC_AUTH_URL -e SFMC_CLIENT_ID -e SFMC_CLIENT_SECRET
/// -e SFMC_PROXY_KEY` passes, and the image's own `ENV` (`config` at the
/// mount's place, `state` at /var/lib's, where the image keeps its state)
/// and its user's HOME.
fn container_env(fake: &FakeTenant, config: &Path, state: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SFMC_PROXY_CONFIG", config.display().to_string()),
        ("XDG_STATE_HOME", state.display().to_string()),
        ("HOME", "/home/nonroot".to_owned()),
        ("SFMC_AUTH_URL", fake.auth_url()),
        ("SFMC_CLIENT_ID", CLIENT_ID.to_owned()),
        ("SFMC_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("SFMC_PROXY_KEY", KEY.to_owned()),
    ]
}

#[tokio::test]
async fn the_container_config_is_the_one_the_image_and_readme_use_and_gets_a_token() {
    let dockerfile = read_repo("Dockerfile");
    assert!(dockerfile.contains(
        "\nENV SFMC_PROXY_CONFIG=/etc/sfmc-proxy/proxy.toml \\\n    XDG_STATE_HOME=/var/lib\n"
    ));
    assert!(dockerfile.contains("/state /var/lib/sfmc-proxy\n"));
    assert!(dockerfile.contains("\nCMD [\"serve\"]\n"));
    let readme = read_repo("README.md");
    assert!(readme.contains("-v \"$PWD/proxy.container.toml:/etc/sfmc-proxy/proxy.toml:ro\""));
    let config = read_repo("proxy.container.toml");
    assert!(config.contains("\nlisten = \"0.0.0.0:8080\"\n"));
    assert!(config.contains("\ninbound_keys = [\"${SFMC_PROXY_KEY}\"]\n"));

    let fake = start_fake().await;
    let state = temp_dir("container-check");
    let output = run_once(
        &["check"],
        &container_env(&fake, &repo_file("proxy.container.toml"), &state),
    )
    .await;
    assert!(
        state
            .join("sfmc-proxy")
            .join("access-tokens.json")
            .is_file(),
        "the token cache is kept under XDG_STATE_HOME, the image's /var/lib"
    );
    let (stdout, stderr) = (succeeded(&output), stderr_of(&output));
    assert!(
        stdout.contains("main BU of the package (default): ok"),
        "{stdout}"
    );
    assert_eq!(fake.token_requests(), 1);
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
}

#[tokio::test]
async fn the_container_serves_every_address_with_the_key_and_refuses_a_call_without_it() {
    let fake = start_fake().await;
    let dir = temp_dir("container");
    let config = dir.join("proxy.toml");
    let shipped = read_repo("proxy.container.toml");
    std::fs::write(&config, with_listen(&shipped, "0.0.0.0:0")).expect("write config");
    // The image's CMD, its config from SFMC_PROXY_CONFIG.
    let mut proxy = Running::spawn(&["serve".to_owned()], &container_env(&fake, &config, &dir));
    let addr = proxy.started().await;
    proxy
        .seen(|l| l.contains("prefetch: tenant `main` got a token"))
        .await;
    // What curl sends through `-p 127.0.0.1:8080:8080`.
    let host = "127.0.0.1:8080";
    let path = "/asset/v1/content/assets?$page=1&$pageSize=5";

    let keyless = call("GET", addr, host, path, &[]).await;
    assert_eq!(keyless.status, 401, "{}", keyless.text());
    assert_eq!(keyless.proxy_error(), Some("inbound_key_required"));
    // `Authorization` on an API path is SFMC's header, not the proxy's key.
    let bearer = format!("Bearer {KEY}");
    let misplaced = call("GET", addr, host, path, &[("authorization", &bearer)]).await;
    assert_eq!(misplaced.status, 401, "{}", misplaced.text());
    assert_eq!(fake.token_requests(), 1, "the prefetch alone asked SFMC");

    let keyed = call("GET", addr, host, path, &[("x-proxy-key", KEY)]).await;
    assert_eq!(keyed.status, 200, "{}", keyed.text());
    let proxy_auth = call("GET", addr, host, path, &[("proxy-authorization", &bearer)]).await;
    assert_eq!(proxy_auth.status, 200, "{}", proxy_auth.text());
    // Any name reaches it with the key (another container, by service name).
    let by_name = call(
        "GET",
        addr,
        "sfmc-proxy:8080",
        path,
        &[("x-proxy-key", KEY)],
    )
    .await;
    assert_eq!(by_name.status, 200, "{}", by_name.text());
    assert_eq!(fake.token_requests(), 1, "one token served them all");

    // The probes the README gives: liveness without a key, readiness with it.
    let health = call("GET", addr, host, "/_proxy/health", &[]).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let ready = call("GET", addr, host, "/_proxy/ready", &[("x-proxy-key", KEY)]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let ready_bearer = call(
        "GET",
        addr,
        host,
        "/_proxy/ready",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(ready_bearer.status, 200, "{}", ready_bearer.text());

    let (status, log) = proxy.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        !log.contains(KEY) && !log.contains(CLIENT_SECRET),
        "no secret logged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_rotated_inbound_keys_file_applies_at_sighup_without_a_restart() {
    // A Docker or Kubernetes secret mounted as a file changes in place
    // (systemd's credentials do not: they are copied at start).
    let fake = start_fake().await;
    let dir = temp_dir("keys-file");
    let keys = dir.join("inbound-keys");
    write_private(&keys, &format!("{KEY}\n"));
    let config = dir.join("proxy.toml");
    let text = TestProxy::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .tenant(Tenant::new("acme", &fake))
        .render()
        .replacen(
            "[server]\n",
            &format!("[server]\ninbound_keys_file = \"{}\"\n", keys.display()),
            1,
        );
    assert!(text.contains("inbound_keys_file"), "{text}");
    std::fs::write(&config, text).expect("write config");
    let args: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let mut proxy = Running::spawn(&[args, vec!["serve".to_owned()]].concat(), &[]);
    let addr = proxy.started().await;
    let host = addr.to_string();
    let with = |key: &'static str| [("x-proxy-key", key)];
    assert_eq!(
        call("GET", addr, &host, "/hub/v1/x", &with(KEY))
            .await
            .status,
        200
    );

    // The new key beside the old one while clients move, then the old one gone.
    const NEW: &str = "install-test-rotated-key-4567";
    write_private(&keys, &format!("{KEY}\n{NEW}\n"));
    proxy.signal("HUP");
    let reloaded = proxy.line(|l| l.contains("config reload")).await;
    assert!(reloaded.contains("config reloaded"), "{reloaded}");
    assert_eq!(
        call("GET", addr, &host, "/hub/v1/x", &with(NEW))
            .await
            .status,
        200
    );
    assert_eq!(
        call("GET", addr, &host, "/hub/v1/x", &with(KEY))
            .await
            .status,
        200
    );
    write_private(&keys, &format!("{NEW}\n"));
    proxy.signal("HUP");
    let reloaded = proxy.line(|l| l.contains("config reload")).await;
    assert!(reloaded.contains("config reloaded"), "{reloaded}");
    let old = call("GET", addr, &host, "/hub/v1/x", &with(KEY)).await;
    assert_eq!(old.status, 401, "{}", old.text());
    assert_eq!(
        call("GET", addr, &host, "/hub/v1/x", &with(NEW))
            .await
            .status,
        200
    );

    // An emptied file is refused; the running keys stay.
    write_private(&keys, "\n");
    proxy.signal("HUP");
    let refused = proxy.line(|l| l.contains("config reload")).await;
    assert!(
        refused.contains("config reload refused") && refused.contains("server.inbound_keys_file"),
        "{refused}"
    );
    assert_eq!(
        call("GET", addr, &host, "/hub/v1/x", &with(NEW))
            .await
            .status,
        200
    );

    let (status, log) = proxy.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains(KEY) && !log.contains(NEW), "no key logged");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The compose secrets of contrib/fleet/compose.yaml, as its replicas see
/// them under /run/secrets/.
const FLEET_SECRETS: [&str; 4] = [
    "sfmc_client_secret",
    "inbound_keys",
    "redis_password",
    "redis_encryption_key",
];

/// contrib/fleet/proxy.toml as a replica there reads it, with /run/secrets/
/// at `secrets` and, when given, its Redis at `redis_url` and its `listen`
/// on `listen`.
fn fleet_config(secrets: &Path, redis_url: Option<&str>, listen: Option<&str>) -> String {
    let shipped = read_repo("contrib/fleet/proxy.toml");
    let mut text = shipped.replace("\"/run/secrets/", &format!("\"{}/", secrets.display()));
    if let Some(url) = redis_url {
        let line = "\nurl = \"redis://redis:6379/0\"\n";
        assert!(text.contains(line), "{text}");
        text = text.replace(line, &format!("\nurl = \"{url}\"\n"));
    }
    match listen {
        Some(listen) => with_listen(&text, listen),
        None => text,
    }
}

#[tokio::test]
async fn the_fleet_example_is_wired_as_compose_runs_it_and_its_replicas_share_one_token() {
    // What compose.yaml gives each replica is what its proxy.toml reads: the
    // image's config path, every secret at /run/secrets/NAME, every variable.
    let compose = read_repo("contrib/fleet/compose.yaml");
    let config = read_repo("contrib/fleet/proxy.toml");
    let haproxy = read_repo("contrib/fleet/haproxy.cfg");
    assert!(compose.contains("- ./proxy.toml:/etc/sfmc-proxy/proxy.toml:ro\n"));
    for name in FLEET_SECRETS {
        assert!(
            compose.contains(&format!("\n  {name}:\n    file: ./secrets/{name}\n")),
            "compose.yaml defines secret {name}"
        );
        assert!(
            compose.contains(&format!("\n      - {name}\n")),
            "a service mounts {name}"
        );
        assert!(
            config.contains(&format!("\"/run/secrets/{name}\"")),
            "proxy.toml reads {name}"
        );
    }
    for var in ["SFMC_AUTH_URL", "SFMC_CLIENT_ID", "SFMC_PROXY_PUBLIC_URL"] {
        assert!(config.contains(&format!("\"${{{var}}}\"")), "{var}");
        assert!(
            compose.contains(&format!("\n      {var}: ${{{var}:")),
            "compose.yaml sets {var}"
        );
    }
    assert!(config.contains("\nlisten = \"0.0.0.0:8080\"\n"));
    assert!(config.contains("\nurl = \"redis://redis:6379/0\"\n"));
    // HAProxy balances over the service's replicas on the port they listen
    // on, probing readiness with the first inbound key.
    assert!(haproxy.contains(" proxy:8080 check "), "{haproxy}");
    assert!(haproxy.contains(
        "uri /_proxy/ready ver HTTP/1.1 hdr Host localhost hdr X-Proxy-Key \"${SFMC_PROXY_KEY}\"\n"
    ));
    assert!(compose.contains("SFMC_PROXY_KEY=\"$$(head -n 1 /run/secrets/inbound_keys)\"\n"));

    // The secrets as README.md there makes them.
    let fake = start_fake().await;
    let dir = temp_dir("fleet-example");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    const REDIS_PASSWORD: &str = "fleet-test-redis-password-0123";
    const ENCRYPTION_KEY: &str = "fleet-test-encryption-key-0123456789abcdef";
    for (name, value) in [
        ("sfmc_client_secret", CLIENT_SECRET),
        ("inbound_keys", KEY),
        ("redis_password", REDIS_PASSWORD),
        ("redis_encryption_key", ENCRYPTION_KEY),
    ] {
        write_private(&secrets.join(name), &format!("{value}\n"));
    }
    let envs = |config: &Path, state: &Path| {
        let mut envs = container_env(&fake, config, state);
        envs.retain(|(name, _)| *name != "SFMC_PROXY_KEY");
        envs.push(("SFMC_PROXY_PUBLIC_URL", "http://127.0.0.1:8080/".to_owned()));
        envs
    };

    // `check --offline` with the file as shipped, Redis never reached.
    let offline = dir.join("offline.toml");
    std::fs::write(&offline, fleet_config(&secrets, None, None)).expect("write config");
    let output = run_once(&["check", "--offline"], &envs(&offline, &dir)).await;
    let stdout = succeeded(&output);
    assert!(stdout.contains("would request a token"), "{stdout}");
    assert_eq!(fake.token_requests(), 0);

    // Three replicas on a Redis with the secret's password: HAProxy's probe
    // finds each ready, and a call through each costs the fleet one token.
    let mut redis = RedisServer::start(&dir).await;
    let client = ::redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test's redis");
    let () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_PASSWORD)
        .query_async(&mut connection)
        .await
        .expect("CONFIG SET requirepass");
    let mut replicas = Vec::new();
    for i in 0..3 {
        let config = dir.join(format!("replica-{i}.toml"));
        let text = fleet_config(&secrets, Some(&redis.url()), Some("0.0.0.0:0"));
        std::fs::write(&config, text).expect("write config");
        let state = dir.join(format!("state-{i}"));
        let mut proxy = Running::spawn(&["serve".to_owned()], &envs(&config, &state));
        let addr = proxy.started().await;
        replicas.push((proxy, addr));
    }
    let probe = [("x-proxy-key", KEY)];
    for (_, addr) in &replicas {
        let mut ready = call("GET", *addr, "localhost", "/_proxy/ready", &probe).await;
        for _ in 0..100 {
            if ready.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            ready = call("GET", *addr, "localhost", "/_proxy/ready", &probe).await;
        }
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert!(!ready.text().contains("degraded"), "{}", ready.text());
    }
    // Clients come through HAProxy by the name they use.
    let path = "/asset/v1/content/assets?$page=1&$pageSize=5";
    for (_, addr) in &replicas {
        let keyless = call("GET", *addr, "127.0.0.1:8080", path, &[]).await;
        assert_eq!(keyless.status, 401, "{}", keyless.text());
        let keyed = call("GET", *addr, "127.0.0.1:8080", path, &probe).await;
        assert_eq!(keyed.status, 200, "{}", keyed.text());
    }
    assert_eq!(fake.token_requests(), 1, "one token for the fleet");

    for (proxy, _) in replicas {
        let (status, log) = proxy.terminate().await;
        assert_eq!(status.code(), Some(0), "{log}");
        for secret in [KEY, CLIENT_SECRET, REDIS_PASSWORD, ENCRYPTION_KEY] {
            assert!(!log.contains(secret), "no secret logged");
        }
        assert!(!log.contains("Redis is down"), "{log}");
    }
    redis.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
