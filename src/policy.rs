//! A tenant's policy on what it lets through to SFMC, applied after routing
//! (the tenant is known) and before a token is fetched, so a refused request
//! costs SFMC nothing. In this order:
//! 1. a path under a `deny_paths` prefix is refused, whatever the method;
//! 2. else a path under an `allow_paths` prefix passes, whatever the method;
//! 3. else with `read_only`, reads pass — GET, HEAD, OPTIONS, and SOAP whose
//!    Body's one element is `RetrieveRequestMsg` or `DefinitionRequestMsg`
//!    (Describe) in the partner API namespace — and nothing else;
//! 4. else with `allow_paths` set, the request is refused;
//! 5. else it passes.
//!
//! Paths are matched as `config::policy` normalises them (the forwarded path
//! stays byte for byte), against the path as forwarded: a tenant's
//! `path_prefix` is stripped first; a SOAP call's is `/Service.asmx`. Where
//! the policy cannot tell, it refuses. `/_proxy/*` and the broker's
//! `/v2/token` never reach it (they are not routed to a tenant's API).

use http::request::Parts;
use http::{HeaderMap, Method, header};

use crate::config::{PathPrefix, Policy, Tenant, Unreadable, normalise_path};
use crate::error::ProxyError;
use crate::route::Target;
use crate::soap::{EnvelopeStart, Operation, PARTNER_API_NS};
use crate::telemetry::clip;

/// The SOAP operations a read-only tenant lets through, by the Body's
/// one element and by `SOAPAction`.
const SOAP_READS: [(&str, &str); 2] = [
    ("RetrieveRequestMsg", "Retrieve"),
    ("DefinitionRequestMsg", "Describe"),
];

/// Headers some servers take as the method instead of the request line's.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// At most this much of a path (or a namespace) is quoted back in a refusal;
/// it came from the client, who knows it.
const QUOTED: usize = 256;

/// What decides a request, by its path alone.
#[derive(Debug, PartialEq, Eq)]
enum ByPath<'p> {
    Denied(&'p PathPrefix),
    Allowed,
    /// `read_only`: only a read passes.
    ReadsOnly,
    /// `allow_paths` is set and covers no prefix of the path.
    NotAllowed,
    Open,
    Unreadable(Unreadable),
}

/// The policy on a REST request (or any that is not SOAP).
pub fn check_rest(parts: &Parts, target: &Target) -> Result<(), ProxyError> {
    check(
        &target.tenant,
        &parts.method,
        target.path_and_query.path(),
        &parts.headers,
    )
}

fn check(
    tenant: &Tenant,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let policy = &tenant.policy;
    if policy.is_open() {
        return Ok(());
    }
    match by_path(policy, path) {
        ByPath::ReadsOnly => {
            read_method(method, headers).map_err(|why| refused_read(tenant, method, path, &why))
        }
        rule => settle(tenant, rule, method, path),
    }
}

/// The policy on a SOAP call. Under `read_only`, the envelope is read whole
/// (within `limit`, `soap.header_limit`) to tell its operation; a
/// `SOAPAction` naming another operation refuses it before that.
pub async fn check_soap(
    parts: &Parts,
    target: &Target,
    start: &mut EnvelopeStart,
    limit: usize,
) -> Result<(), ProxyError> {
    let (tenant, path) = (&target.tenant, target.path_and_query.path());
    let (method, headers) = (&parts.method, &parts.headers);
    let refused = |why: String| refused_read(tenant, method, path, &why);
    let policy = &tenant.policy;
    if policy.is_open() {
        return Ok(());
    }
    match by_path(policy, path) {
        ByPath::ReadsOnly => {
            soap_action_read(headers).map_err(refused)?;
            no_override(headers).map_err(refused)?;
            let operation = start.operation(limit).await;
            soap_read(operation.as_ref()).map_err(refused)
        }
        rule => settle(tenant, rule, method, path),
    }
}

fn by_path<'p>(policy: &'p Policy, path: &str) -> ByPath<'p> {
    if policy.has_prefixes() {
        let normal = match normalise_path(path) {
            Ok(normal) => normal,
            Err(why) => return ByPath::Unreadable(why),
        };
        // A path that may be under a deny prefix is; one that may be under an
        // allow prefix is not.
        if let Some(prefix) = policy.deny_paths.iter().find(|p| p.may_cover(&normal)) {
            return ByPath::Denied(prefix);
        }
        if policy.allow_paths.iter().any(|p| p.surely_covers(&normal)) {
            return ByPath::Allowed;
        }
    }
    if policy.read_only {
        ByPath::ReadsOnly
    } else if policy.allow_paths.is_empty() {
        ByPath::Open
    } else {
        ByPath::NotAllowed
    }
}

