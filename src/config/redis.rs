//! `[redis]`: the Redis replicas share tokens through — its address and
//! credentials, the prefix of every key, the key that seals what is stored
//! (and the one before it, while a rotation runs), the CA for `rediss://`,
//! and the timeouts of its lock and of each operation. No section: no Redis,
//! and nothing else changes.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::defaults::{
    DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_LOCK_TIMEOUT, DEFAULT_REDIS_OPERATION_TIMEOUT,
};
use super::raw::RawRedis;
use super::values::{Expander, duration_or};
use super::{ConfigError, Secret, invalid};

/// The shortest `encryption_key` taken: a passphrase this long, even of
/// words, is beyond guessing offline, and the stored entries depend on it.
pub const MIN_ENCRYPTION_KEY_CHARS: usize = 32;

/// `[redis]`, validated. `Debug` shows no password or key.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// The URL as written (credentials included): only for the client.
    pub url: Secret,
    /// The URL without its credentials, for logs, `check` and errors.
    pub shown_url: String,
    /// `rediss://`: TLS to Redis.
    pub tls: bool,
    /// The ACL user and password when given apart from the URL
    /// (`password`, `password_file`); the URL's own otherwise.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub key_prefix: String,
    pub encryption_key: Secret,
    /// Entries sealed with this key are still read (a rotation in progress);
    /// nothing is written with it.
    pub previous_encryption_key: Option<Secret>,
    /// Extra trust anchors (PEM) for `rediss://`.
    pub ca_file: Option<PathBuf>,
    /// A fetch's lock lasts this long unless renewed (a replica that dies
    /// holding it frees it after this).
    pub lock_timeout: Duration,
    /// Every Redis operation gives up after this long.
    pub operation_timeout: Duration,
}

#[cfg(test)]
impl RedisSettings {
    /// A `[redis]` on a local address nothing listens on, sealed with `key`
    /// (and `previous`): for tests of what the key derives.
    pub fn for_tests(key: &str, previous: Option<&str>) -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:9/0"),
            shown_url: "redis://127.0.0.1:9/0".into(),
            tls: false,
            username: None,
            password: None,
            key_prefix: "sfmc-proxy:".into(),
            encryption_key: Secret::new(key),
            previous_encryption_key: previous.map(Secret::new),
            ca_file: None,
            lock_timeout: std::time::Duration::from_secs(10),
            operation_timeout: std::time::Duration::from_millis(250),
        }
    }
}

