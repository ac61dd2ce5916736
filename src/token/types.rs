//! The token types: `Token` (a valid access token, its `Authorization` value
//! built once, and its timing on both clocks: tokio's, which stops while the
//! machine is suspended, and the wall clock, which does not), `TokenError`
//! (why one could not be had) and `TokenFailure` (that, and when to ask
//! again; `crate::failures` turns it into the proxy's error).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tokio::time::Instant;

use super::TokenKey;
use crate::config::Secret;
use crate::upstream::{InstanceBase, InstanceRefused};

/// A valid access token and where to use it. `Debug` never shows the token.
pub struct Token {
    access_token: Secret,
    /// `Bearer <token>`, built once per token rather than once per request.
    bearer: HeaderValue,
    pub scope: Option<String>,
    pub rest_instance: InstanceBase,
    pub soap_instance: Option<InstanceBase>,
    pub expires_in: Duration,
    pub sent_at: Instant,
    pub expires_at: Instant,
    pub(super) refresh_at: Instant,
    /// `refresh_at` and `expires_at` on the wall clock. tokio's `Instant`
    /// (CLOCK_MONOTONIC) stands still while a laptop sleeps, so after a
    /// 30-minute suspend it would call an expired token fresh; the wall
    /// clock moves on, and a token is fresh only if both clocks say so.
    pub(super) wall_refresh_at: SystemTime,
    pub(super) wall_expires_at: SystemTime,
}

impl Token {
    /// `sent_at` and `sent_wall`: when the request was sent, on each clock.
    pub(super) fn new(
        fetched: FetchedToken,
        sent_at: Instant,
        sent_wall: SystemTime,
        refresh_before: Duration,
    ) -> Result<Self, TokenError> {
        let mut bearer = HeaderValue::try_from(format!("Bearer {}", fetched.access_token))
            .map_err(|_| {
                TokenError::InvalidResponse("access_token is not a valid header value".into())
            })?;
        bearer.set_sensitive(true);
        // `expires_in` is SFMC's number: an absurd one must be an error, not
        // an overflow panic.
        let (Some(expires_at), Some(wall_expires_at)) = (
            sent_at.checked_add(fetched.expires_in),
            sent_wall.checked_add(fetched.expires_in),
        ) else {
            return Err(TokenError::InvalidResponse(format!(
                "SFMC returned an implausible token lifetime (expires_in = {})",
                fetched.expires_in.as_secs()
            )));
        };
        // A lifetime shorter than the refresh margin would mean "always stale":
        // refresh at half-life instead.
        let margin = if refresh_before < fetched.expires_in {
            refresh_before
        } else {
            fetched.expires_in / 2
        };
        Ok(Self {
            access_token: Secret::new(fetched.access_token),
            bearer,
            scope: fetched.scope,
            rest_instance: fetched.rest_instance,
            soap_instance: fetched.soap_instance,
            expires_in: fetched.expires_in,
            sent_at,
            expires_at,
            refresh_at: expires_at - margin,
            wall_refresh_at: wall_expires_at - margin,
            wall_expires_at,
        })
    }

    /// The `Authorization` value for this token (marked sensitive).
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// The raw token: only for the `token` CLI command and SOAP envelopes.
    pub fn access_token(&self) -> &str {
        self.access_token.expose()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("scope", &self.scope)
            .field("rest_instance", &self.rest_instance.to_string())
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// SFMC answered the token request with an error (HTTP 4xx): its
    /// `error` (or `http_<status>` when the body had none) and
    /// `error_description`, and the URL that answered.
    Rejected {
        status: u16,
        error: String,
        description: Option<String>,
        url: String,
    },
    /// The auth endpoint could not be reached or failed; `retryable` when a
    /// quick retry may help (connection failure, 5xx, timeout).
    Unavailable { reason: String, retryable: bool },
    /// SFMC answered 200 with something that is not a usable token.
    InvalidResponse(String),
    /// The instance URL is not one the proxy will send a token to.
    InstanceNotAllowed {
        url: String,
        reason: InstanceRefused,
    },
    /// An authorization-code tenant has no usable refresh token: a person
    /// must log in (`command`) before the proxy can act for them again.
    LoginRequired { reason: String, command: String },
}

/// What went wrong, for a person: SFMC's own words where SFMC said something,
/// and the URL called. Logs and the CLI use this, never `Debug`.
impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected {
                status,
                error,
                description,
                url,
            } => write!(
                f,
                "POST {url} answered HTTP {status}{}",
                crate::error::sfmc_words(*status, error, description.as_deref())
            ),
            Self::Unavailable { reason, .. } | Self::InvalidResponse(reason) => f.write_str(reason),
            Self::InstanceNotAllowed { url, reason } => write!(
                f,
                "SFMC returned an instance URL the proxy will not send a token to ({url}): {reason}"
            ),
            Self::LoginRequired { reason, command } => write!(f, "{reason}; run `{command}`"),
        }
    }
}

impl TokenError {
    /// What to change, for a refusal from SFMC (`None` for other errors,
    /// whose text already says it).
    pub fn hint(&self, tenant: &str) -> Option<String> {
        match self {
            Self::Rejected {
                status,
                error,
                description,
                ..
            } => Some(rejected_hint(
                *status,
                error,
                description.as_deref(),
                tenant,
            )),
            _ => None,
        }
    }

