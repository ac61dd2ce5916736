//! `TokenKey`: what a token is for (tenant, business unit, scope), and the one
//! constructor that checks a requested MID and scope against the tenant, used
//! by request routing, the broker, the admin paths and the CLI alike.

use std::sync::Arc;

use crate::config::{MID_RULE, Tenant, is_mid, normalise_scope};

/// What a token is for: one tenant, one business unit, one scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub tenant: Arc<str>,
    /// `None`: the business unit that owns the package.
    pub account_id: Option<Arc<str>>,
    /// `None`: every scope the package has.
    pub scope: Option<Arc<str>>,
}

/// Why a requested business unit or scope makes no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefused {
    #[error("X-SFMC-Account-Id `{0}` is not a business unit MID ({MID_RULE})")]
    NotAMid(String),
    /// The tenant's `account_ids` does not list it.
    #[error("tenant `{tenant}` does not allow business unit {mid}")]
    MidNotAllowed { tenant: String, mid: String },
    #[error("X-SFMC-Scope must be space-separated scope names")]
    BadScope,
}

impl TokenKey {
    /// The key for `tenant` with an optional business unit and scope override
    /// (checked against the tenant's `account_ids`); without them, the
    /// tenant's own `account_id` and `scope`.
    pub fn for_tenant(
        tenant: &Tenant,
        account_id: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Self, KeyRefused> {
        let account_id = match account_id {
            Some(mid) => Some(checked_mid(tenant, mid)?),
            None => tenant.account_id.clone(),
        };
        let scope = match scope {
            Some(scope) => Some(checked_scope(scope)?),
            None => tenant.scope.clone(),
        };
        Ok(Self {
            tenant: tenant.name.clone(),
            account_id,
            scope,
        })
    }
}

fn checked_mid(tenant: &Tenant, mid: &str) -> Result<Arc<str>, KeyRefused> {
    // `^[0-9]{1,10}$`: every other value would only be one more token key
    // (and one more token request) for SFMC to refuse.
    if !is_mid(mid) {
        return Err(KeyRefused::NotAMid(mid.to_owned()));
    }
    if !tenant.account_allowed(mid) {
        return Err(KeyRefused::MidNotAllowed {
            tenant: tenant.name.to_string(),
            mid: mid.to_owned(),
        });
    }
    Ok(Arc::from(mid))
}

/// Scopes are space-separated words; normalise spacing so equal scopes share a token.
pub fn checked_scope(scope: &str) -> Result<Arc<str>, KeyRefused> {
    let valid = scope.len() <= 2048 && scope.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        return Err(KeyRefused::BadScope);
    }
    Ok(Arc::from(normalise_scope(scope)))
}
