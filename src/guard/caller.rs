//! Who is calling ([`Caller`]), decided once per request from its head
//! ([`identify`]) — an inbound key, a broker-issued local token, the broker's
//! own client, anonymous where no keys are set, or not proven yet (a SOAP
//! call whose envelope may hold a local token) — with the one Bearer parser.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

use crate::broker::{LOCAL_TOKEN_PREFIX, LocalTokens, Presented};
use crate::config::ServerSettings;
use crate::error::ProxyError;
use crate::headers::X_PROXY_KEY;
use crate::route;
use crate::token::TokenKey;

/// Who is calling, decided once per request ([`identify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presented one of `server.inbound_keys`.
    Key,
    /// Presented a live local token from the broker: the request is served as
    /// the tenant, business unit and scope it is bound to.
    Local(TokenKey),
    /// A token request to the broker, which authenticates it by the local
    /// secret in its body (read only up to the broker's small limit).
    BrokerClient,
    /// No inbound keys are configured: whoever passed the Host and Origin
    /// checks may call (a loopback listener, or a private network by choice).
    Anonymous,
    /// Not known yet: a SOAP call without a key, whose envelope's `fueloauth`
    /// may hold a local token. Only a bounded prefix of the envelope is read
    /// ([`Caller::from_envelope`]) before the call is served or refused.
    Unproven,
}

impl Caller {
    /// The key a local token binds the request to.
    pub fn bound(&self) -> Option<&TokenKey> {
        match self {
            Self::Local(key) => Some(key),
            _ => None,
        }
    }

    /// Whether answers may name tenants and business units: the caller proved
    /// who it is, or nobody has to.
    pub fn trusted(&self) -> bool {
        matches!(self, Self::Key | Self::Local(_) | Self::Anonymous)
    }

    /// After the start of a SOAP envelope is read: a local token in its
    /// `fueloauth` binds the call (and proves an unproven caller); without
    /// one, an unproven caller is refused.
    pub fn from_envelope(
        self,
        fueloauth: Option<&str>,
        locals: &LocalTokens,
    ) -> Result<Self, ProxyError> {
        match fueloauth.map(|token| locals.resolve(token)) {
            Some(Presented::Bound(key)) => Ok(Self::Local(key)),
            Some(Presented::Invalid) => Err(ProxyError::LocalTokenInvalid),
            Some(Presented::Foreign) | None if self == Self::Unproven => {
                Err(ProxyError::InboundKeyRequired)
            }
            Some(Presented::Foreign) | None => Ok(self),
        }
    }
}

/// Decides who is calling from the request head alone.
///
/// A local token (`Authorization: Bearer sfmcproxy_…`) counts first, with or
/// without keys; a stale one is refused so the tool re-authenticates. Then the
/// inbound key: where keys are set, a request without a valid one is refused
/// here — before a byte of its body is read — except a broker token request
/// and a SOAP call, whose credentials may be inside the body.
pub fn identify(
    parts: &Parts,
    server: &ServerSettings,
    locals: &LocalTokens,
) -> Result<Caller, ProxyError> {
    if let Some(token) = bearer(&parts.headers).filter(|t| t.starts_with(LOCAL_TOKEN_PREFIX)) {
        return match locals.resolve(token) {
            Presented::Bound(key) => Ok(Caller::Local(key)),
            Presented::Invalid | Presented::Foreign => Err(ProxyError::LocalTokenInvalid),
        };
    }
    if server.inbound_keys.is_empty() {
        return Ok(Caller::Anonymous);
    }
    match presented_key(parts) {
        Some(key) if key_matches(key, server) => Ok(Caller::Key),
        // A wrong key is refused even where the body might hold a credential.
        Some(_) => Err(ProxyError::InboundKeyRequired),
        None if route::is_token_request(&parts.method, parts.uri.path()) => {
            Ok(Caller::BrokerClient)
        }
        None if route::soap_shaped(&parts.method, parts.uri.path()) => Ok(Caller::Unproven),
        None => Err(ProxyError::InboundKeyRequired),
    }
}

/// The token in `Authorization: Bearer …` (scheme in any case), if any: the
/// one Bearer parser for local tokens and inbound keys alike.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_in(headers.get(header::AUTHORIZATION)?)
}

fn bearer_in(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The inbound key the request presents: `Proxy-Authorization: Bearer`, else
/// `X-Proxy-Key`, else — on `/_proxy/*` only, which is never forwarded, so
/// the header cannot be a token meant for SFMC — `Authorization: Bearer`,
/// the one header Prometheus can send.
fn presented_key(parts: &Parts) -> Option<&str> {
    let headers = &parts.headers;
    match headers.get(header::PROXY_AUTHORIZATION) {
        Some(value) => Some(bearer_in(value).unwrap_or("")),
        None => headers
            .get(&X_PROXY_KEY)
            .map(|v| v.to_str().map_or("", str::trim))
            .or_else(|| {
                route::is_admin_path(parts.uri.path())
                    .then(|| bearer(headers))
                    .flatten()
            }),
    }
}

/// Compares against every key, in constant time per key, so neither timing
/// nor order tells which key (or how much of one) matched.
fn key_matches(presented: &str, server: &ServerSettings) -> bool {
    let matched = server
        .inbound_keys
        .iter()
        .fold(subtle::Choice::from(0), |acc, key| {
            acc | key.expose().as_bytes().ct_eq(presented.as_bytes())
        });
    bool::from(matched)
}
