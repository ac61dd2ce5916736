//! Where the phases' own failures become what a client is told: a token that
//! could not be had ([`TokenFailure`]), a business unit or scope the tenant
//! refuses ([`KeyRefused`]), no tenant selected ([`NoTenant`]). `error` stays
//! a leaf that knows none of these types, and `token` and `config` know
//! nothing of `ProxyError`; this module is the one that knows both sides.

use crate::config::{NoTenant, Settings};
use crate::error::{ProxyError, TokenRejection};
use crate::token::{KeyRefused, TokenError, TokenFailure};

impl From<KeyRefused> for ProxyError {
    fn from(refused: KeyRefused) -> Self {
        match refused {
            KeyRefused::MidNotAllowed { tenant, mid } => Self::AccountNotAllowed { tenant, mid },
            KeyRefused::NotAMid(_) | KeyRefused::BadScope => Self::BadRequest(refused.to_string()),
        }
    }
}

/// A failed token `get` for `tenant`, with when to ask again.
pub fn token_failure(failure: TokenFailure, tenant: &str) -> ProxyError {
    let tenant = tenant.to_owned();
    let retry_after_secs = failure.retry_in.as_secs_f64().ceil() as u64;
    let hint = failure.error.hint(&tenant).unwrap_or_default();
    match failure.error {
        TokenError::Rejected {
            status,
            error,
            description,
            url,
        } => ProxyError::TokenRejected(Box::new(TokenRejection {
            hint,
            tenant,
            status,
            sfmc_error: error,
            sfmc_error_description: description,
            url,
            retry_after_secs,
        })),
        TokenError::Unavailable { reason, .. } | TokenError::InvalidResponse(reason) => {
            ProxyError::TokenUnavailable {
                tenant,
                reason,
                retry_after_secs,
            }
        }
        TokenError::InstanceNotAllowed { url, reason } => ProxyError::InstanceNotAllowed {
            url,
            reason: reason.to_string(),
        },
        TokenError::LoginRequired { reason, command } => ProxyError::LoginRequired {
            tenant,
            reason,
            command,
        },
    }
}

/// No tenant for a request: an unknown name, or none named where several are
/// configured and none is the default; `how_to_name` tells the caller how to
/// name one from where it is (a header, a query parameter).
pub fn no_tenant(missing: NoTenant<'_>, settings: &Settings, how_to_name: &str) -> ProxyError {
    match missing {
        NoTenant::Unknown(name) => ProxyError::UnknownTenant {
            name: name.to_owned(),
            known: settings.tenant_names(),
        },
        NoTenant::NoDefault => ProxyError::NoTenantSelected(format!(
            "several tenants are configured and none is the default; {how_to_name}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failure(error: TokenError, retry_in: Duration) -> TokenFailure {
        TokenFailure { error, retry_in }
    }

    #[test]
    fn a_refused_key_keeps_its_words_and_status() {
        let not_allowed = KeyRefused::MidNotAllowed {
            tenant: "acme".into(),
            mid: "300".into(),
        };
        assert!(matches!(
            ProxyError::from(not_allowed),
            ProxyError::AccountNotAllowed { tenant, mid } if tenant == "acme" && mid == "300"
        ));
        let not_a_mid = ProxyError::from(KeyRefused::NotAMid("12ab".into()));
        assert_eq!(not_a_mid.code(), "bad_request");
        assert!(
            not_a_mid
                .to_string()
                .contains("`12ab` is not a business unit MID")
        );
        assert_eq!(ProxyError::from(KeyRefused::BadScope).code(), "bad_request");
    }

    #[test]
    fn a_token_failure_says_when_to_ask_again_rounded_up() {
        let rejected = TokenError::Rejected {
            status: 401,
            error: "invalid_client".into(),
            description: Some("Client authentication failed.".into()),
            url: "https://mc1.auth.marketingcloudapis.com/v2/token".into(),
        };
        let error = token_failure(failure(rejected, Duration::from_millis(4200)), "acme");
        assert!(matches!(
            error,
            ProxyError::TokenRejected(ref r)
                if r.tenant == "acme" && r.status == 401 && r.sfmc_error == "invalid_client" && r.retry_after_secs == 5
        ));
        let down = TokenError::Unavailable {
            reason: "connection refused".into(),
            retryable: true,
        };
        let error = token_failure(failure(down, Duration::ZERO), "acme");
        assert_eq!(error.code(), "token_unavailable");
        let login = TokenError::LoginRequired {
            reason: "no refresh token".into(),
            command: "sfmc-proxy login --tenant acme".into(),
        };
        let error = token_failure(failure(login, Duration::ZERO), "acme");
        assert_eq!(error.code(), "login_required");
    }
}
