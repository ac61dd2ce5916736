//! `sfmc-proxy check`: validates the config, then gets a token for every
//! tenant and business unit the proxy would use — the tenant's default and
//! each of its `account_ids` — and reports one line per tenant and business
//! unit (`--json`: one document). Never prints a token.
//!
//! - Exit 0 when every business unit got a token, 1 when any did not (the
//!   message counts them), 2 for a config or usage error.
//! - Tokens come from the `token` command's cache while they are fresh, and
//!   new ones go into it (`token_cache`): a second `check` asks SFMC for
//!   nothing.
//! - The proxy's own rate limit (`token.rate_burst`, `token.rate_interval`)
//!   applies: a tenant with more business units than the burst waits for
//!   the bucket (and says so on stderr) instead of failing them.
//! - `--offline` validates the config (parse, variables, files, the TLS set-up)
//!   and says what would be checked, from the cache where it can; nothing is
//!   sent anywhere.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::token_cache::{self, Entry, TokenFileCache};
use super::{Failure, build, load, runtime};
use crate::config::{Grant, Settings, Tenant};
use crate::failures::token_failure;
use crate::proxy::Proxy;
use crate::token::{KeyRefused, Lease, TokenKey};

/// `--json`'s document (field names are documented in README.md: keep them).
#[derive(Serialize)]
struct Report {
    config: String,
    offline: bool,
    /// Every business unit got a token; `null` with `--offline`.
    ok: Option<bool>,
    failed: usize,
    tenants: Vec<TenantReport>,
}

#[derive(Serialize)]
struct TenantReport {
    name: String,
    default: bool,
    grant: &'static str,
    token_url: String,
    /// How calls to the token endpoint leave: "direct", or through which
    /// egress proxy (from which key or variable).
    egress: String,
    /// How the tenant meets SFMC's throttling, in words (as the text line).
    throttling: String,
    retry_throttled: bool,
    max_concurrent_requests: Option<usize>,
    /// Seconds; `null` without `max_concurrent_requests`.
    queue_timeout: Option<f64>,
    notes: Vec<String>,
    business_units: Vec<UnitReport>,
}

#[derive(Serialize)]
struct UnitReport {
    /// `null`: the business unit that owns the package.
    account_id: Option<String>,
    /// The tenant's default business unit (its `account_id`).
    default: bool,
    /// `null` with `--offline` (not checked).
    ok: Option<bool>,
    /// The token came from the cache (with `--offline`: one is cached).
    cached: bool,
    /// Seconds until the token expires.
    expires_in: Option<u64>,
    rest_instance: Option<String>,
    soap_instance: Option<String>,
    /// How calls to the REST instance leave (as `egress`), when known.
    instance_egress: Option<String>,
    /// The scope SFMC granted.
    scope: Option<String>,
    error: Option<String>,
}

impl UnitReport {
    fn new(account_id: Option<&str>, default: bool) -> Self {
        Self {
            account_id: account_id.map(str::to_owned),
            default,
            ok: None,
            cached: false,
            expires_in: None,
            rest_instance: None,
            soap_instance: None,
            instance_egress: None,
            scope: None,
            error: None,
        }
    }

    fn with_entry(mut self, entry: &Entry, now: u64) -> Self {
        self.cached = true;
        self.expires_in = Some(entry.expires_in(now));
        self.rest_instance = Some(entry.rest_instance.clone());
        self.soap_instance = entry.soap_instance.clone();
        self.scope = entry.granted_scope.clone();
        self
    }

    fn with_lease(mut self, lease: &Lease) -> Self {
        let token = &lease.token;
        self.ok = Some(true);
        self.expires_in = Some(token.expires_in.as_secs());
        self.rest_instance = Some(token.rest_instance.to_string());
        self.soap_instance = token.soap_instance.as_ref().map(ToString::to_string);
        self.scope = token.scope.clone();
        self
    }

    fn failed(mut self, error: String) -> Self {
        self.ok = Some(false);
        self.error = Some(error);
        self
    }
}

/// One business unit to check: its key (or why the tenant refuses it).
struct Unit {
    key: Result<TokenKey, KeyRefused>,
    account_id: Option<Arc<str>>,
    default: bool,
}

/// The tenant's default business unit, then each `account_ids` entry that
/// is not it, in the config's order (each once).
fn units(tenant: &Tenant) -> Vec<Unit> {
    let mut units = vec![Unit {
        key: TokenKey::for_tenant(tenant, None, None),
        account_id: tenant.account_id.clone(),
        default: true,
    }];
    for mid in tenant.account_ids.iter().flatten() {
        if units.iter().any(|u| u.account_id.as_deref() == Some(mid)) {
            continue;
        }
        units.push(Unit {
            key: TokenKey::for_tenant(tenant, Some(mid), None),
            account_id: Some(Arc::from(mid.as_str())),
            default: false,
        });
    }
    units
}