    pub(super) fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable {
                retryable: true,
                ..
            }
        )
    }

    /// Whether the refusal is about the package itself (a wrong client id or
    /// secret) rather than one business unit or scope: then every key of the
    /// tenant backs off together. SFMC answers a bad id or secret with
    /// `invalid_client`; a BU the package may not use, or a scope it lacks,
    /// with `unauthorized_client`/`invalid_scope` or a description naming the
    /// account — those stay per key, so one bad MID does not freeze the rest.
    pub(super) fn is_tenant_wide(&self) -> bool {
        let Self::Rejected {
            error, description, ..
        } = self
        else {
            return false;
        };
        let about_one_key = description.as_deref().is_some_and(|text| {
            let text = text.to_ascii_lowercase();
            ["account", "mid", "scope", "business unit"]
                .iter()
                .any(|word| text.contains(word))
        });
        error.eq_ignore_ascii_case("invalid_client") && !about_one_key
    }

    /// First backoff window and its cap: long for a refusal (it will not fix
    /// itself quickly and SFMC throttles), short for an outage.
    pub(super) fn backoff_schedule(&self) -> (Duration, Duration) {
        match self {
            Self::Unavailable { .. } => (Duration::from_secs(2), Duration::from_secs(60)),
            // A login elsewhere (the `login` command) writes the store: look again soon.
            Self::LoginRequired { .. } => (Duration::from_secs(1), Duration::from_secs(5)),
            _ => (Duration::from_secs(5), Duration::from_secs(300)),
        }
    }
}

/// A failed `get`: the error and how long until the proxy will try again.
#[derive(Debug, Clone)]
pub struct TokenFailure {
    pub error: TokenError,
    pub retry_in: Duration,
}

/// What a token source returns; the cache adds the timing.
pub struct FetchedToken {
    pub access_token: String,
    pub expires_in: Duration,
    pub scope: Option<String>,
    pub rest_instance: InstanceBase,
    pub soap_instance: Option<InstanceBase>,
}

pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<FetchedToken, TokenError>> + Send + 'a>>;

/// What [`TokenSource::find`] returns: a token already had, if any.
pub type FindFuture<'a> = Pin<Box<dyn Future<Output = Option<FetchedToken>> + Send + 'a>>;

/// Where tokens come from: SFMC's `/v2/token` in production, a script in tests.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> FetchFuture<'a>;

    /// What `fetch` asks, for a person (`POST https://…/v2/token`): named
    /// when a fetch that got no answer gives up. Only called on that path.
    fn target(&self, _key: &TokenKey) -> String {
        "the token source".to_owned()
    }

    /// The cache dropped `access_token`, which this source gave for `key`
    /// (SFMC refused it, or a person dropped it on the status page): a
    /// source that shares tokens stops handing it out.
    fn refused(&self, _key: &TokenKey, _access_token: &str) {}

    /// A fresh token for `key` that costs SFMC nothing (another replica's,
    /// shared): asked before `fetch`, and not counted against the tenant's
    /// rate limit, which is for requests to SFMC.
    fn find<'a>(&'a self, _key: &'a TokenKey) -> FindFuture<'a> {
        Box::pin(std::future::ready(None))
    }
}

/// How a request got its token, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache.
    Hit,
    /// Fetched it (this request's own fetch).
    Fetch,
    /// Waited for a concurrent caller's fetch and shared its token.
    Coalesced,
    /// Served a still-valid token and started its background refresh.
    Refresh,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Fetch => "fetch",
            Self::Coalesced => "coalesced",
            Self::Refresh => "refresh",
        }
    }
}

#[derive(Debug)]
pub struct Lease {
    pub token: Arc<Token>,
    pub outcome: Outcome,
}

/// What to change after SFMC refused a token request, chosen by what SFMC
/// said: a wrong URL, a wrong id or secret, a business unit or scope the
/// installed package lacks. The words name the places in Marketing Cloud
/// Setup (Apps > Installed Packages) where each is fixed.
fn rejected_hint(status: u16, error: &str, description: Option<&str>, tenant: &str) -> String {
    let said = description.unwrap_or_default().to_ascii_lowercase();
    let about_account = said.contains("account_id") || said.contains("account (mid)");
    if status == 404 || status == 405 {
        format!(
            "is tenants.{tenant}.auth_url the package's Authentication Base URI (https://YOUR_SUBDOMAIN.auth.marketingcloudapis.com/, under Installed Packages > the package > API Integration)?"
        )
    } else if about_account || error == "unauthorized_client" {
        format!(
            "the installed package has no access to this business unit (account_id MID): give it access under Setup > Installed Packages > the package > Access, or use a MID it has (tenants.{tenant}.account_id, the request's X-SFMC-Account-Id, or --account-id)"
        )
    } else if error == "invalid_client" {
        format!(
            "check tenants.{tenant}.client_id and client_secret: copy both again from Installed Packages > the package > API Integration (a regenerated secret, or a stray space or quote, is the usual cause)"
        )
    } else if error == "invalid_scope" {
        format!(
            "the installed package does not grant a scope that was asked for: add the permission to its API Integration, or remove it from tenants.{tenant}.scope"
        )
    } else if error == "unsupported_grant_type" || error == "invalid_grant" {
        format!(
            "the package does not accept this grant: a client_credentials tenant needs a Server-to-Server API Integration; a login tenant needs a Web or Public App one (tenants.{tenant}.grant)"
        )
    } else {
        format!(
            "check tenants.{tenant}.client_id, client_secret, account_id and scope against the installed package"
        )
    }
}
