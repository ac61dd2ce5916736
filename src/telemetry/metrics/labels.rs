//! The label sets, and the one place where a request's tenant, MID, method
//! and SFMC error code become bounded label values.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Settings;
use crate::route::Api;

/// A label value: a fixed word or a configured name. Compared by its text.
#[derive(Debug, Clone)]
pub enum Label {
    Fixed(&'static str),
    Named(Arc<str>),
}

impl Label {
    pub fn empty() -> Self {
        Self::Fixed("")
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Fixed(text) => text,
            Self::Named(text) => text,
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub tenant: Label,
    pub api: &'static str,
    pub method: &'static str,
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApiLabels {
    pub tenant: Label,
    pub api: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BusinessUnitLabels {
    pub tenant: Label,
    pub mid: Label,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TokenRequestLabels {
    pub tenant: Label,
    pub mid: Label,
    pub result: &'static str,
    pub error: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LookupLabels {
    pub tenant: Label,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KeyLabels {
    pub tenant: Label,
    pub mid: Label,
}

/// A tenant not (or no longer) configured, or a request never routed.
const UNKNOWN_TENANT: &str = "unknown";
/// A MID neither configured nor the tenant's default.
const OTHER_MID: &str = "other";
/// No MID: the business unit that owns the installed package.
const DEFAULT_MID: &str = "default";

/// The names the configuration allows as label values; replaced on reload.
/// Looked up for every request, under FxHash: the keys are configured
/// names, so no caller can choose colliding ones (a caller's MID is only
/// looked up, never inserted).
#[derive(Default)]
pub struct Names(RwLock<FxHashMap<Arc<str>, FxHashSet<Arc<str>>>>);

impl Names {
    pub fn new(settings: &Settings) -> Self {
        let names = Self::default();
        names.configure(settings);
        names
    }

    /// The tenants and MIDs of `settings` from now on.
    pub fn configure(&self, settings: &Settings) {
        let tenants = settings
            .tenants
            .iter()
            .map(|tenant| {
                let mut mids = FxHashSet::<Arc<str>>::default();
                mids.extend(tenant.account_id.iter().cloned());
                for id in tenant.account_ids.iter().flatten() {
                    mids.insert(Arc::from(id.as_str()));
                }
                (tenant.name.clone(), mids)
            })
            .collect();
        *crate::sync::write(&self.0) = tenants;
    }

    pub fn tenant(&self, tenant: Option<&Arc<str>>) -> Label {
        match tenant {
            Some(name) if crate::sync::read(&self.0).contains_key(name) => {
                Label::Named(name.clone())
            }
            _ => Label::Fixed(UNKNOWN_TENANT),
        }
    }

    /// `mid` of `tenant` (a label from [`Self::tenant`]) as a label.
    pub fn mid(&self, tenant: &Label, mid: Option<&str>) -> Label {
        let Some(mid) = mid else {
            return Label::Fixed(DEFAULT_MID);
        };
        let names = crate::sync::read(&self.0);
        match names.get(tenant.as_str()).and_then(|mids| mids.get(mid)) {
            Some(configured) => Label::Named(configured.clone()),
            None => Label::Fixed(OTHER_MID),
        }
    }
}

pub fn api(api: Option<Api>) -> &'static str {
    api.map_or("proxy", Api::as_str)
}

/// The standard methods by name, anything else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The OAuth 2 error codes SFMC answers with (RFC 6749 §5.2) and the
/// proxy's `http_NNN` for an answer without one; anything else `other`.
pub fn sfmc_error(code: &str) -> Label {
    const KNOWN: [&str; 8] = [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "temporarily_unavailable",
    ];
    if let Some(known) = KNOWN.iter().find(|k| **k == code) {
        return Label::Fixed(known);
    }
    let http_status = code
        .strip_prefix("http_")
        .is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()));
    match http_status {
        true => Label::Named(Arc::from(code)),
        false => Label::Fixed("other"),
    }
}
