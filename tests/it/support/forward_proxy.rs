//! A real forward proxy for the egress tests: Debian's `tinyproxy` (1.11) on
//! 127.0.0.1, optionally with Basic auth, and Debian's `stunnel` as a TLS
//! front before it for an `https://` egress proxy. Both run as child
//! processes of the test, killed when their handle drops; every file (config,
//! log, stderr) lives in the test's temp dir.
//!
//! How the egress tests use it:
//!
//! ```text
//! let dir = temp_dir("egress-…");
//! let tls = tls_server_with_ca(&dir);                    // fake over TLS
//! let fake = start_fake_with(tls_fake(&tls.server_config)).await;
//! let egress = ForwardProxy::start(&dir, Some(("alice", "s3cret"))).await;
//! // [upstream] proxy = egress.url_with_credentials(), ca_file = tls.ca
//! // … token, REST and SOAP through the proxy under test …
//! assert!(egress.tunnels_to(&format!("localhost:{}", fake.addr().port())));
//! // https:// egress proxy: a TLS front before tinyproxy, same test CA
//! let front = TlsFront::start(&dir, egress.addr(), &tls.cert, &tls.key).await;
//! // [upstream] proxy = front.url_with_credentials("alice", "s3cret")
//! ```
//!
//! What tinyproxy 1.11 logs (the `LogFile`, flushed line by line, so a read
//! after the answer arrived sees the lines of that request):
//!
//! ```text
//! CONNECT   Dec 02 08:12:14.766 [22532]: Connect (file descriptor 5): 127.0.0.1
//! CONNECT   Dec 02 08:12:14.766 [22532]: Request (file descriptor 5): CONNECT 127.0.0.1:38124 HTTP/1.1
//! CONNECT   Dec 02 08:12:14.767 [22532]: Established connection to host "127.0.0.1" using file descriptor 6.
//! CONNECT   Dec 02 08:12:14.780 [22532]: Connect (file descriptor 5): 127.0.0.1
//! CONNECT   Dec 02 08:12:14.781 [22532]: Request (file descriptor 5): GET http://127.0.0.1:38124/v2/token HTTP/1.1
//! CONNECT   Dec 02 08:12:14.782 [22532]: Established connection to host "127.0.0.1" using file descriptor 6.
//! ```
//!
//! The `Request` line is written before credentials are checked, and a
//! refusal is not logged at all: a refused request shows as a `Request` line
//! with no `Established connection` after it. Missing credentials are
//! answered `407 Proxy Authentication Required`; wrong ones `401
//! Unauthorized` (with `WWW-Authenticate`), for CONNECT too. With no
//! `ConnectPort` line every port may be tunnelled to (Debian's packaged
//! config allows only 443 and 563; this one is written from scratch).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::process::{Child, Command};

use super::closed_port;
use super::tools;

/// What stays as is in a URL's userinfo (RFC 3986 unreserved).
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// tinyproxy on 127.0.0.1 with a free port; killed when dropped.
pub struct ForwardProxy {
    _child: Child,
    addr: SocketAddr,
    log: PathBuf,
    credentials: Option<(String, String)>,
}

impl ForwardProxy {
    /// Starts `tinyproxy -d` with a config written in `dir`: 127.0.0.1 only,
    /// `BasicAuth user pass` when `basic_auth` is given, CONNECT to any port,
    /// no `Via` header. Returns once its log says it accepts connections.
    pub async fn start(dir: &Path, basic_auth: Option<(&str, &str)>) -> ForwardProxy {
        let addr = closed_port();
        let port = addr.port();
        let log = dir.join(format!("tinyproxy-{port}.log"));
        let mut config = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Timeout 60\n\
             LogFile \"{}\"\n\
             LogLevel Info\n\
             MaxClients 100\n\
             Allow 127.0.0.1\n\
             DisableViaHeader Yes\n",
            log.display()
        );
        if let Some((user, pass)) = basic_auth {
            for word in [user, pass] {
                assert!(
                    !word.is_empty() && !word.contains(|c: char| c.is_whitespace() || c == '"'),
                    "tinyproxy's BasicAuth takes plain words: {word:?}"
                );
            }
            config.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        let config_path = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(&config_path, config).expect("write tinyproxy.conf");
        let mut command = Command::new(tools::tinyproxy());
        command.arg("-d").arg("-c").arg(&config_path);
        let stderr = dir.join(format!("tinyproxy-{port}.stderr"));
        let mut child = tools::spawn(command, &stderr);
        let ready = "Starting main loop. Accepting connections.";
        tools::wait_for_line(&mut child, &log, &stderr, ready, "tinyproxy").await;
        ForwardProxy {
            _child: child,
            addr,
            log,
            credentials: basic_auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no credentials.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:pass@127.0.0.1:PORT` (percent-encoded); panics when the
    /// proxy was started without Basic auth.
    pub fn url_with_credentials(&self) -> String {
        let (user, pass) = self.credentials();
        credentialed("http", &self.addr.to_string(), user, pass)
    }

    /// The user and password it was started with; panics when none.
    pub fn credentials(&self) -> (&str, &str) {
        let (user, pass) = self
            .credentials
            .as_ref()
            .expect("the forward proxy was started with Basic auth");
        (user, pass)
    }

    /// The `Proxy-Authorization` value its credentials make (`Basic …`).
    pub fn proxy_authorization(&self) -> String {
        let (user, pass) = self.credentials();
        basic(user, pass)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        tools::read_lossy(&self.log)
    }

    /// Each request line logged, in order: `CONNECT 127.0.0.1:443 HTTP/1.1`,
    /// `GET http://127.0.0.1:8080/v2/token HTTP/1.1`. Refused requests too
    /// (the line is written before the credentials are checked).
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| line.split_once("]: Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): "))
            .map(|(_, request)| request.to_owned())
            .collect()
    }

