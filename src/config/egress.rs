//! The egress path to SFMC: which forward proxy, if any, a call to a host
//! goes through. `upstream.proxy` (with `upstream.proxy_password_file`) and
//! `upstream.no_proxy` when the file sets a proxy; otherwise the standard
//! environment (`https_proxy`, `http_proxy`, `all_proxy`, `no_proxy`, each
//! also upper-case, lower-case winning) with curl's reading, except that
//! loopback targets always go direct, as Go's `ProxyFromEnvironment` does —
//! so `demo` and the tests work in a shell with a corporate proxy set.
//!
//! Only the decision lives here, so that the pool's connector
//! (`upstream::connect`) and the token client (`token::sfmc`) take their
//! proxy from one place; the tunnel itself is the connector's.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;

use super::values::{Expander, is_loopback_host};
use super::{ConfigError, invalid};

/// Where a proxy URL without a port connects, as curl does.
const DEFAULT_PROXY_PORT: u16 = 1080;

/// How calls leave the proxy. `PartialEq`: part of `UpstreamSettings`,
/// whose change rebuilds the upstream client on reload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Egress {
    rule: Rule,
    /// `upstream.no_proxy`, and in the environment's case `no_proxy` too.
    direct: NoProxy,
}

#[derive(Debug, Clone, PartialEq, Default)]
enum Rule {
    /// `upstream.proxy`: every target not in `no_proxy`, loopback included.
    Configured(Arc<EgressProxy>),
    /// The environment's proxies, by the target's scheme; `None`: direct.
    Environment {
        https: Option<EnvProxy>,
        http: Option<EnvProxy>,
    },
    /// Neither the file nor the environment names a proxy.
    #[default]
    Direct,
}

/// A proxy variable's value: usable, or why not. An unusable one fails only
/// the calls that would have gone through it, each saying why, rather than
/// stopping a proxy whose targets may all be loopback (`demo`).
type EnvProxy = Result<Arc<EgressProxy>, Arc<Unusable>>;

/// An environment proxy that cannot be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unusable {
    pub variable: &'static str,
    pub reason: String,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the egress proxy in {} cannot be used: {}; fix or unset {0}, or set upstream.proxy",
            self.variable, self.reason
        )
    }
}

/// How one call to `host` leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Route<'a> {
    Direct,
    Proxy(&'a EgressProxy),
    Unusable(&'a Unusable),
}

impl fmt::Display for Route<'_> {
    /// For `check` and error texts: "direct" or the proxy it goes through.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Proxy(proxy) => write!(f, "through {proxy}"),
            Self::Unusable(unusable) => write!(f, "none: {unusable}"),
        }
    }
}

/// One forward proxy: `http://` (plain to the proxy) or `https://` (TLS to
/// the proxy too), and its `Proxy-Authorization` if the URL or
/// `upstream.proxy_password_file` gave credentials. The credentials never
/// leave this type but as that header and [`EgressProxy::client_url`]:
/// `Display` and `Debug` name the proxy without them.
#[derive(Clone, PartialEq)]
pub struct EgressProxy {
    tls: bool,
    /// As in the URL: IPv6 in brackets.
    host: String,
    port: u16,
    authorization: Option<HeaderValue>,
    /// The URL with credentials, for reqwest's `Proxy` (the token client).
    client_url: url::Url,
    /// Where it came from: `upstream.proxy` or the variable's name.
    pub source: &'static str,
}