/// A decision by path alone; `ReadsOnly` (decided by the caller, which
/// knows what a read is) is refused here should it ever come.
fn settle(
    tenant: &Tenant,
    rule: ByPath<'_>,
    method: &Method,
    path: &str,
) -> Result<(), ProxyError> {
    let name = &tenant.name;
    let what = format!("{method} {}", quoted(path));
    let (rule, message) = match rule {
        ByPath::Allowed | ByPath::Open => return Ok(()),
        ByPath::Denied(prefix) => (
            "deny_paths",
            format!(
                "tenant `{name}` refuses {what}: it is under `{}` in deny_paths; remove that entry from tenants.{name}.deny_paths to allow it",
                prefix.text
            ),
        ),
        ByPath::NotAllowed => (
            "allow_paths",
            format!(
                "tenant `{name}` lets through only paths under its allow_paths ({}): {what} refused; add a prefix of the path to tenants.{name}.allow_paths",
                listed(&tenant.policy.allow_paths)
            ),
        ),
        // Refused for the list that could not be applied (deny first).
        ByPath::Unreadable(why) => (
            if tenant.policy.deny_paths.is_empty() {
                "allow_paths"
            } else {
                "deny_paths"
            },
            format!(
                "tenant `{name}` has allow_paths or deny_paths, and the path of {what} cannot be read one way only ({why}): refused; send the path percent-encoded once, without control characters"
            ),
        ),
        ByPath::ReadsOnly => return Err(refused_read(tenant, method, path, "")),
    };
    Err(ProxyError::PolicyRefused {
        tenant: name.to_string(),
        rule,
        message,
    })
}

/// `why`: what besides the method made the request no read ("" if nothing).
fn refused_read(tenant: &Tenant, method: &Method, path: &str, why: &str) -> ProxyError {
    let name = &tenant.name;
    let path = quoted(path);
    let what = match why {
        "" => format!("{method} {path}"),
        why => format!("{method} {path} ({why})"),
    };
    ProxyError::PolicyRefused {
        tenant: name.to_string(),
        rule: "read_only",
        message: format!(
            "tenant `{name}` is read_only: {what} refused (only GET, HEAD, OPTIONS and SOAP Retrieve or Describe pass); set tenants.{name}.read_only = false, or add `{path}` (or a prefix of it) to tenants.{name}.allow_paths"
        ),
    }
}

/// A read by its method: GET, HEAD or OPTIONS, and no method-override
/// header naming another. `Err` says what besides the method refused it.
fn read_method(method: &Method, headers: &HeaderMap) -> Result<(), String> {
    // Exact: `get` is an extension method, not GET.
    if ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method) {
        return Err(String::new());
    }
    no_override(headers)
}

/// No method-override header names a method other than a read.
fn no_override(headers: &HeaderMap) -> Result<(), String> {
    let is_read = |m: &str| {
        ["GET", "HEAD", "OPTIONS"]
            .iter()
            .any(|r| r.eq_ignore_ascii_case(m))
    };
    for name in METHOD_OVERRIDES {
        for value in headers.get_all(name) {
            let value = String::from_utf8_lossy(value.as_bytes());
            if !is_read(value.trim()) {
                return Err(format!("{name}: {}", quoted(&value).escape_debug()));
            }
        }
    }
    Ok(())
}

/// The SOAP operation the headers name, if any, must be a read:
/// `SOAPAction` (SOAP 1.1) and Content-Type's `action` (SOAP 1.2).
fn soap_action_read(headers: &HeaderMap) -> Result<(), String> {
    let named = headers
        .get_all("soapaction")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let in_type = headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .filter_map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
            text.split(';').skip(1).find_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("action")
                    .then(|| value.to_owned())
            })
        });
    for action in named.chain(in_type) {
        let action = action.trim().trim_matches('"').trim();
        // `""`: the intent is the Body's (SOAP 1.1 §6.1.1).
        if action.is_empty() {
            continue;
        }
        // The WSDL's own names (`Retrieve`), or the same under the partner
        // namespace; `Create/Retrieve` names no read.
        let name = action
            .strip_prefix(PARTNER_API_NS)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(action);
        if !SOAP_READS
            .iter()
            .any(|(_, read)| read.eq_ignore_ascii_case(name))
        {
            return Err(format!("SOAPAction {}", quoted(action).escape_debug()));
        }
    }
    Ok(())
}

/// A read by the Body's one element; an envelope whose operation cannot
/// be told is refused, saying why.
fn soap_read(operation: Result<&Operation, &ProxyError>) -> Result<(), String> {
    match operation {
        Ok(op)
            if op.namespace.as_deref() == Some(PARTNER_API_NS)
                && SOAP_READS
                    .iter()
                    .any(|(element, _)| op.local_name == *element) =>
        {
            Ok(())
        }
        Ok(op) => Err(match op.namespace.as_deref() {
            Some(ns) => format!(
                "SOAP {} in namespace {}",
                quoted(&op.local_name),
                quoted(ns)
            ),
            None => format!("SOAP {} in no namespace", quoted(&op.local_name)),
        }),
        Err(why) => Err(format!("its SOAP operation cannot be told: {why}")),
    }
}

fn quoted(text: &str) -> &str {
    clip(text, QUOTED)
}

fn listed(prefixes: &[PathPrefix]) -> String {
    let names: Vec<String> = prefixes.iter().map(|p| format!("`{}`", p.text)).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests;
