//! `[tenants.NAME]`: one installed package each — its URLs, credentials,
//! business units, scope, path prefix, grant, and how hard it may press on
//! SFMC (`retry_throttled`, `max_concurrent_requests`) — validated into
//! [`Tenant`]s, and which of them is the default.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::defaults::DEFAULT_QUEUE_TIMEOUT;
use super::grant::{self, Grant};
use super::policy::{self, Policy};
use super::raw::RawTenant;
use super::upstream::UpstreamSettings;
use super::values::{Expander, duration_or, normalise_scope, parse_http_url, parse_mid};
use super::{ConfigError, Secret, invalid};

/// One SFMC installed package (server-to-server, client credentials).
#[derive(Debug)]
pub struct Tenant {
    pub name: Arc<str>,
    /// `{auth_url}/v2/token`.
    pub token_url: String,
    /// `{auth_url}/v2/authorize`, where a user logs in (authorization code).
    pub authorize_url: String,
    pub client_id: String,
    /// `None` only for a public app, which has none and sends none.
    pub client_secret: Option<Secret>,
    pub grant: Grant,
    /// Default business unit (MID); `None` = the BU that owns the package.
    pub account_id: Option<Arc<str>>,
    /// BUs a request may select; `None` = any.
    pub account_ids: Option<Vec<String>>,
    pub scope: Option<Arc<str>>,
    /// `/name`-style prefix that selects this tenant (stripped before forwarding).
    pub path_prefix: Option<String>,
    /// What validation changed in what was written, for `check` and the
    /// start-up log (e.g. a `/v2/token` suffix dropped from `auth_url`).
    pub notes: Vec<String>,
    /// What requests the tenant lets through (`read_only`, `allow_paths`, `deny_paths`).
    pub policy: Policy,
    /// The config file it was read from (absolute), for the commands that
    /// hints name; `None` for settings made from text.
    pub config_file: Option<Arc<Path>>,
    /// Whether a request SFMC throttled is sent again (`retry_throttled`,
    /// else `upstream.retry_throttled`).
    pub retry_throttled: bool,
    /// `max_concurrent_requests` and its `queue_timeout`; `None`: no limit.
    pub concurrency: Option<ConcurrencyLimit>,
}

/// At most `max` of a tenant's requests at SFMC at once (from the send to
/// the end of SFMC's response); one more waits up to `queue_timeout` for a
/// slot, then gets `503 upstream_busy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    pub max: usize,
    pub queue_timeout: Duration,
}

/// The most `max_concurrent_requests` may say: far above what SFMC lets one
/// package run at once, and well inside what a semaphore counts.
const MAX_CONCURRENT_REQUESTS: usize = 100_000;

impl Tenant {
    /// The command that logs a person in to this tenant (and business unit),
    /// as a hint shows it: with `--config` when the settings came from a
    /// file, so that it works from any directory.
    pub fn login_command(&self, account_id: Option<&str>) -> String {
        let config = self.config_file.as_deref().map_or(String::new(), |path| {
            format!(" --config {}", shell_word(&path.to_string_lossy()))
        });
        let mid = account_id.map_or(String::new(), |mid| format!(" --account-id {mid}"));
        format!("sfmc-proxy{config} login --tenant {}{mid}", self.name)
    }

    pub fn account_allowed(&self, mid: &str) -> bool {
        self.account_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == mid))
    }
}

/// The `[tenants.*]` sections, validated.
pub(super) struct ValidTenants {
    /// In name order.
    pub tenants: Vec<Arc<Tenant>>,
    /// Index into `tenants` of the default tenant.
    pub default_tenant: Option<usize>,
    /// With `only` (see `LoadOptions::only_tenant`): tenants left out, with why.
    pub left_out: Vec<String>,
}