pub(super) async fn run(
    config: &Path,
    json: bool,
    offline: bool,
    fresh: bool,
) -> Result<(), Failure> {
    let settings = load(config)?;
    // Built with --offline too: it reads upstream.ca_file and the system's
    // roots, which a config can get wrong; it sends nothing.
    let proxy = build(settings.clone())?;
    let total: usize = settings.tenants.iter().map(|t| units(t).len()).sum();
    if !json {
        say!(
            "config {}: ok ({} tenant(s), {total} business unit(s)){}",
            config.display(),
            settings.tenants.len(),
            if offline {
                "; --offline: no token requested"
            } else {
                ""
            }
        );
    }
    let cache = match offline {
        true => TokenFileCache::peek(&settings),
        false => TokenFileCache::open(&settings).await,
    };
    let mut checker = Checker {
        proxy: &proxy,
        settings: &settings,
        cache,
        json,
        offline,
        fresh,
    };
    let mut report = Report {
        config: config.display().to_string(),
        offline,
        ok: None,
        failed: 0,
        tenants: Vec::new(),
    };
    for (index, tenant) in settings.tenants.iter().enumerate() {
        let mut checked = checker.tenant(tenant).await;
        checked.default = settings.default_tenant == Some(index);
        report.failed += checked
            .business_units
            .iter()
            .filter(|unit| unit.ok == Some(false))
            .count();
        report.tenants.push(checked);
    }
    if !offline {
        report.ok = Some(report.failed == 0);
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => say!("{text}"),
            Err(error) => return Err(runtime(format!("cannot write the report: {error}"))),
        }
    }
    if report.failed > 0 {
        return Err(runtime(format!(
            "{} of {total} business unit(s) could not get a token",
            report.failed
        )));
    }
    Ok(())
}

/// What one `check` run works with.
struct Checker<'a> {
    proxy: &'a Proxy,
    settings: &'a Settings,
    cache: TokenFileCache,
    json: bool,
    offline: bool,
    /// `--fresh`: no cached token counts; each is asked of SFMC (and cached).
    fresh: bool,
}

impl Checker<'_> {
    /// Every business unit of `tenant`, each line printed as it is known.
    async fn tenant(&mut self, tenant: &Tenant) -> TenantReport {
        let routes = &self.settings.upstream.egress;
        let egress = routes.route_for_url(&tenant.token_url).to_string();
        let throttling = throttling_words(tenant, self.settings.upstream.max_retry_wait);
        if !self.json {
            for note in &tenant.notes {
                say!("note: {note}");
            }
            say!(
                "tenant {}: token endpoint {} ({})",
                tenant.name,
                tenant.token_url,
                grant_words(&tenant.grant)
            );
            say!("  egress: {egress}");
            say!("  throttling: {throttling}");
        }
        let fingerprint = token_cache::fingerprint(tenant);
        let mut reports = Vec::new();
        for unit in units(tenant) {
            let mut unit = match self.offline {
                true => planned_unit(&self.cache, &fingerprint, unit),
                false => {
                    let (proxy, settings) = (self.proxy, self.settings);
                    let cache = &mut self.cache;
                    let reuse = !self.fresh;
                    checked_unit(proxy, settings, cache, reuse, tenant, &fingerprint, unit).await
                }
            };
            unit.instance_egress = unit
                .rest_instance
                .as_deref()
                .map(|url| routes.route_for_url(url).to_string());
            if !self.json {
                say!("  {}", unit_line(&tenant.name, &unit, &egress));
            }
            reports.push(unit);
        }
        TenantReport {
            name: tenant.name.to_string(),
            default: false,
            grant: grant_name(&tenant.grant),
            token_url: tenant.token_url.clone(),
            egress,
            throttling,
            retry_throttled: tenant.retry_throttled,
            max_concurrent_requests: tenant.concurrency.map(|limit| limit.max),
            queue_timeout: tenant
                .concurrency
                .map(|limit| limit.queue_timeout.as_secs_f64()),
            notes: tenant.notes.clone(),
            business_units: reports,
        }
    }
}

/// What the tenant does when SFMC throttles, and how many of its requests
/// may be at SFMC at once.
fn throttling_words(tenant: &Tenant, max_retry_wait: std::time::Duration) -> String {
    let show = humantime::format_duration;
    let retry = match tenant.retry_throttled {
        true => format!(
            "429/503 and Rate Limited sent again (Retry-After up to {}, at most twice)",
            show(max_retry_wait)
        ),
        false => "429/503 and Rate Limited passed to the client".to_owned(),
    };
    match tenant.concurrency {
        Some(limit) => format!(
            "{retry}; at most {} requests at SFMC at once, others wait up to {}",
            limit.max,
            show(limit.queue_timeout)
        ),
        None => format!("{retry}; no limit on requests at once"),
    }
}

