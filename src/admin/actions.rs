//! The status page's one action, `POST /_proxy/status/drop`: drop one key's
//! cached token (after a package's scopes changed, say), so the next request
//! fetches a new one. And the form token (the process's, or with `[redis]`
//! the fleet's) that, besides the
//! guard's Origin / `Sec-Fetch-Site` refusal of cross-site requests, makes
//! it CSRF-safe: a page elsewhere cannot read the status page, so it cannot
//! know the token to post.

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Context, accept};
use crate::body::{ClientBody, ProxyBody, json_response};
use crate::error::ProxyError;
use crate::failures::no_tenant;
use crate::fleet::Sealer;
use crate::route::STATUS_PATH;
use crate::tls;
use crate::token::{TokenKey, checked_scope};

/// The form's fields are short: a tenant name, a MID, a scope, the token.
const FORM_LIMIT: usize = 8 * 1024;

/// A random value drawn once per process, put in the page's forms and
/// required back with each action (with `[redis]` the fleet's form token,
/// [`fleet_form_token`], is used instead). Its Debug shows nothing of it.
pub struct FormToken(String);

impl FormToken {
    pub fn new() -> Result<Self, rustls::Error> {
        tls::random_hex(32).map(Self)
    }

    /// For the page's hidden fields and the JSON's `actions`.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Compared in constant time: how long it takes says nothing of how
    /// much of a guess was right.
    fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for FormToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormToken(…)")
    }
}

/// How long a fleet form token works: a page left open longer is reloaded.
const FLEET_FORM_LIFETIME: u64 = 12 * 3600;

/// The form token a page gets now: with `[redis]` the fleet's —
/// `EXPIRY.MAC`, a MAC under the fleet's key that any replica checks, so a
/// page one replica served posts to another behind the same load balancer
/// — else this process's.
pub fn form_token(context: &Context<'_>) -> String {
    match context.fleet_seal {
        Some(sealer) => fleet_form_token(sealer, unix_now() + FLEET_FORM_LIFETIME),
        None => context.page.form_token.reveal().to_owned(),
    }
}

fn fleet_form_token(sealer: &Sealer, expiry: u64) -> String {
    let expiry = expiry.to_string();
    let mut mac = sealer.tag(FORM_KIND, &[&expiry]);
    mac.truncate(FORM_MAC_CHARS);
    format!("{expiry}.{mac}")
}

const FORM_KIND: &str = "status-form-token";
const FORM_MAC_CHARS: usize = 32;

/// Whether `presented` is a form token this proxy gave a page: the
/// fleet's (live, under its key or the previous one) or this process's.
fn form_token_ok(context: &Context<'_>, presented: &str) -> bool {
    let fleet = context
        .fleet_seal
        .is_some_and(|sealer| fleet_form_token_ok(sealer, presented, unix_now()));
    fleet || context.page.form_token.matches(presented)
}

/// Whether `presented` is a fleet form token still live at `now`.
fn fleet_form_token_ok(sealer: &Sealer, presented: &str, now: u64) -> bool {
    presented.split_once('.').is_some_and(|(expiry, mac)| {
        let live = expiry.parse::<u64>().is_ok_and(|e| now < e);
        live && sealer.verify_tag(FORM_KIND, &[expiry], mac, FORM_MAC_CHARS)
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The fields as posted.
struct DropForm {
    tenant: Option<String>,
    account_id: Option<String>,
    scope: Option<String>,
    form_token: Option<String>,
}

impl DropForm {
    /// The fields; a field given twice is refused, since which one a
    /// reader takes (the first, the last) would decide which key is dropped.
    fn parse(body: &[u8]) -> Result<Self, ProxyError> {
        let mut form = DropForm {
            tenant: None,
            account_id: None,
            scope: None,
            form_token: None,
        };
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            let slot = match &*name {
                "tenant" => &mut form.tenant,
                "account_id" => &mut form.account_id,
                "scope" => &mut form.scope,
                "form_token" => &mut form.form_token,
                _ => continue,
            };
            if seen.iter().any(|s| *s == name) {
                return Err(ProxyError::BadRequest(format!(
                    "the form gives `{name}` twice: give each field once"
                )));
            }
            seen.push(name.into_owned());
            // An empty field is an absent one: the tenant's own BU or scope.
            *slot = Some(value.into_owned()).filter(|v| !v.is_empty());
        }
        Ok(form)
    }
}

/// Drops the named key's token. A browser (see `accept::prefers_html`) is
/// sent back to the page with `303 See Other`; a program gets JSON.
pub async fn drop_token(
    parts: &Parts,
    body: ClientBody,
    context: &Context<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let form = read_form(parts, body).await?;
    let presented = form.form_token.as_deref().unwrap_or_default();
    if !form_token_ok(context, presented) {
        return Err(ProxyError::FormTokenInvalid);
    }
    let key = held_key(&form, context)?;
    let had_token = context.tokens.drop_token(&key);
    let (mid, scope) = (key.account_id.as_deref(), key.scope.as_deref());
    tracing::info!(
        tenant = &*key.tenant,
        account_id = mid,
        scope,
        had_token,
        "status page: dropped the cached token; the next request fetches a new one"
    );
    if accept::prefers_html(parts) {
        return Ok(back_to_page(&key));
    }
    let message = if had_token {
        "dropped the cached token; the next request fetches a new one"
    } else {
        "no token was cached for this key (its backoff, if any, is cleared)"
    };
    let body = json!({
        "dropped": had_token,
        "tenant": &*key.tenant,
        "account_id": mid,
        "scope": scope,
        "message": message,
    });
    Ok(json_response(StatusCode::OK, &body))
}

async fn read_form(parts: &Parts, body: ClientBody) -> Result<DropForm, ProxyError> {
    let media = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
        return Err(ProxyError::BadRequest(
            "send the action's fields (tenant, account_id, scope, form_token) as a form: Content-Type: application/x-www-form-urlencoded".into(),
        ));
    }
    let bytes = Limited::new(body, FORM_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            ProxyError::BadRequest(format!(
                "the form could not be read (at most {FORM_LIMIT} bytes)"
            ))
        })?
        .to_bytes();
    DropForm::parse(&bytes)
}