pub(super) fn validate_tenants(
    raw: BTreeMap<String, RawTenant>,
    only: Option<&str>,
    config_file: Option<Arc<Path>>,
    upstream: &UpstreamSettings,
    ex: &Expander<'_>,
) -> Result<ValidTenants, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "tenants",
            "no tenant configured: add a [tenants.NAME] section with auth_url, client_id and client_secret",
        ));
    }
    let mut tenants = Vec::new();
    let mut defaults = Vec::new();
    let mut left_out = Vec::new();
    for (name, raw_tenant) in raw {
        let is_default = raw_tenant.default;
        let tenant = match validate_tenant(&name, raw_tenant, config_file.clone(), upstream, ex) {
            Ok(tenant) => tenant,
            Err(error @ ConfigError::MissingVariable { .. })
                if only.is_some_and(|only| only != name) =>
            {
                left_out.push(format!("tenant `{name}` left out: {error}"));
                continue;
            }
            Err(error) => return Err(error),
        };
        if is_default {
            defaults.push(tenants.len());
        }
        if let Some(prefix) = &tenant.path_prefix {
            let clash = tenants
                .iter()
                .find(|t: &&Arc<Tenant>| t.path_prefix.as_ref() == Some(prefix));
            if let Some(other) = clash {
                return Err(invalid(
                    format!("tenants.{name}.path_prefix"),
                    format!(
                        "`{prefix}` is already the path_prefix of tenant `{}`",
                        other.name
                    ),
                ));
            }
        }
        tenants.push(Arc::new(tenant));
    }
    let default_tenant = match defaults.as_slice() {
        [] if tenants.len() == 1 => Some(0),
        [] => None,
        [one] => Some(*one),
        [_, second, ..] => {
            return Err(invalid(
                format!("tenants.{}.default", tenants[*second].name),
                "only one tenant may be the default",
            ));
        }
    };
    Ok(ValidTenants {
        tenants,
        default_tenant,
        left_out,
    })
}

fn validate_tenant(
    name: &str,
    raw: RawTenant,
    config_file: Option<Arc<Path>>,
    upstream: &UpstreamSettings,
    ex: &Expander<'_>,
) -> Result<Tenant, ConfigError> {
    let key = |field: &str| format!("tenants.{name}.{field}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            format!("tenants.{name}"),
            "a tenant name may hold only letters, digits, '-' and '_'",
        ));
    }
    let grant = grant::validate_grant(name, &raw, ex)?;
    let policy = policy::validate(name, &raw)?;
    let auth_url_text = ex.expand(&key("auth_url"), &required(raw.auth_url, &key("auth_url"))?)?;
    let auth_url = parse_http_url(&key("auth_url"), &auth_url_text)?;
    let mut notes = Vec::new();
    let auth_url = match without_token_path(&auth_url) {
        Some(base) => {
            notes.push(format!(
                "{}: `{auth_url}` is the token URL; using its base `{base}/` (the Authentication Base URI)",
                key("auth_url")
            ));
            base.to_owned()
        }
        None => auth_url,
    };
    let client_id = ex.expand(
        &key("client_id"),
        &required(raw.client_id, &key("client_id"))?,
    )?;
    if client_id.trim().is_empty() {
        return Err(invalid(key("client_id"), "must not be empty"));
    }
    let client_secret = match (raw.client_secret, raw.client_secret_file) {
        // A public app has no secret and must never send one.
        (Some(_), _) | (_, Some(_)) if grant.is_public() => {
            return Err(invalid(
                key("client_secret"),
                "a public app has no client secret; remove it (or use app_type = \"web\")",
            ));
        }
        (None, None) if grant.is_public() => None,
        (Some(secret), None) => Some(ex.expand(&key("client_secret"), &secret)?),
        (None, Some(file)) => Some(ex.read_secret_file(&key("client_secret_file"), &file)?),
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("client_secret"),
                "set either client_secret or client_secret_file, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                key("client_secret"),
                "missing; set client_secret = \"${SFMC_CLIENT_SECRET}\" or client_secret_file",
            ));
        }
    };
    if client_secret.as_ref().is_some_and(String::is_empty) {
        return Err(invalid(key("client_secret"), "must not be empty"));
    }
    let account_ids = match raw.account_ids {
        Some(list) => {
            let mut ids = Vec::new();
            for (i, mid) in list.into_iter().enumerate() {
                ids.push(parse_mid(&format!("{}[{i}]", key("account_ids")), mid, ex)?);
            }
            Some(ids)
        }
        None => None,
    };
    let account_id = match raw.account_id {
        Some(mid) => Some(parse_mid(&key("account_id"), mid, ex)?),
        None => None,
    };
    if let (Some(mid), Some(ids)) = (&account_id, &account_ids)
        && !ids.contains(mid)
    {
        return Err(invalid(
            key("account_id"),
            format!("{mid} is not in account_ids"),
        ));
    }
    let scope = match raw.scope {
        Some(scope) => Some(ex.expand(&key("scope"), &scope)?),
        None => None,
    }
    .map(|s| normalise_scope(&s))
    .filter(|s| !s.is_empty());
    let path_prefix = match raw.path_prefix {
        Some(prefix) => Some(validate_prefix(&key("path_prefix"), &prefix)?),
        None => None,
    };
    let concurrency = validate_concurrency(
        name,
        raw.max_concurrent_requests,
        raw.queue_timeout.as_deref(),
    )?;
    Ok(Tenant {
        name: Arc::from(name),
        token_url: format!("{auth_url}/v2/token"),
        authorize_url: format!("{auth_url}/v2/authorize"),
        client_id,
        client_secret: client_secret.map(Secret::new),
        grant,
        account_id: account_id.map(Arc::from),
        account_ids,
        scope: scope.map(Arc::from),
        path_prefix,
        policy,
        notes,
        config_file,
        retry_throttled: raw.retry_throttled.unwrap_or(upstream.retry_throttled),
        concurrency,
    })
}

