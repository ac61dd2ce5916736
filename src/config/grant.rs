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
