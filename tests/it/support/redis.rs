//! A real Redis for the fleet tests: Debian's `redis-server` (7.0) on a
//! unix socket in the test's temp dir (`--port 0`: no TCP at all, unless a
//! test asks for a port on 127.0.0.1), nothing
//! saved to disk, killed when its handle drops. It can be stopped and
//! started again on the same socket (Redis down, Redis back), and read
//! whole — every key and value — to prove what the proxy stores there.

use std::path::{Path, PathBuf};

use tokio::process::{Child, Command};

use super::tools;

pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    /// A TCP port to listen on as well (for a TLS front), if any.
    port: Option<u16>,
    starts: u32,
}

impl RedisServer {
    /// Starts `redis-server` with its socket and log in `dir`; returns once
    /// it accepts connections.
    pub async fn start(dir: &Path) -> RedisServer {
        Self::start_on(dir, None).await
    }

    /// The same, listening on 127.0.0.1 at a free TCP port too (for a TLS
    /// front such as `TlsFront`).
    pub async fn start_tcp(dir: &Path) -> RedisServer {
        Self::start_on(dir, Some(super::closed_port().port())).await
    }

    async fn start_on(dir: &Path, port: Option<u16>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            dir: dir.to_owned(),
            socket: dir.join("redis.sock"),
            port,
            starts: 0,
        };
        server.run().await;
        server
    }

    /// Its TCP address, when started with `start_tcp`.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.port
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    async fn run(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("redis-{}.log", self.starts));
        let stderr = self.dir.join(format!("redis-{}.stderr", self.starts));
        let mut command = Command::new(tools::redis_server());
        let port = self.port.unwrap_or(0).to_string();
        command
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log);
        let mut child = tools::spawn(command, &stderr);
        let ready = "ready to accept connections";
        tools::wait_for_line(&mut child, &log, &stderr, ready, "redis-server").await;
        self.child = Some(child);
    }

    /// `unix:///…/redis.sock`: what `[redis] url` says.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Kills the server (its data goes with it: nothing is saved).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it again, empty, on the same socket.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Every key and its value (a string, or a hash's fields and values),
    /// for a test to look through.
    pub async fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut connection)
            .await
            .expect("KEYS");
        let mut entries = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .expect("TYPE");
            // A hash (a token bucket) as its fields and values, one per line.
            let value: Vec<u8> = match kind.as_str() {
                "hash" => {
                    let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut connection)
                        .await
                        .expect("HGETALL");
                    fields.join(&b'\n')
                }
                _ => {
                    let value: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut connection)
                        .await
                        .expect("GET");
                    value.unwrap_or_default()
                }
            };
            entries.push((key, value));
        }
        entries
    }
}