/// `--offline`: what would be checked, and whether a cached token would do.
fn planned_unit(cache: &TokenFileCache, fingerprint: &str, unit: Unit) -> UnitReport {
    let mut report = UnitReport::new(unit.account_id.as_deref(), unit.default);
    let key = match unit.key {
        Ok(key) => key,
        Err(refused) => {
            report.error = Some(refused.to_string());
            return report;
        }
    };
    let now = token_cache::unix_now();
    match cache.fresh(&key, fingerprint, now) {
        Some(entry) => report.with_entry(entry, now),
        None => report,
    }
}

/// A token for one business unit: the cached one while fresh (if `reuse`),
/// else one from SFMC (waiting for the rate limit first if it would hold the
/// request back), which is cached.
async fn checked_unit(
    proxy: &Proxy,
    settings: &Settings,
    cache: &mut TokenFileCache,
    reuse: bool,
    tenant: &Tenant,
    fingerprint: &str,
    unit: Unit,
) -> UnitReport {
    let report = UnitReport::new(unit.account_id.as_deref(), unit.default);
    let key = match unit.key {
        Ok(key) => key,
        Err(refused) => return report.failed(refused.to_string()),
    };
    let now = token_cache::unix_now();
    if let Some(entry) = cache.fresh(&key, fingerprint, now).filter(|_| reuse) {
        let mut report = report.with_entry(entry, now);
        report.ok = Some(true);
        return report;
    }
    if let Some(wait) = proxy.tokens().rate_wait(&key.tenant) {
        eprintln!(
            "check: tenant {}: waiting {} for the token rate limit (token.rate_burst = {} at once, one more every token.rate_interval = {})",
            tenant.name,
            humantime::format_duration(std::time::Duration::from_millis(
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
            )),
            settings.token.rate_burst,
            humantime::format_duration(settings.token.rate_interval)
        );
        tokio::time::sleep(wait).await;
    }
    match proxy.tokens().get(&key).await {
        Ok(lease) => {
            cache.put(Entry::new(
                &key,
                fingerprint,
                &lease.token,
                SystemTime::now(),
            ));
            // After each: a check stopped half-way keeps what it had.
            cache.save(token_cache::unix_now());
            report.with_lease(&lease)
        }
        Err(failure) => report.failed(token_failure(failure, &tenant.name).to_string()),
    }
}

/// `acme BU 200: ok (new token; ...)`, `acme BU 300: FAILED: why`. The
/// instance's egress is named only where it is not the token endpoint's.
fn unit_line(tenant: &str, unit: &UnitReport, egress: &str) -> String {
    let which = match (&unit.account_id, unit.default) {
        (Some(mid), true) => format!("{tenant} BU {mid} (default)"),
        (Some(mid), false) => format!("{tenant} BU {mid}"),
        (None, _) => format!("{tenant} BU of the package (default)"),
    };
    let facts = || {
        let instance_egress = match unit.instance_egress.as_deref() {
            Some(route) if route != egress => format!(" (egress: {route})"),
            _ => String::new(),
        };
        format!(
            "expires in {} s; rest instance {}{instance_egress}; soap instance {}; granted scope {}",
            unit.expires_in.unwrap_or(0),
            unit.rest_instance.as_deref().unwrap_or("(none)"),
            unit.soap_instance.as_deref().unwrap_or("(none)"),
            unit.scope.as_deref().unwrap_or("(not reported)"),
        )
    };
    let source = if unit.cached {
        "cached token"
    } else {
        "new token"
    };
    match (unit.ok, &unit.error) {
        (Some(false), error) => {
            format!(
                "{which}: FAILED: {}",
                error.as_deref().unwrap_or("(no reason)")
            )
        }
        (Some(true), _) => format!("{which}: ok ({source}; {})", facts()),
        (None, Some(error)) => format!("{which}: would fail: {error}"),
        (None, None) if unit.cached => {
            format!("{which}: would reuse the cached token ({})", facts())
        }
        (None, None) => format!("{which}: would request a token"),
    }
}

fn grant_name(grant: &Grant) -> &'static str {
    match grant {
        Grant::ClientCredentials => "client_credentials",
        Grant::AuthorizationCode { .. } => "authorization_code",
    }
}

fn grant_words(grant: &Grant) -> &'static str {
    match grant {
        Grant::ClientCredentials => "client credentials",
        Grant::AuthorizationCode { .. } => {
            "authorization code: the login `sfmc-proxy login` stored"
        }
    }
}
