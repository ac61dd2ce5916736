//! The file as written: serde structs mirroring `proxy.toml`, with unknown keys
//! rejected so a typo never silently falls back to a default.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub token: RawToken,
    pub upstream: RawUpstream,
    pub soap: RawSoap,
    pub broker: RawBroker,
    pub redis: Option<RawRedis>,
    pub tenants: BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen: Option<super::listen::RawListen>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub inbound_keys: Vec<String>,
    pub inbound_keys_file: Option<String>,
    pub allow_unauthenticated_remote: bool,
    pub allowed_hosts: Option<Vec<String>>,
    pub allowed_origins: Vec<String>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_concurrent_streams: Option<u32>,
    pub worker_threads: Option<usize>,
    pub log_paths: Option<bool>,
    pub ready_requires: Option<String>,
    pub shutdown_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawToken {
    pub refresh_before_expiry: Option<String>,
    pub replay_body_limit: Option<String>,
    pub store_file: Option<String>,
    pub rate_burst: Option<u32>,
    pub rate_interval: Option<String>,
    pub max_keys: Option<usize>,
    pub prefetch: Option<bool>,
    pub request_timeout: Option<String>,
    pub fetch_deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub ca_file: Option<String>,
    pub allowed_instance_hosts: Option<Vec<String>>,
    pub idle_timeout: Option<String>,
    pub proxy: Option<String>,
    pub proxy_password_file: Option<String>,
    pub no_proxy: Option<Vec<String>>,
    pub retry_throttled: Option<bool>,
    pub max_retry_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSoap {
    pub header_limit: Option<String>,
    pub preauth_limit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRedis {
    pub url: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub key_prefix: Option<String>,
    pub encryption_key: Option<String>,
    pub encryption_key_file: Option<String>,
    pub previous_encryption_key: Option<String>,
    pub previous_encryption_key_file: Option<String>,
    pub ca_file: Option<String>,
    pub lock_timeout: Option<String>,
    pub operation_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBroker {
    pub token_lifetime: Option<String>,
    /// Tenant name → the local secret SDK tools present for it.
    pub client_secrets: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTenant {
    pub auth_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub account_id: Option<MidValue>,
    pub account_ids: Option<Vec<MidValue>>,
    pub scope: Option<String>,
    pub path_prefix: Option<String>,
    pub grant: Option<String>,
    pub app_type: Option<String>,
    pub redirect_uri: Option<String>,
    pub pkce: Option<bool>,
    pub read_only: Option<bool>,
    pub allow_paths: Vec<String>,
    pub deny_paths: Vec<String>,
    pub default: bool,
    pub retry_throttled: Option<bool>,
    pub max_concurrent_requests: Option<usize>,
    pub queue_timeout: Option<String>,
}

/// Deserialisable MID: SFMC MIDs are numbers, but TOML users write both
/// `account_id = 12345` and `account_id = "12345"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum MidValue {
    Number(u64),
    Text(String),
}
