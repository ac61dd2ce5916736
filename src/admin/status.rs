//! The status page's one model, built once per request and rendered two
//! ways (JSON here, HTML in `page`): per configured tenant its grant, its
//! readiness state and what explains it, and per token key (business unit,
//! scope) the token's timing and granted scope, the last success, the last
//! error in SFMC's words, the backoff and the business unit's request counts.
//!
//! It reads `readiness::check_all` (bounded: a hung auth endpoint makes a
//! tenant `starting`, never a hung page) and `TokenCache::keys`, which has
//! no token value; nothing here can hold a token, a secret or a refresh
//! token, so neither rendering can show one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::Context;
use crate::config::{AppType, Grant, Tenant};
use crate::error::ProxyError;
use crate::failures::token_failure;
use crate::readiness::{self, State};
use crate::route::STATUS_DROP_PATH;
use crate::token::{KeyView, TokenFailure, TokenKey};

/// Everything the page shows.
pub struct Status {
    pub version: &'static str,
    pub uptime: Duration,
    /// The wall clock when it was built; every "at" is computed from it.
    pub generated_at: SystemTime,
    pub tenants: Vec<TenantRow>,
    /// The action's form token (see `actions`), for the page's forms and
    /// for programs that post the action.
    pub form_token: String,
}

pub struct TenantRow {
    pub name: Arc<str>,
    /// `client_credentials`, `authorization_code (web app)`, …
    pub grant: &'static str,
    pub state: State,
    /// What readiness says is wrong: the error a request would get.
    pub problem: Option<ProxyError>,
    /// For a login tenant that needs one: the command to run.
    pub login_command: Option<String>,
    pub keys: Vec<KeyRow>,
}

pub struct KeyRow {
    pub key: TokenKey,
    /// The tenant's own business unit and scope (what requests without
    /// selectors, and readiness, use).
    pub default: bool,
    pub token: Option<TokenFacts>,
    pub last_success: Option<Moment>,
    pub last_error: Option<ErrorFacts>,
    /// How long until the proxy asks SFMC again, while a refusal holds it back.
    pub backoff: Option<Duration>,
    /// Requests and errors of this key's business unit (all its scopes).
    pub counts: (u64, u64),
}

/// A moment in the past: how long ago, and when by the wall clock.
#[derive(Clone, Copy)]
pub struct Moment {
    pub ago: Duration,
    pub at: SystemTime,
}

pub struct TokenFacts {
    /// Since its request was sent.
    pub age: Duration,
    pub fetched_at: SystemTime,
    /// Zero once expired.
    pub expires_in: Duration,
    pub expires_at: SystemTime,
    /// Until the proxy refreshes it (on use); zero once due.
    pub refresh_in: Duration,
    pub granted_scope: Option<String>,
    pub rest_host: String,
}

pub struct ErrorFacts {
    pub when: Moment,
    /// The error a request got then: SFMC's `error` and `error_description`
    /// ride in it, and a login's command.
    pub error: ProxyError,
}

/// Wall-clock conversions for the cache's monotonic instants.
struct Clock {
    now: Instant,
    wall: SystemTime,
}

impl Clock {
    fn past(&self, then: Instant) -> Moment {
        let ago = self.now.saturating_duration_since(then);
        Moment {
            ago,
            at: self.wall.checked_sub(ago).unwrap_or(self.wall),
        }
    }

    fn future(&self, then: Instant) -> (Duration, SystemTime) {
        let left = then.saturating_duration_since(self.now);
        let at = match then.checked_duration_since(self.now) {
            Some(ahead) => self.wall.checked_add(ahead),
            None => self.wall.checked_sub(self.now - then),
        };
        (left, at.unwrap_or(self.wall))
    }
}

impl Status {
    pub async fn build(context: &Context<'_>) -> Status {
        let settings = context.settings;
        let mut reports = readiness::check_all(&settings.tenants, context.tokens).await;
        for report in &mut reports {
            super::degrade(report, context);
        }
        // Read after readiness: a fetch it started has put its key in.
        let views = context.tokens.keys();
        let clock = Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        };
        let tenants = settings
            .tenants
            .iter()
            .zip(reports)
            .map(|(tenant, report)| tenant_row(tenant, report, &views, &clock, context))
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime: clock.now.saturating_duration_since(context.page.started),
            generated_at: clock.wall,
            tenants,
            form_token: super::actions::form_token(context),
        }
    }

    /// The JSON rendering: durations in whole seconds (`*_s`), moments as
    /// RFC 3339 (`*_at`), absent facts as `null`.
    pub fn to_json(&self) -> Value {
        let tenants: Map<String, Value> = self
            .tenants
            .iter()
            .map(|t| (t.name.to_string(), tenant_json(t)))
            .collect();
        json!({
            "version": self.version,
            "uptime_s": self.uptime.as_secs(),
            "generated_at": rfc3339(self.generated_at),
            "tenants": tenants,
            "actions": {
                "drop": {
                    "method": "POST",
                    "path": STATUS_DROP_PATH,
                    "content_type": "application/x-www-form-urlencoded",
                    "fields": ["tenant", "account_id", "scope", "form_token"],
                    "form_token": self.form_token,
                },
            },
        })
    }
}