pub(super) fn validate(
    raw: Option<RawRedis>,
    ex: &Expander<'_>,
) -> Result<Option<RedisSettings>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let written = raw
        .url
        .ok_or_else(|| invalid("redis.url", "missing: the [redis] section needs url = \"redis://host:6379/0\" (or rediss:// for TLS)"))?;
    let text = ex.expand("redis.url", &written)?;
    let url = Url::parse(text.trim()).map_err(|e| {
        invalid(
            "redis.url",
            format!("not a URL ({e}): write redis://[user:password@]host:port/db, rediss://… for TLS, or unix:///path/to/redis.sock"),
        )
    })?;
    let tls = match url.scheme() {
        "redis" | "unix" | "redis+unix" => false,
        "rediss" => true,
        other => {
            return Err(invalid(
                "redis.url",
                format!("`{other}://` is not Redis: use redis://, rediss:// (TLS) or unix://"),
            ));
        }
    };
    // redis-rs reads `rediss://…#insecure` as "do not check the certificate".
    if url.fragment().is_some() {
        return Err(invalid(
            "redis.url",
            "a #fragment is not taken (#insecure would turn off the certificate check): for a private CA set redis.ca_file",
        ));
    }
    if !matches!(url.scheme(), "unix" | "redis+unix") && url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("redis.url", "names no host"));
    }
    // redis-rs also reads `?pass=` (and `?user=`) from a unix socket URL.
    let in_url = url.password().is_some()
        || url
            .query_pairs()
            .any(|(name, _)| matches!(&*name, "pass" | "password"));
    let password = match (raw.password, raw.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "redis.password",
                "set either password or password_file, not both",
            ));
        }
        (Some(password), None) => Some(ex.expand("redis.password", &password)?),
        (None, Some(file)) => Some(ex.read_secret_file("redis.password_file", &file)?),
        (None, None) => None,
    };
    if in_url && password.is_some() {
        return Err(invalid(
            "redis.password",
            "the url has a password already: keep it in one place",
        ));
    }
    let username = password
        .as_ref()
        .and(Some(url.username()))
        .filter(|user| !user.is_empty())
        .map(str::to_owned);
    let encryption_key = key_value(
        "redis.encryption_key",
        raw.encryption_key,
        raw.encryption_key_file,
        ex,
    )?
    .ok_or_else(|| {
        invalid(
            "redis.encryption_key",
            format!("missing: what replicas store in Redis is sealed with it; set encryption_key = \"${{SFMC_PROXY_REDIS_KEY}}\" (at least {MIN_ENCRYPTION_KEY_CHARS} characters, the same on every replica) or encryption_key_file"),
        )
    })?;
    let previous_encryption_key = key_value(
        "redis.previous_encryption_key",
        raw.previous_encryption_key,
        raw.previous_encryption_key_file,
        ex,
    )?;
    if previous_encryption_key.as_ref() == Some(&encryption_key) {
        return Err(invalid(
            "redis.previous_encryption_key",
            "is the same as encryption_key: set it to the key being replaced, or remove it",
        ));
    }
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
    if key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "redis.key_prefix",
            "must not hold spaces or control characters",
        ));
    }
    let ca_file = match raw.ca_file {
        Some(path) => Some(ex.path("redis.ca_file", &path)?),
        None => None,
    };
    if ca_file.is_some() && !tls {
        return Err(invalid(
            "redis.ca_file",
            "applies only to rediss:// (TLS); the url is not",
        ));
    }
    let lock_timeout = duration_or(
        "redis.lock_timeout",
        raw.lock_timeout.as_deref(),
        DEFAULT_REDIS_LOCK_TIMEOUT,
    )?;
    let operation_timeout = duration_or(
        "redis.operation_timeout",
        raw.operation_timeout.as_deref(),
        DEFAULT_REDIS_OPERATION_TIMEOUT,
    )?;
    if lock_timeout < Duration::from_secs(1) {
        return Err(invalid(
            "redis.lock_timeout",
            "must be at least 1s: a token request must fit inside it",
        ));
    }
    if operation_timeout.is_zero() || operation_timeout >= lock_timeout {
        return Err(invalid(
            "redis.operation_timeout",
            "must be more than 0 and less than redis.lock_timeout",
        ));
    }
    Ok(Some(RedisSettings {
        shown_url: without_credentials(&url),
        url: Secret::new(url.to_string()),
        tls,
        username,
        password: password.map(Secret::new),
        key_prefix,
        encryption_key,
        previous_encryption_key,
        ca_file,
        lock_timeout,
        operation_timeout,
    }))
}

/// A key given inline (`${VAR}` expanded) or in a file, at least
/// [`MIN_ENCRYPTION_KEY_CHARS`] long; `None` when neither is set.
fn key_value(
    key: &str,
    inline: Option<String>,
    file: Option<String>,
    ex: &Expander<'_>,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key,
                format!("set either {key} or {key}_file, not both"),
            ));
        }
        (Some(value), None) => ex.expand(key, &value)?,
        (None, Some(file)) => ex.read_secret_file(&format!("{key}_file"), &file)?,
        (None, None) => return Ok(None),
    };
    let chars = value.chars().count();
    if chars < MIN_ENCRYPTION_KEY_CHARS {
        return Err(invalid(
            key,
            format!(
                "is {chars} characters; at least {MIN_ENCRYPTION_KEY_CHARS} are needed (e.g. `openssl rand -base64 32`)"
            ),
        ));
    }
    Ok(Some(Secret::new(value)))
}