impl EgressProxy {
    /// Whether the connection to the proxy itself is TLS (`https://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host to resolve and, for TLS, to verify: IPv6 without brackets.
    pub fn host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Proxy-Authorization: Basic …`, marked sensitive.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The proxy's URL with its credentials: only for handing to reqwest.
    pub fn client_url(&self) -> &url::Url {
        &self.client_url
    }

    /// Which key or variable to fix when the proxy refuses the credentials.
    pub fn credentials_source(&self) -> &'static str {
        match self.source {
            "upstream.proxy" if self.authorization.is_none() => {
                "upstream.proxy (it has no user:password@)"
            }
            source => source,
        }
    }
}

impl fmt::Display for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(
            f,
            "the egress proxy {scheme}://{}:{} (from {})",
            self.host, self.port, self.source
        )
    }
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("source", &self.source)
            .finish()
    }
}

impl Egress {
    /// How a call to `host` (as in a URL: IPv6 in brackets) with the given
    /// scheme leaves the proxy.
    pub fn route(&self, https: bool, host: &str) -> Route<'_> {
        if self.direct.matches(host) {
            return Route::Direct;
        }
        let chosen = match &self.rule {
            Rule::Configured(proxy) => return Route::Proxy(proxy),
            Rule::Direct => return Route::Direct,
            // The environment is the user's shell, not this config: loopback
            // (demo, tests, a local fake) is never sent to a corporate proxy.
            Rule::Environment { .. } if is_loopback_host(host) => return Route::Direct,
            Rule::Environment { https: proxy, .. } if https => proxy,
            Rule::Environment { http: proxy, .. } => proxy,
        };
        match chosen {
            None => Route::Direct,
            Some(Ok(proxy)) => Route::Proxy(proxy),
            Some(Err(unusable)) => Route::Unusable(unusable),
        }
    }

    /// The route for a URL's text (`check`, the token client): by its
    /// scheme and host; a URL that does not parse goes direct (it fails on
    /// its own).
    pub fn route_for_url(&self, url: &str) -> Route<'_> {
        match url::Url::parse(url) {
            Ok(parsed) => match parsed.host_str() {
                Some(host) => self.route(parsed.scheme() == "https", host),
                None => Route::Direct,
            },
            Err(_) => Route::Direct,
        }
    }
}

/// `upstream.proxy`, `upstream.proxy_password_file`, `upstream.no_proxy`,
/// else the environment.
pub(super) fn validate(
    proxy: Option<&str>,
    password_file: Option<&str>,
    no_proxy: Option<&[String]>,
    ex: &Expander<'_>,
) -> Result<Egress, ConfigError> {
    let mut direct = NoProxy::default();
    for (i, entry) in no_proxy.unwrap_or_default().iter().enumerate() {
        let key = format!("upstream.no_proxy[{i}]");
        let entry = ex.expand(&key, entry)?;
        if !direct.add(&entry) {
            return Err(invalid(
                key,
                "an empty entry; write a host, a .suffix, an IP, a CIDR like 10.0.0.0/8, or *",
            ));
        }
    }
    let password = match password_file {
        Some(path) => {
            let key = "upstream.proxy_password_file";
            if proxy.is_none() {
                return Err(invalid(key, "is set but upstream.proxy is not"));
            }
            Some(ex.read_secret_file(key, path)?)
        }
        None => None,
    };
    if let Some(text) = proxy {
        let key = "upstream.proxy";
        let text = ex.expand(key, text)?;
        let proxy = parse_proxy(&text, key, password.as_deref()).map_err(|e| invalid(key, e))?;
        return Ok(Egress {
            rule: Rule::Configured(Arc::new(proxy)),
            direct,
        });
    }
    let https = env_proxy(ex, "https_proxy", "HTTPS_PROXY");
    let http = env_proxy(ex, "http_proxy", "HTTP_PROXY");
    let all = env_proxy(ex, "all_proxy", "ALL_PROXY");
    if let Some((_, list)) = env_var(ex, "no_proxy", "NO_PROXY") {
        for entry in list.split(',') {
            direct.add(entry);
        }
    }
    let rule = match (https.or_else(|| all.clone()), http.or(all)) {
        (None, None) => Rule::Direct,
        (https, http) => Rule::Environment { https, http },
    };
    Ok(Egress { rule, direct })
}

/// A variable, lower-case first (curl's and most tools' preference), non-empty.
fn env_var(
    ex: &Expander<'_>,
    lower: &'static str,
    upper: &'static str,
) -> Option<(&'static str, String)> {
    ex.var(lower)
        .map(|v| (lower, v))
        .or_else(|| ex.var(upper).map(|v| (upper, v)))
}

fn env_proxy(ex: &Expander<'_>, lower: &'static str, upper: &'static str) -> Option<EnvProxy> {
    let (variable, value) = env_var(ex, lower, upper)?;
    Some(
        parse_proxy(&value, variable, None)
            .map(Arc::new)
            .map_err(|reason| Arc::new(Unusable { variable, reason })),
    )
}

/// A proxy URL: `http://` or `https://` (no scheme: `http://`, as curl
/// reads one), optional `user:password@` (percent-decoded), a host, an
/// optional port (default 1080, as curl's). The error never quotes the
/// value: it may hold a password.
fn parse_proxy(
    text: &str,
    source: &'static str,
    password_file: Option<&str>,
) -> Result<EgressProxy, String> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let mut url = url::Url::parse(&with_scheme)
        .map_err(|e| format!("not a proxy URL like http://proxy.example:3128 ({e})"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        "socks4" | "socks4a" | "socks5" | "socks5h" => {
            return Err("SOCKS proxies are not supported; use an http:// or https:// proxy".into());
        }
        other => {
            return Err(format!(
                "the scheme `{other}` is not a proxy's; use http:// or https://"
            ));
        }
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err("has no host; write http://proxy.example:3128".into()),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("must be scheme://[user:password@]host[:port] with no path or query".into());
    }
    let port = url.port().unwrap_or(DEFAULT_PROXY_PORT);
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "its user or password is not UTF-8 once percent-decoded".to_owned())
    };
    let user = decode(url.username())?;
    let password = match (url.password(), password_file) {
        (Some(_), Some(_)) => {
            return Err(
                "has a password and upstream.proxy_password_file is set too; keep one".into(),
            );
        }
        (Some(password), None) => Some(decode(password)?),
        (None, file) => file.map(str::to_owned),
    };
    if user.is_empty() && password.is_some() {
        return Err("has a password but no user; write http://user@host:port".into());
    }
    let authorization = match user.is_empty() {
        true => None,
        false => {
            let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                .map_err(|_| "its credentials cannot be sent in a header".to_owned())?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    // reqwest's copy carries the password the file gave, and the port this
    // parser chose, so both clients reach the same proxy the same way.
    let _ = url.set_port(Some(port));
    if let Some(password) = &password {
        let _ = url.set_password(Some(password));
    }
    Ok(EgressProxy {
        tls,
        host,
        port,
        authorization,
        client_url: url,
        source,
    })
}

/// Hosts that go direct, read as curl reads `NO_PROXY`: `*` is every host;
/// an IP or a CIDR matches addresses; a name (a leading `.` or `*.` is the
/// same) matches itself and its subdomains, not `notexample.com`.
#[derive(Debug, Clone, PartialEq, Default)]
struct NoProxy {
    everything: bool,
    networks: Vec<ipnet::IpNet>,
    names: Vec<String>,
}

impl NoProxy {
    /// Adds one entry; false when it is empty.
    fn add(&mut self, entry: &str) -> bool {
        let entry = entry.trim();
        if entry.is_empty() {
            return false;
        }
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if entry == "*" {
            self.everything = true;
        } else if let Ok(net) = bare.parse::<ipnet::IpNet>() {
            self.networks.push(net);
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            self.networks.push(ip.into());
        } else {
            let name = entry.trim_start_matches("*.").trim_start_matches('.');
            self.names
                .push(name.trim_end_matches('.').to_ascii_lowercase());
        }
        true
    }

    fn matches(&self, host: &str) -> bool {
        if self.everything {
            return true;
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.networks.iter().any(|net| net.contains(&ip));
        }
        // Bytes, case-insensitively: no lowercased copy per connection.
        let host = bare.trim_end_matches('.').as_bytes();
        self.names.iter().any(|name| {
            let name = name.as_bytes();
            let Some(start) = host.len().checked_sub(name.len()) else {
                return false;
            };
            host[start..].eq_ignore_ascii_case(name) && (start == 0 || host[start - 1] == b'.')
        })
    }
}

#[cfg(test)]
mod tests;
