//! Configuration: `proxy.toml` parsed into raw serde structs (unknown keys are
//! errors), then validated into typed [`Settings`] whose errors name the key.
//!
//! `${VAR}` in any string value is replaced from the environment (a missing
//! variable is an error naming it). Secrets are held in [`Secret`], whose `Debug`
//! never shows the value. This module is a leaf: it knows nothing of HTTP serving.
//!
//! One file a section: `server`, `token`, `upstream`, `soap`, `tenant` (with
//! `grant`: client credentials or a person's login, and `policy`: what it
//! lets through), `broker`, `redis`; `defaults`
//! names every default; `raw` is the file as written, `values` the shared
//! value parsers, `parse_error` the wording of TOML syntax errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod broker;
mod defaults;
mod egress;
mod grant;
mod listen;
mod parse_error;
mod policy;
mod raw;
mod redis;
mod server;
mod soap;
mod tenant;
mod token;
mod upstream;
mod values;

pub use broker::BrokerSettings;
pub use defaults::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_TOKEN_FETCH_DEADLINE,
    DEFAULT_TOKEN_REQUEST_TIMEOUT,
};
pub use egress::{Egress, EgressProxy, Route, Unusable};
pub use grant::{AppType, CALLBACK_PATH, Grant, proxy_callback_host};
pub use listen::ListenOverride;
pub use policy::{NormalPath, PathPrefix, Policy, Unreadable, normalise_path};
use raw::RawConfig;
pub use redis::{MIN_ENCRYPTION_KEY_CHARS, RedisSettings};
pub use server::{
    MAX_DEFAULT_WORKER_THREADS, MAX_WORKER_THREADS, ReadyRequires, ServerSettings,
    default_worker_threads, list_addresses,
};
pub use soap::SoapSettings;
pub use tenant::{ConcurrencyLimit, Tenant};
pub use token::TokenSettings;
pub use upstream::UpstreamSettings;
use values::Expander;
pub use values::{MID_RULE, is_loopback_host, is_mid, normalise_scope, parse_size};

/// A secret string (client secret, inbound key, token). Its `Debug` is
/// redacted and it has no `Display`, so it can sit in structs that get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value itself: call only where it is sent to SFMC or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source} (copy the annotated proxy.toml from the project, or pass --config PATH)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A `${NAME}` whose variable is not set: its own kind, so that a
    /// command using one tenant can leave out another tenant that lacks one.
    #[error("config key `{key}`: environment variable {name} is not set")]
    MissingVariable { key: String, name: String },
}

/// What the command line changes in how the config file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--listen` / `SFMC_PROXY_LISTEN`: replaces `server.listen`.
    pub listen: Option<ListenOverride>,
    /// `token --tenant X`, `login --tenant X`: the one tenant the command
    /// uses. Another tenant whose `${VAR}` is unset is left out (with a
    /// note) instead of failing the load; any other error still fails it.
    pub only_tenant: Option<String>,
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Everything the proxy needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub token: TokenSettings,
    pub upstream: UpstreamSettings,
    pub soap: SoapSettings,
    pub broker: BrokerSettings,
    /// `[redis]`: the store replicas share; `None`: this process alone.
    pub redis: Option<RedisSettings>,
    /// In name order; at least one.
    pub tenants: Vec<Arc<Tenant>>,
    /// Index into `tenants` of the tenant that serves requests with no selector.
    pub default_tenant: Option<usize>,
    /// What was left out under [`LoadOptions::only_tenant`] (other tenants,
    /// their broker secrets), each with why.
    pub left_out: Vec<String>,
}

/// Why [`Settings::tenant_or_default`] found no tenant.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTenant<'n> {
    /// No tenant has this name.
    Unknown(&'n str),
    /// No name was given, and several tenants are configured, none the default.
    NoDefault,
}

impl Settings {
    /// Reads and validates a config file; relative file paths inside it
    /// (`client_secret_file`, `ca_file`) are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Self::load`] as the command line asks (see [`LoadOptions`]).
    pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Absolute, so that a hint to run a command works from any directory.
        let file: Arc<Path> = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .into();
        let env = |name: &str| std::env::var(name).ok();
        Self::from_toml_with(&text, env, base, options, Some(file))
    }

    /// Parses and validates TOML text. `env` resolves `${VAR}`.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, env, base_dir, &LoadOptions::default(), None)
    }

    /// `config_file`: the file `text` came from, for the commands hints name.
    fn from_toml_with(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        base_dir: &Path,
        options: &LoadOptions,
        config_file: Option<Arc<Path>>,
    ) -> Result<Self, ConfigError> {
        // Worded by `parse_error`: toml's own report would quote a secret's line.
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(parse_error::describe(text, &e)))?;
        let expander = Expander::new(&env, base_dir);
        let server = server::validate(raw.server, options.listen.as_ref(), &expander)?;
        let token = token::validate(raw.token, &expander)?;
        let upstream = upstream::validate(raw.upstream, &expander)?;
        let soap = soap::validate(raw.soap)?;
        let redis = redis::validate(raw.redis, &expander)?;
        let only = options.only_tenant.as_deref();
        let tenant::ValidTenants {
            tenants,
            default_tenant,
            mut left_out,
        } = tenant::validate_tenants(raw.tenants, only, config_file, &upstream, &expander)?;
        let broker = broker::validate(
            raw.broker,
            &server,
            &tenants,
            only,
            &mut left_out,
            &expander,
        )?;
        grant::check_callback_hosts(&tenants, &server)?;
        let needs_store = tenants.iter().any(|t| t.grant != Grant::ClientCredentials);
        // With [redis] a login's refresh token is kept there instead.
        if needs_store && token.store_file.is_none() && redis.is_none() {
            return Err(invalid(
                "token.store_file",
                "an authorization_code tenant needs a file for its refresh tokens, and neither HOME nor XDG_STATE_HOME is set; set token.store_file",
            ));
        }
        Ok(Self {
            server,
            token,
            upstream,
            soap,
            broker,
            redis,
            tenants,
            default_tenant,
            left_out,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| &*t.name == name)
    }

    /// The tenant `name`, or the default tenant when no name is given: the
    /// one choice the CLI, the login page and request routing all make. Each
    /// caller words the error for its own user.
    pub fn tenant_or_default<'n>(
        &self,
        name: Option<&'n str>,
    ) -> Result<&Arc<Tenant>, NoTenant<'n>> {
        match name {
            Some(name) => self.tenant(name).ok_or(NoTenant::Unknown(name)),
            None => self
                .default_tenant
                .and_then(|index| self.tenants.get(index))
                .ok_or(NoTenant::NoDefault),
        }
    }

    pub fn tenant_names(&self) -> String {
        let names: Vec<&str> = self.tenants.iter().map(|t| &*t.name).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