/// `max_concurrent_requests` (1 to [`MAX_CONCURRENT_REQUESTS`]) and its
/// `queue_timeout`, which means nothing without it.
fn validate_concurrency(
    name: &str,
    max: Option<usize>,
    queue_timeout: Option<&str>,
) -> Result<Option<ConcurrencyLimit>, ConfigError> {
    let key = |field: &str| format!("tenants.{name}.{field}");
    let Some(max) = max else {
        return match queue_timeout {
            Some(_) => Err(invalid(
                key("queue_timeout"),
                "applies only with max_concurrent_requests; set that too, or remove queue_timeout",
            )),
            None => Ok(None),
        };
    };
    if !(1..=MAX_CONCURRENT_REQUESTS).contains(&max) {
        return Err(invalid(
            key("max_concurrent_requests"),
            format!(
                "must be 1 to {MAX_CONCURRENT_REQUESTS} (remove the key for no limit); {max} given"
            ),
        ));
    }
    let queue_timeout = duration_or(&key("queue_timeout"), queue_timeout, DEFAULT_QUEUE_TIMEOUT)?;
    Ok(Some(ConcurrencyLimit { max, queue_timeout }))
}

/// `auth_url` without a trailing `/v2/token` (any case), which SFMC's docs
/// show beside the base and people paste: the proxy adds it itself.
fn without_token_path(auth_url: &str) -> Option<&str> {
    let cut = auth_url.len().checked_sub("/v2/token".len())?;
    let (base, tail) = (auth_url.get(..cut)?, auth_url.get(cut..)?);
    tail.eq_ignore_ascii_case("/v2/token").then_some(base)
}

/// First path segments a `path_prefix` must not take: SFMC's REST API roots,
/// its token and SOAP endpoints, and the proxy's own paths. A tenant prefix
/// `/hub` would strip `/hub` from every Journey Builder call.
const RESERVED_PREFIXES: [&str; 20] = [
    "hub",
    "asset",
    "data",
    "interaction",
    "messaging",
    "contacts",
    "automation",
    "platform",
    "push",
    "sms",
    "address",
    "email",
    "guide",
    "legacy",
    "journey",
    "ott",
    "v2",
    "_proxy",
    "favicon.ico",
    "service.asmx",
];

fn required(value: Option<String>, key: &str) -> Result<String, ConfigError> {
    value.ok_or_else(|| invalid(key, "missing (required)"))
}

fn validate_prefix(key: &str, prefix: &str) -> Result<String, ConfigError> {
    let written = prefix;
    let prefix = prefix.trim_end_matches('/');
    let valid = prefix.starts_with('/')
        && prefix.len() > 1
        && !prefix.contains(['?', '#', ' ', '%'])
        && !prefix.starts_with("//");
    if !valid {
        return Err(invalid(
            key,
            format!(
                "`{written}` must look like \"/name\" (starts with '/', no '?', '#', '%', spaces)"
            ),
        ));
    }
    let first = prefix[1..].split('/').next().unwrap_or_default();
    if let Some(reserved) = RESERVED_PREFIXES
        .iter()
        .find(|r| r.eq_ignore_ascii_case(first))
    {
        return Err(invalid(
            key,
            format!(
                "`{prefix}` would take `/{first}`, which is {}: pick a name of your own, e.g. \"/acme\"",
                match *reserved {
                    "_proxy" => "the proxy's own (/_proxy/…)",
                    "v2" => "SFMC's token endpoint (/v2/token)",
                    "service.asmx" => "SFMC's SOAP endpoint",
                    _ => "an SFMC REST API root",
                }
            ),
        ));
    }
    Ok(prefix.to_owned())
}

/// `text` as one word of a POSIX shell command: as it is when it holds only
/// characters no shell treats specially, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    match plain {
        true => text.to_owned(),
        false => format!("'{}'", text.replace('\'', "'\\''")),
    }
}