/// `url` with no user, password, query (`?pass=`) or fragment: what a log
/// may show.
fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have credentials (unix paths).
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn validate_text(section: &str) -> Result<Option<RedisSettings>, ConfigError> {
        let raw: RawRedis = toml::from_str(section).expect("toml");
        let env = |name: &str| (name == "REDIS_KEY").then(|| KEY.to_owned());
        let env: &dyn Fn(&str) -> Option<String> = &env;
        validate(Some(raw), &Expander::new(env, Path::new(".")))
    }

    fn error_key(section: &str) -> String {
        match validate_text(section) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_section_gets_the_defaults() {
        let text = "url = \"redis://127.0.0.1:6379/0\"\nencryption_key = \"${REDIS_KEY}\"";
        let redis = validate_text(text).expect("valid").expect("some");
        assert_eq!(redis.key_prefix, "sfmc-proxy:");
        assert_eq!(redis.lock_timeout, Duration::from_secs(10));
        assert_eq!(redis.operation_timeout, Duration::from_millis(250));
        assert!(!redis.tls);
        assert_eq!(redis.encryption_key.expose(), KEY);
        assert_eq!(redis.shown_url, "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn credentials_never_show_and_live_in_one_place() {
        let text = format!(
            "url = \"rediss://proxy:p%40ss@redis.internal:6380/2\"\nencryption_key = \"{KEY}\""
        );
        let redis = validate_text(&text).expect("valid").expect("some");
        assert!(redis.tls);
        assert_eq!(redis.shown_url, "rediss://redis.internal:6380/2");
        let shown = format!("{redis:?}");
        assert!(!shown.contains("p%40ss") && !shown.contains(KEY), "{shown}");

        let both =
            format!("url = \"redis://:pw@h/0\"\npassword = \"other\"\nencryption_key = \"{KEY}\"");
        assert_eq!(error_key(&both), "redis.password");
        let apart =
            format!("url = \"redis://proxy@h/0\"\npassword = \"pw\"\nencryption_key = \"{KEY}\"");
        let redis = validate_text(&apart).expect("valid").expect("some");
        assert_eq!(redis.username.as_deref(), Some("proxy"));
        assert_eq!(redis.password.as_ref().map(Secret::expose), Some("pw"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = format!("encryption_key = \"{KEY}\"");
        for (section, expected) in [
            (key.clone(), "redis.url"),
            (format!("url = \"http://h/\"\n{key}"), "redis.url"),
            (format!("url = \"not a url\"\n{key}"), "redis.url"),
            (
                format!("url = \"rediss://h:6380/0#insecure\"\n{key}"),
                "redis.url",
            ),
            ("url = \"redis://h/0\"".to_owned(), "redis.encryption_key"),
            (
                "url = \"redis://h/0\"\nencryption_key = \"short\"".to_owned(),
                "redis.encryption_key",
            ),
            (
                format!("url = \"redis://h/0\"\n{key}\nprevious_encryption_key = \"{KEY}\""),
                "redis.previous_encryption_key",
            ),
            (
                format!("url = \"redis://h/0\"\n{key}\nca_file = \"ca.pem\""),
                "redis.ca_file",
            ),
            (
                format!("url = \"redis://h/0\"\n{key}\nlock_timeout = \"100ms\""),
                "redis.lock_timeout",
            ),
            (
                format!("url = \"redis://h/0\"\n{key}\noperation_timeout = \"20s\""),
                "redis.operation_timeout",
            ),
            (
                format!("url = \"redis://h/0\"\n{key}\nkey_prefix = \"a b\""),
                "redis.key_prefix",
            ),
        ] {
            assert_eq!(error_key(&section), expected, "{section}");
        }
        // The refused key is not quoted in the message.
        let short = "url = \"redis://h/0\"\nencryption_key = \"short-secret\"";
        let message = validate_text(short).expect_err("short").to_string();
        assert!(!message.contains("short-secret"), "{message}");
    }

    #[test]
    fn a_password_in_a_unix_socket_url_s_query_is_not_shown() {
        let text = format!(
            "url = \"unix:///run/redis.sock?user=proxy&pass=s3cr3t\"\nencryption_key = \"{KEY}\""
        );
        let redis = validate_text(&text).expect("valid").expect("some");
        assert_eq!(redis.shown_url, "unix:///run/redis.sock");
        let twice = format!(
            "url = \"unix:///run/redis.sock?pass=a\"\npassword = \"b\"\nencryption_key = \"{KEY}\""
        );
        assert_eq!(error_key(&twice), "redis.password");
    }

    #[test]
    fn the_previous_key_may_come_from_a_file() {
        let path = std::env::temp_dir().join(format!("sfmc-proxy-old-key-{}", std::process::id()));
        std::fs::write(&path, "an-old-key-of-32-characters-or-more\n").expect("write");
        let text = format!(
            "url = \"redis://h/0\"\nencryption_key = \"{KEY}\"\nprevious_encryption_key_file = \"{}\"",
            path.display()
        );
        let redis = validate_text(&text).expect("valid").expect("some");
        let previous = redis.previous_encryption_key.as_ref().map(Secret::expose);
        assert_eq!(previous, Some("an-old-key-of-32-characters-or-more"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_unix_socket_is_a_redis_url() {
        let text = format!("url = \"unix:///run/redis.sock\"\nencryption_key = \"{KEY}\"");
        let redis = validate_text(&text).expect("valid").expect("some");
        assert_eq!(redis.shown_url, "unix:///run/redis.sock");
    }

    #[test]
    fn no_section_is_no_redis() {
        let env = |_: &str| None;
        let ex = Expander::new(&env, Path::new("."));
        assert_eq!(validate(None, &ex).expect("ok"), None);
    }
}
