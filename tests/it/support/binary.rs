//! The proxy binary as an operator runs it (`--log-format json`), its
//! stderr read event by event: for tests of logs and signals.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

use super::{ProxyBuilder, temp_dir};

/// The access log's target.
pub const ACCESS: &str = "sfmc_proxy::access";

/// The proxy binary with `--log-format json`, its stderr read line by line.
pub struct Binary {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    log: Vec<String>,
    base: String,
    listening: Vec<String>,
    dir: std::path::PathBuf,
    /// The config file it reads (again on SIGHUP).
    pub config: std::path::PathBuf,
}

impl Binary {
    pub async fn start(name: &str, builder: ProxyBuilder, rust_log: &str) -> Self {
        // Port 0: the proxy binds a free port and says which in its start-up line.
        let listen: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        Self::start_with(name, builder.listen(listen), rust_log, &[], &[]).await
    }

    /// `sfmc-proxy --config FILE --log-format json serve ARGS…` with `envs`
    /// set, `builder` as the file as it is (its `listen` included).
    pub async fn start_with(
        name: &str,
        builder: ProxyBuilder,
        rust_log: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let dir = temp_dir(name);
        let config = dir.join("proxy.toml");
        std::fs::write(&config, builder.render()).expect("write config");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfmc-proxy"));
        command
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "json", "serve"])
            .args(args)
            .env("RUST_LOG", rust_log);
        for name in [
            "SFMC_PROXY_CONFIG",
            "SFMC_PROXY_LISTEN",
            "SFMC_PROXY_LOG_FORMAT",
        ] {
            command.env_remove(name);
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("proxy starts");
        let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut binary = Self {
            child,
            lines,
            log: Vec::new(),
            base: String::new(),
            listening: Vec::new(),
            dir,
            config,
        };
        // Wait for the start-up event rather than sleeping.
        let started = binary.next_event(|event| event["listen"].is_string()).await;
        let bound = started["listen"].as_str().unwrap_or_default().to_owned();
        assert!(!bound.ends_with(":0"), "the bound port is logged: {bound}");
        binary.base = format!("http://{bound}");
        binary.listening = started["listen_all"]
            .as_str()
            .unwrap_or_default()
            .split(", ")
            .map(str::to_owned)
            .collect();
        binary
    }

    /// Every address the start-up line says the proxy listens on.
    pub fn listening(&self) -> &[String] {
        &self.listening
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The first JSON event `wanted` accepts: one already read (before the
    /// start-up line, say), else the next one.
    pub async fn event(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let seen = self.log.iter().find_map(|line| {
            let event = serde_json::from_str::<Value>(line).ok()?;
            wanted(&event).then_some(event)
        });
        match seen {
            Some(event) => event,
            None => self.next_event(wanted).await,
        }
    }

    /// Reads stderr up to the next JSON event that `wanted` accepts.
    pub async fn next_event(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read stderr") {
                let event = serde_json::from_str::<Value>(&line).unwrap_or_default();
                self.log.push(line);
                if wanted(&event) {
                    return Some(event);
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_secs(20), read).await {
            Ok(Some(event)) => event,
            _ => panic!("no such event in the log:\n{}", self.log.join("\n")),
        }
    }

    /// The next `n` access events, in the order they were written.
    pub async fn access(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events.len() < n {
            events.push(self.next_event(|event| event["target"] == ACCESS).await);
        }
        events
    }

    /// Sends `signal` (`HUP`, `TERM`) to the process, with kill(1): no
    /// `unsafe` for a libc call.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the proxy runs").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit (reading its log meanwhile); its exit
    /// status and the whole log.
    pub async fn exit(mut self) -> (std::process::ExitStatus, String) {
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.log.push(line);
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the proxy exits")
            .expect("exit status");
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, self.log.join("\n"))
    }

    /// Stops the proxy; the whole log.
    pub async fn stop(mut self) -> String {
        self.child.start_kill().expect("stop the proxy");
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.log.push(line);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.log.join("\n")
    }
}