/// The key named by the form, as the cache holds it: the tenant must be
/// configured and the key present (else there is nothing to drop).
fn held_key(form: &DropForm, context: &Context<'_>) -> Result<TokenKey, ProxyError> {
    let settings = context.settings;
    let name = form.tenant.as_deref().ok_or_else(|| {
        ProxyError::BadRequest("the form needs the field `tenant` (a tenant's name)".into())
    })?;
    let tenant = settings
        .tenant_or_default(Some(name))
        .map_err(|missing| no_tenant(missing, settings, "name one in the field `tenant`"))?;
    let scope = form.scope.as_deref().map(checked_scope).transpose()?;
    let key = TokenKey {
        tenant: tenant.name.clone(),
        account_id: form.account_id.as_deref().map(Into::into),
        scope,
    };
    if context.tokens.keys().iter().any(|view| view.key == key) {
        Ok(key)
    } else {
        Err(ProxyError::UnknownKey {
            tenant: key.tenant.to_string(),
            account_id: key
                .account_id
                .as_deref()
                .unwrap_or("(the package's own)")
                .to_owned(),
            scope: key
                .scope
                .as_deref()
                .map_or("(all the package's)".to_owned(), |s| format!("`{s}`")),
        })
    }
}

/// `303 See Other` to the page, which then says what was dropped.
fn back_to_page(key: &TokenKey) -> Response<ProxyBody> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("dropped", &key.tenant);
    if let Some(mid) = &key.account_id {
        query.append_pair("account_id", mid);
    }
    if let Some(scope) = &key.scope {
        query.append_pair("scope", scope);
    }
    let location = format!("{STATUS_PATH}?{}", query.finish());
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    // The query is form-encoded ASCII: always a valid header value.
    if let Ok(location) = HeaderValue::try_from(location) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_form_token_works_on_any_replica_of_the_key_until_it_expires() {
        let redis = |key: &str| crate::config::RedisSettings::for_tests(key, None);
        let key = "0123456789abcdef0123456789abcdef";
        let (one, other) = (
            Sealer::new(&redis(key)).expect("keys"),
            Sealer::new(&redis(key)).expect("keys"),
        );
        let token = fleet_form_token(&one, 1_000);
        assert!(fleet_form_token_ok(&other, &token, 999), "{token}");
        assert!(!fleet_form_token_ok(&other, &token, 1_000), "expired");
        let longer = token.replacen("1000", "9000", 1);
        assert!(!fleet_form_token_ok(&other, &longer, 999), "{longer}");
        let stranger = Sealer::new(&redis("fedcba9876543210fedcba9876543210")).expect("keys");
        assert!(!fleet_form_token_ok(&stranger, &token, 999));
        assert!(!fleet_form_token_ok(&other, "", 0));
    }

    #[test]
    fn the_form_token_is_random_and_compared_whole() {
        let token = FormToken::new().expect("random");
        assert_eq!(token.reveal().len(), 64);
        assert!(token.matches(token.reveal()));
        assert!(!token.matches(&token.reveal()[..63]));
        assert!(!token.matches(""));
        assert_ne!(token.reveal(), FormToken::new().expect("random").reveal());
        assert_eq!(format!("{token:?}"), "FormToken(…)");
    }

    #[test]
    fn empty_fields_are_absent_ones() {
        let form = DropForm::parse(b"tenant=acme&account_id=&scope=a+b&form_token=x&other=1")
            .expect("a form");
        assert_eq!(form.tenant.as_deref(), Some("acme"));
        assert_eq!(form.account_id, None);
        assert_eq!(form.scope.as_deref(), Some("a b"));
        assert_eq!(form.form_token.as_deref(), Some("x"));
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        for body in [
            &b"tenant=prod&tenant=other"[..],
            b"tenant=a&form_token=x&form_token=y",
        ] {
            let refused = DropForm::parse(body).map(|_| ()).unwrap_err();
            assert_eq!(refused.code(), "bad_request");
            assert!(refused.to_string().contains("twice"), "{refused}");
        }
    }
}