    /// Whether a CONNECT to `authority` (`localhost:PORT`) was asked for.
    /// That it was let through shows in the answer, or in
    /// `connections_to(host)`.
    pub fn tunnels_to(&self, authority: &str) -> bool {
        self.requested("CONNECT", authority)
    }

    /// Whether a `method target` request was logged: `target` is the
    /// request line's as sent (absolute-form `http://127.0.0.1:PORT/path?q`,
    /// an authority for CONNECT).
    pub fn requested(&self, method: &str, target: &str) -> bool {
        let prefix = format!("{method} {target} ");
        self.requests().iter().any(|line| line.starts_with(&prefix))
    }

    /// How many outgoing connections tinyproxy opened to `host` (a name or
    /// an IP address, no port): tunnels and forwarded requests alike.
    pub fn connections_to(&self, host: &str) -> usize {
        let needle = format!("Established connection to host \"{host}\" ");
        self.log().matches(&needle).count()
    }
}

/// stunnel in server mode on 127.0.0.1 with a free port, TLS in front of
/// `backend` (a `ForwardProxy`, for an `https://` egress proxy); killed when
/// dropped.
pub struct TlsFront {
    _child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl TlsFront {
    /// Starts `stunnel` with `cert_pem`/`key_pem` (`tls_server_with_ca`'s
    /// leaf, for `localhost` and 127.0.0.1) before `backend`. Returns once
    /// its log says the port is bound.
    pub async fn start(
        dir: &Path,
        backend: SocketAddr,
        cert_pem: &Path,
        key_pem: &Path,
    ) -> TlsFront {
        let addr = closed_port();
        let port = addr.port();
        let log = dir.join(format!("stunnel-{port}.log"));
        let config = format!(
            "foreground = yes\n\
             pid =\n\
             output = {}\n\
             debug = info\n\
             [front]\n\
             accept = {addr}\n\
             connect = {backend}\n\
             cert = {}\n\
             key = {}\n",
            log.display(),
            cert_pem.display(),
            key_pem.display()
        );
        let config_path = dir.join(format!("stunnel-{port}.conf"));
        std::fs::write(&config_path, config).expect("write stunnel.conf");
        let mut command = Command::new(tools::stunnel());
        command.arg(&config_path);
        let stderr = dir.join(format!("stunnel-{port}.stderr"));
        let mut child = tools::spawn(command, &stderr);
        // "Configuration successful" comes before the bind; this is after.
        let ready = "Service [front] (FD=";
        tools::wait_for_line(&mut child, &log, &stderr, ready, "stunnel").await;
        let bound_to = format!(" bound to {addr}");
        assert!(
            tools::read_lossy(&log).contains(&bound_to),
            "stunnel bound elsewhere than {addr}:\n{}",
            tools::read_lossy(&log)
        );
        TlsFront {
            _child: child,
            addr,
            log,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:PORT` (the name the test CA's leaf covers).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `https://user:pass@localhost:PORT` (percent-encoded): the
    /// credentials of the `ForwardProxy` behind it.
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        credentialed(
            "https",
            &format!("localhost:{}", self.addr.port()),
            user,
            pass,
        )
    }

    /// stunnel's log so far (a line per accepted and closed connection).
    pub fn log(&self) -> String {
        tools::read_lossy(&self.log)
    }
}

/// `Basic base64(user:pass)`, a `Proxy-Authorization` value.
pub fn basic(user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {token}")
}

fn credentialed(scheme: &str, authority: &str, user: &str, pass: &str) -> String {
    format!(
        "{scheme}://{}:{}@{authority}",
        utf8_percent_encode(user, USERINFO),
        utf8_percent_encode(pass, USERINFO)
    )
}
