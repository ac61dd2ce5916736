//! `[soap]`: how much of a SOAP envelope the proxy holds to put the token in,
//! and how much it reads of a caller that has not proved who it is.

use super::ConfigError;
use super::defaults::{DEFAULT_SOAP_HEADER_LIMIT, DEFAULT_SOAP_PREAUTH_LIMIT};
use super::raw::RawSoap;
use super::values::size_or;

#[derive(Debug, Clone)]
pub struct SoapSettings {
    /// How much of an envelope may be held to find where the token goes: up to
    /// the end of the Header, or the whole envelope when the Header follows the Body.
    pub header_limit: usize,
    /// How much of an envelope is read, at most, to find a local token in
    /// `fueloauth` while the caller has not proved who it is.
    pub preauth_limit: usize,
}

pub(super) fn validate(raw: RawSoap) -> Result<SoapSettings, ConfigError> {
    let header_limit = size_or(
        "soap.header_limit",
        raw.header_limit.as_deref(),
        DEFAULT_SOAP_HEADER_LIMIT,
    )?;
    let preauth_limit = size_or(
        "soap.preauth_limit",
        raw.preauth_limit.as_deref(),
        DEFAULT_SOAP_PREAUTH_LIMIT,
    )?;
    Ok(SoapSettings {
        header_limit,
        preauth_limit: preauth_limit.min(header_limit),
    })
}