fn tenant_row(
    tenant: &Tenant,
    report: readiness::Report,
    views: &[KeyView],
    clock: &Clock,
    context: &Context<'_>,
) -> TenantRow {
    let default = TokenKey::for_tenant(tenant, None, None).ok();
    let keys = views
        .iter()
        .filter(|view| view.key.tenant == tenant.name)
        .map(|view| key_row(view, default.as_ref(), clock, context))
        .collect();
    TenantRow {
        name: tenant.name.clone(),
        grant: grant_name(&tenant.grant),
        state: report.state,
        login_command: report.error.as_ref().and_then(login_command),
        problem: report.error,
        keys,
    }
}

fn key_row(
    view: &KeyView,
    default: Option<&TokenKey>,
    clock: &Clock,
    context: &Context<'_>,
) -> KeyRow {
    let backoff = view.backoff_until.map(|until| clock.future(until).0);
    let token = view.token.as_ref().map(|token| {
        let fetched = clock.past(token.sent_at);
        let (expires_in, expires_at) = clock.future(token.expires_at);
        TokenFacts {
            age: fetched.ago,
            fetched_at: fetched.at,
            expires_in,
            expires_at,
            refresh_in: clock.future(token.refresh_at).0,
            granted_scope: token.scope.clone(),
            rest_host: token.rest_host.clone(),
        }
    });
    let last_error = view.last_error.as_ref().map(|(at, error)| {
        let failure = TokenFailure {
            error: error.clone(),
            retry_in: backoff.unwrap_or_default(),
        };
        ErrorFacts {
            when: clock.past(*at),
            error: token_failure(failure, &view.key.tenant),
        }
    });
    KeyRow {
        default: default == Some(&view.key),
        counts: super::business_unit_counts(context, &view.key),
        key: view.key.clone(),
        token,
        last_success: view.last_success.map(|at| clock.past(at)),
        last_error,
        backoff,
    }
}

fn grant_name(grant: &Grant) -> &'static str {
    match grant {
        Grant::ClientCredentials => "client_credentials",
        Grant::AuthorizationCode {
            app_type: AppType::Web,
            ..
        } => "authorization_code (web app)",
        Grant::AuthorizationCode {
            app_type: AppType::Public,
            ..
        } => "authorization_code (public app)",
    }
}

/// The command a login tenant's person has to run, when that is the problem.
pub fn login_command(error: &ProxyError) -> Option<String> {
    match error {
        ProxyError::LoginRequired { command, .. } => Some(command.clone()),
        _ => None,
    }
}

fn tenant_json(row: &TenantRow) -> Value {
    json!({
        "grant": row.grant,
        "state": row.state.as_str(),
        "ready": row.state.serving(),
        "error": row.problem.as_ref().map(error_json),
        "login_command": row.login_command,
        "keys": row.keys.iter().map(key_json).collect::<Vec<_>>(),
    })
}

fn key_json(row: &KeyRow) -> Value {
    let token = row.token.as_ref();
    let (requests, errors) = row.counts;
    json!({
        "account_id": row.key.account_id.as_deref(),
        "scope": row.key.scope.as_deref(),
        "default": row.default,
        "token_present": token.is_some(),
        "age_s": token.map(|t| t.age.as_secs()),
        "fetched_at": token.map(|t| rfc3339(t.fetched_at)),
        "expires_in_s": token.map(|t| t.expires_in.as_secs()),
        "expires_at": token.map(|t| rfc3339(t.expires_at)),
        "refresh_in_s": token.map(|t| t.refresh_in.as_secs()),
        "granted_scope": token.and_then(|t| t.granted_scope.as_deref()),
        "rest_host": token.map(|t| t.rest_host.as_str()),
        "last_success_at": row.last_success.map(|m| rfc3339(m.at)),
        "last_success_age_s": row.last_success.map(|m| m.ago.as_secs()),
        "last_error": row.last_error.as_ref().map(|e| {
            let mut body = error_json(&e.error);
            if let Value::Object(fields) = &mut body {
                fields.insert("at".into(), json!(rfc3339(e.when.at)));
                fields.insert("age_s".into(), json!(e.when.ago.as_secs()));
            }
            body
        }),
        "backoff_s": row.backoff.map(|b| b.as_secs_f64().ceil() as u64),
        "requests": requests,
        "errors": errors,
    })
}

/// The proxy's error body (`error`, `message`, SFMC's `sfmc_error` and
/// `sfmc_error_description`, a login's `command`), without the tenant the
/// row already names.
pub fn error_json(error: &ProxyError) -> Value {
    let mut body = error.json_body();
    if let Value::Object(fields) = &mut body {
        fields.remove("tenant");
    }
    body
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_placed_on_the_wall_clock() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = Clock { now, wall };
        let past = clock.past(now - Duration::from_secs(30));
        assert_eq!(past.ago, Duration::from_secs(30));
        assert_eq!(rfc3339(past.at), "1970-01-12T13:46:10Z");
        let (left, at) = clock.future(now + Duration::from_secs(60));
        assert_eq!(
            (left, rfc3339(at)),
            (Duration::from_secs(60), "1970-01-12T13:47:40Z".into())
        );
        let (left, at) = clock.future(now - Duration::from_secs(5));
        assert_eq!(left, Duration::ZERO, "expired: nothing left");
        assert_eq!(rfc3339(at), "1970-01-12T13:46:35Z", "but when it was");
    }
}
