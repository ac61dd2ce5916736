//! `server.listen`: the addresses the proxy serves, from the file (one
//! string or a list) or from `--listen` / `SFMC_PROXY_LISTEN`, which replace
//! the file's. `localhost:PORT` means 127.0.0.1 and [::1] on that port — no
//! DNS lookup, so a hosts file that maps `localhost` elsewhere cannot move
//! the proxy off loopback.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Deserialize;

use super::values::Expander;
use super::{ConfigError, invalid};

/// `listen = "…"` or `listen = ["…", "…"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawListen {
    One(String),
    Many(Vec<String>),
}

impl RawListen {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

/// Addresses given outside the file, which replace `server.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOverride {
    /// Where they came from, as errors name it: `--listen` or
    /// `SFMC_PROXY_LISTEN`.
    pub source: &'static str,
    pub addresses: Vec<String>,
}

/// The addresses to listen on, in order, without repeats (port 0 aside);
/// at least one.
pub(super) fn addresses(
    from_file: Option<RawListen>,
    overridden: Option<&ListenOverride>,
    ex: &Expander<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let (key, texts) = match (overridden, from_file) {
        (Some(given), _) => (given.source, given.addresses.clone()),
        (None, Some(raw)) => ("server.listen", raw.into_vec()),
        (None, None) => ("server.listen", vec![super::DEFAULT_LISTEN.to_owned()]),
    };
    let mut addresses = Vec::new();
    for text in &texts {
        let text = ex.expand(key, text.trim())?;
        for addr in parse(key, &text)? {
            // Port 0 asks for a new port each time: never a repeat.
            if addr.port() == 0 || !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
    }
    if addresses.is_empty() {
        return Err(invalid(
            key,
            "no address given: name at least one, e.g. \"127.0.0.1:8080\"",
        ));
    }
    Ok(addresses)
}

/// One `IP:port`, `[IPv6]:port` or `localhost:port`.
fn parse(key: &str, text: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let localhost_port = text
        .rsplit_once(':')
        .filter(|(host, _)| host.eq_ignore_ascii_case("localhost"))
        .map(|(_, port)| port.parse::<u16>());
    match localhost_port {
        Some(Ok(port)) => Ok(vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ]),
        Some(Err(_)) => Err(invalid(
            key,
            format!("`{text}`: the port must be a number from 0 to 65535"),
        )),
        None => Err(invalid(
            key,
            format!(
                "`{text}` is not an address to listen on: write IP:port (\"127.0.0.1:8080\", \"[::1]:8080\", \"0.0.0.0:8080\") or localhost:port; other host names are not looked up"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn listen(texts: &[&str]) -> Result<Vec<String>, ConfigError> {
        let env = |name: &str| (name == "PORT").then(|| "9000".to_owned());
        let ex = Expander::new(&env, Path::new("."));
        let raw = RawListen::Many(texts.iter().map(|t| (*t).to_owned()).collect());
        addresses(Some(raw), None, &ex).map(|all| all.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn localhost_is_both_loopback_addresses_without_dns() {
        assert_eq!(
            listen(&["localhost:8080"]).expect("valid"),
            ["127.0.0.1:8080", "[::1]:8080"]
        );
        assert_eq!(
            listen(&["LocalHost:${PORT}"]).expect("valid"),
            ["127.0.0.1:9000", "[::1]:9000"]
        );
    }

    #[test]
    fn several_addresses_keep_their_order_without_repeats() {
        assert_eq!(
            listen(&["127.0.0.1:8080", "localhost:8080", "0.0.0.0:9"]).expect("valid"),
            ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:9"]
        );
    }

    #[test]
    fn other_host_names_and_bad_ports_are_refused_naming_the_source() {
        let given = ListenOverride {
            source: "--listen",
            addresses: vec!["example.com:80".into()],
        };
        let env = |_: &str| None;
        let ex = Expander::new(&env, Path::new("."));
        let error = addresses(None, Some(&given), &ex).expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("`--listen`"), "{text}");
        assert!(text.contains("are not looked up"), "{text}");
        assert!(
            listen(&["localhost:99999"])
                .expect_err("refused")
                .to_string()
                .contains("from 0 to 65535")
        );
        assert!(listen(&[]).is_err(), "an empty list names no address");
    }

    #[test]
    fn an_override_replaces_the_files_addresses() {
        let given = ListenOverride {
            source: "SFMC_PROXY_LISTEN",
            addresses: vec!["127.0.0.1:7000".into()],
        };
        let env = |_: &str| None;
        let ex = Expander::new(&env, Path::new("."));
        let file = RawListen::One("127.0.0.1:8080".into());
        let all = addresses(Some(file), Some(&given), &ex).expect("valid");
        assert_eq!(all, ["127.0.0.1:7000".parse::<SocketAddr>().expect("addr")]);
    }
}
