//! `grant`, `app_type` and `redirect_uri` of a tenant: client credentials
//! (an API Integration package, server-to-server), or a user's login through
//! the authorization-code grant (a Web or Public App package).

use super::defaults::DEFAULT_PKCE;
use super::raw::RawTenant;
use super::values::Expander;
use super::{ConfigError, invalid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    /// A user logs in once (`sfmc-proxy login`); the proxy then refreshes.
    AuthorizationCode {
        app_type: AppType,
        /// Registered in the package; SFMC accepts only https (the documented
        /// local one is `https://127.0.0.1:80/`; `localhost` is refused).
        redirect_uri: String,
        /// Send PKCE (RFC 7636, S256): a code intercepted on its way back to
        /// the redirect URI is useless without the verifier only this login
        /// knows. SFMC's docs do not list the parameters, so it can be
        /// turned off per tenant should a package refuse them.
        pkce: bool,
    },
}

/// The proxy's own path for a login's redirect, when the code comes back to
/// its listener (through a TLS front: a load balancer, an ingress) rather
/// than to a listener of the login's own on a loopback address.
pub const CALLBACK_PATH: &str = "/_proxy/callback";

/// The host a login's browser comes back to when the proxy's own listener
/// receives the code: `redirect_uri`'s path is [`CALLBACK_PATH`] and its
/// host is not a loopback IP address (on one of those the login listens
/// itself, over TLS). `None` for every other redirect URI.
pub fn proxy_callback_host(redirect_uri: &str) -> Option<String> {
    let uri: http::Uri = redirect_uri.parse().ok()?;
    let host = uri.host()?;
    let loopback_ip = host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    (uri.path() == CALLBACK_PATH && !loopback_ip).then(|| host.to_ascii_lowercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppType {
    /// Has a client secret.
    Web,
    /// Has none and sends none (PKCE-less SFMC public apps).
    Public,
}

impl Grant {
    pub fn is_public(&self) -> bool {
        matches!(
            self,
            Self::AuthorizationCode {
                app_type: AppType::Public,
                ..
            }
        )
    }
}

pub(super) fn validate_grant(
    name: &str,
    raw: &RawTenant,
    ex: &Expander<'_>,
) -> Result<Grant, ConfigError> {
    let key = |field: &str| format!("tenants.{name}.{field}");
    match raw.grant.as_deref() {
        None | Some("client_credentials") => {
            for (field, set) in [
                ("app_type", raw.app_type.is_some()),
                ("redirect_uri", raw.redirect_uri.is_some()),
                ("pkce", raw.pkce.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key(field),
                        format!("{field} applies only to grant = \"authorization_code\""),
                    ));
                }
            }
            Ok(Grant::ClientCredentials)
        }
        Some("authorization_code") => {
            let app_type = match raw.app_type.as_deref() {
                None | Some("web") => AppType::Web,
                Some("public") => AppType::Public,
                Some(other) => {
                    return Err(invalid(
                        key("app_type"),
                        format!("unknown app_type `{other}`; expected \"web\" or \"public\""),
                    ));
                }
            };
            let text = raw.redirect_uri.as_deref().ok_or_else(|| {
                invalid(
                    key("redirect_uri"),
                    "missing: the redirect URI registered in the package, e.g. \"https://127.0.0.1:8443/\"",
                )
            })?;
            let redirect_uri = validate_redirect_uri(
                &key("redirect_uri"),
                &ex.expand(&key("redirect_uri"), text)?,
            )?;
            Ok(Grant::AuthorizationCode {
                app_type,
                redirect_uri,
                pkce: raw.pkce.unwrap_or(DEFAULT_PKCE),
            })
        }
        Some(other) => Err(invalid(
            key("grant"),
            format!(
                "unknown grant `{other}`; expected \"client_credentials\" or \"authorization_code\""
            ),
        )),
    }
}

/// A login whose code comes back to `/_proxy/callback` is served to
/// browsers elsewhere, through a front: the proxy behind it must ask for
/// its key (a loopback `listen` does not by default, and the front makes
/// it reachable to everyone the front is), and the Host check must let the
/// front's name in, or every redirect would be refused there.
pub(super) fn check_callback_hosts(
    tenants: &[std::sync::Arc<super::Tenant>],
    server: &super::ServerSettings,
) -> Result<(), ConfigError> {
    for tenant in tenants {
        let Grant::AuthorizationCode { redirect_uri, .. } = &tenant.grant else {
            continue;
        };
        let Some(host) = proxy_callback_host(redirect_uri) else {
            continue;
        };
        let key = format!("tenants.{}.redirect_uri", tenant.name);
        if server.inbound_keys.is_empty() && !server.allow_unauthenticated_remote {
            return Err(invalid(
                key,
                format!(
                    "the browser comes back to `{host}` through a front that makes the proxy reachable from elsewhere: set server.inbound_keys (or server.allow_unauthenticated_remote = true if everyone who reaches `{host}` may use this tenant)"
                ),
            ));
        }
        let Some(allowed) = &server.allowed_hosts else {
            continue;
        };
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
            return Err(invalid(
                key,
                format!(
                    "the browser comes back to `{host}`, which server.allowed_hosts does not list: add it (the proxy receives the code at {CALLBACK_PATH} behind a TLS front there)"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_redirect_uri(key: &str, text: &str) -> Result<String, ConfigError> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| invalid(key, format!("`{text}` is not a URL")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(invalid(
            key,
            format!("`{text}` must be an https URL: SFMC accepts no other redirect URIs"),
        ));
    }
    if uri
        .host()
        .is_some_and(|h| h.eq_ignore_ascii_case("localhost"))
    {
        return Err(invalid(
            key,
            "SFMC refuses `localhost` redirect URIs; use https://127.0.0.1:PORT/ (and register that)",
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxys_own_path_off_loopback_is_a_proxy_callback() {
        let host = proxy_callback_host;
        assert_eq!(
            host("https://Proxy.Team.Example/_proxy/callback").as_deref(),
            Some("proxy.team.example")
        );
        assert_eq!(
            host("https://proxy.team.example:8443/_proxy/callback?x=1").as_deref(),
            Some("proxy.team.example")
        );
        // On a loopback address the login listens itself, whatever the path.
        assert_eq!(host("https://127.0.0.1:8443/_proxy/callback"), None);
        assert_eq!(host("https://[::1]:8443/_proxy/callback"), None);
        assert_eq!(host("https://proxy.team.example/callback"), None);
        assert_eq!(host("https://proxy.team.example/_proxy/callback/"), None);
    }
}
