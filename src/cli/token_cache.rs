//! The access-token cache of `sfmc-proxy token` and `sfmc-proxy check`: the
//! tokens they had from SFMC, kept in `access-tokens.json` beside the
//! refresh-token store (`token.store_file`'s directory), so that
//! `$(sfmc-proxy token)` in a loop asks SFMC for one token, not one a call
//! — SFMC asks clients to reuse a token until it expires.
//!
//! Rules:
//! - An entry is for one (tenant, business unit, requested scope) **and** a
//!   fingerprint of what the token depends on: the token URL, the client id,
//!   a SHA-256 of the client secret (never the secret itself) and the grant.
//!   A changed config never reuses a token the old one got.
//! - It is reused until its expiry minus `token.refresh_before_expiry` (half
//!   its lifetime for a lifetime shorter than that, as the proxy does), by
//!   the wall clock: the expiry is stored in unix seconds. A wall clock that
//!   went back before the token was had makes the entry unusable.
//! - Written as the refresh-token store is (`token::store::write_private`:
//!   a 0600 temp file, fsync, rename, directory 0700); expired entries are
//!   dropped on each write. Commands take `access-tokens.lock` from reading
//!   the file to writing it, so two concurrent `token` calls make one token
//!   request, not two (the second waits and reuses the first's token).
//! - Authorization-code tenants' tokens are cached too (a second `token` does
//!   not rotate the refresh token). What the fingerprint cannot see is *who*
//!   logged in, so `sfmc-proxy login` drops the tenant and BU's entries
//!   ([`TokenFileCache::forget`]).
//! - Nothing here is fatal: a cache that cannot be locked, read or parsed is
//!   a warning on stderr and the command fetches a token as if there were no
//!   cache. Warnings never hold a token (no entry has `Debug`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Grant, Secret, Settings, Tenant};
use crate::token::store::{lock_beside, where_json_broke, write_private};
use crate::token::{Token, TokenKey};

/// The cache's file name, in the directory of `token.store_file`.
pub(super) const FILE_NAME: &str = "access-tokens.json";

const VERSION: u32 = 1;

/// Where the cache lives for these settings; `None` when there is no store
/// directory (no `token.store_file`, `XDG_STATE_HOME` or `HOME`).
pub(super) fn path_for(settings: &Settings) -> Option<PathBuf> {
    let store = settings.token.store_file.as_deref()?;
    Some(store.parent().unwrap_or(Path::new(".")).join(FILE_NAME))
}

/// What a token of `tenant` depends on, hashed: the token URL, client id,
/// client secret and grant. Lengths go in first, so no two configs share one
/// input; a prefix keeps the hash of no use anywhere else.
pub(super) fn fingerprint(tenant: &Tenant) -> String {
    let grant = match &tenant.grant {
        Grant::ClientCredentials => "client_credentials".to_owned(),
        Grant::AuthorizationCode { redirect_uri, .. } => {
            format!("authorization_code {redirect_uri}")
        }
    };
    let secret = tenant.client_secret.as_ref().map_or("", Secret::expose);
    let mut hash = Sha256::new();
    hash.update(b"sfmc-proxy access-token cache v1\0");
    for part in [tenant.token_url.as_str(), &tenant.client_id, secret, &grant] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    data_encoding::HEXLOWER.encode(&hash.finalize())
}

/// Seconds since the unix epoch now (0 for a clock before 1970).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The file's content.
#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: Vec<Entry>,
}

/// One cached token. No `Debug`: it holds the token.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub tenant: String,
    /// The business unit asked for; `None`: the package's own.
    pub account_id: Option<String>,
    /// The scope asked for; `None`: every scope the package has.
    pub scope: Option<String>,
    /// [`fingerprint`] of the tenant's config when the token was had.
    pub fingerprint: String,
    pub access_token: String,
    /// The scope SFMC granted, as it reported it.
    pub granted_scope: Option<String>,
    pub rest_instance: String,
    pub soap_instance: Option<String>,
    /// Unix seconds: when the token was asked for, and when it expires.
    pub obtained_at: u64,
    pub expires_at: u64,
}

impl Entry {
    /// The entry for `token`, had for `key` with `fingerprint`; its times
    /// move the token's monotonic ones onto the wall clock `now`.
    pub(super) fn new(key: &TokenKey, fingerprint: &str, token: &Token, now: SystemTime) -> Self {
        let instant = tokio::time::Instant::now();
        let age = instant.saturating_duration_since(token.sent_at);
        let left = token.expires_at.saturating_duration_since(instant);
        let unix = |at: Option<SystemTime>| {
            at.and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_secs())
        };
        Self {
            tenant: key.tenant.to_string(),
            account_id: key.account_id.as_deref().map(str::to_owned),
            scope: key.scope.as_deref().map(str::to_owned),
            fingerprint: fingerprint.to_owned(),
            access_token: token.access_token().to_owned(),
            granted_scope: token.scope.clone(),
            rest_instance: token.rest_instance.to_string(),
            soap_instance: token.soap_instance.as_ref().map(ToString::to_string),
            obtained_at: unix(now.checked_sub(age)),
            expires_at: unix(now.checked_add(left)),
        }
    }

    fn is_for(&self, key: &TokenKey) -> bool {
        *self.tenant == *key.tenant
            && self.account_id.as_deref() == key.account_id.as_deref()
            && self.scope.as_deref() == key.scope.as_deref()
    }

    /// Until when (unix seconds) the token is handed out again: its expiry
    /// less the refresh margin, as `Token::new` reckons it.
    pub(super) fn reuse_until(&self, refresh_before: Duration) -> u64 {
        let lifetime = self.expires_at.saturating_sub(self.obtained_at);
        let margin = refresh_before.as_secs();
        let margin = if margin < lifetime {
            margin
        } else {
            lifetime / 2
        };
        self.expires_at - margin
    }

    /// Seconds until the token expires, at `now`.
    pub(super) fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// The cache as one command sees it: read once (under the lock when it may
/// write), written back with [`TokenFileCache::save`].
pub(super) struct TokenFileCache {
    /// `None`: no cache (no store directory).
    path: Option<PathBuf>,
    file: CacheFile,
    refresh_before: Duration,
    /// Held from the read to the write (until the command ends); `None`
    /// when read-only or when the lock could not be had (then nothing is
    /// written either).
    _lock: Option<File>,
    writable: bool,
    changed: bool,
}

/// How long `open` waits for the lock before saying it waits.
const LOCK_NOTICE_AFTER: Duration = Duration::from_secs(1);

impl TokenFileCache {
    /// The cache for `settings`, locked for writing: waits while another
    /// command holds it. Problems are warnings on stderr; then the cache is
    /// empty (and, when it could not be locked, never written).
    pub(super) async fn open(settings: &Settings) -> Self {
        let refresh_before = settings.token.refresh_before_expiry;
        let Some(path) = path_for(settings) else {
            eprintln!(
                "warning: no token cache (no token.store_file, XDG_STATE_HOME or HOME): every call asks SFMC for a new token"
            );
            return Self::empty(None, refresh_before);
        };
        let mut locking = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || lock_beside(&path))
        };
        // Another command may hold it for long (a `check` of many business
        // units): say what is being waited for rather than hang silently.
        let locked = tokio::select! {
            locked = &mut locking => locked,
            () = tokio::time::sleep(LOCK_NOTICE_AFTER) => {
                eprintln!(
                    "token cache {}: waiting for another sfmc-proxy command (token or check) to finish with it",
                    path.display()
                );
                locking.await
            }
        };
        let lock = match locked
            .map_err(std::io::Error::other)
            .and_then(|locked| locked)
        {
            Ok(file) => file,
            Err(error) => {
                warn(&path, &format!("cannot lock it ({error}); not using it"));
                return Self::empty(None, refresh_before);
            }
        };
        let mut cache = Self::read(path, refresh_before);
        cache._lock = Some(lock);
        cache.writable = true;
        cache
    }

    /// A token `token` may print at once: a fresh entry for `key`, read
    /// without waiting for the lock (another command may hold it for long:
    /// a `check` waiting for the rate limit). Problems stay unsaid here;
    /// [`Self::open`], which follows when there is none, says them.
    pub(super) fn reusable(
        settings: &Settings,
        key: &TokenKey,
        fingerprint: &str,
        now: u64,
    ) -> Option<Entry> {
        let path = path_for(settings)?;
        let bytes = std::fs::read(path).ok()?;
        let file: CacheFile = serde_json::from_slice(&bytes).ok()?;
        let cache = Self {
            file,
            ..Self::empty(None, settings.token.refresh_before_expiry)
        };
        (cache.file.version == VERSION)
            .then(|| cache.fresh(key, fingerprint, now).cloned())
            .flatten()
    }

    /// The cache for `settings`, read without the lock and never written
    /// (`check --offline`).
    pub(super) fn peek(settings: &Settings) -> Self {
        let refresh_before = settings.token.refresh_before_expiry;
        match path_for(settings) {
            Some(path) => Self::read(path, refresh_before),
            None => Self::empty(None, refresh_before),
        }
    }

    fn empty(path: Option<PathBuf>, refresh_before: Duration) -> Self {
        Self {
            path,
            file: CacheFile::default(),
            refresh_before,
            _lock: None,
            writable: false,
            changed: false,
        }
    }

    /// Reads the file at `path`; a missing one is an empty cache, an
    /// unreadable or corrupt one a warning and an empty cache (which the next
    /// write replaces).
    fn read(path: PathBuf, refresh_before: Duration) -> Self {
        let file = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(file) if file.version == VERSION => file,
                Ok(file) => {
                    warn(
                        &path,
                        &format!(
                            "version {} is not this sfmc-proxy's ({VERSION}); ignoring it",
                            file.version
                        ),
                    );
                    CacheFile::default()
                }
                Err(error) => {
                    // Where, never what: serde_json's own message would
                    // quote the value, a token perhaps.
                    warn(
                        &path,
                        &format!(
                            "not a valid cache ({}); ignoring it, it is rewritten",
                            where_json_broke(&error)
                        ),
                    );
                    CacheFile::default()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => CacheFile::default(),
            Err(error) => {
                warn(&path, &format!("cannot read it ({error}); ignoring it"));
                CacheFile::default()
            }
        };
        let mut cache = Self::empty(Some(path), refresh_before);
        cache.file = file;
        cache
    }

    /// The cached token for `key` if it was had with this `fingerprint` and
    /// is not due for a refresh at `now` (unix seconds).
    pub(super) fn fresh(&self, key: &TokenKey, fingerprint: &str, now: u64) -> Option<&Entry> {
        self.file.entries.iter().find(|entry| {
            entry.is_for(key)
                && entry.fingerprint == fingerprint
                && entry.obtained_at <= now
                && now < entry.reuse_until(self.refresh_before)
        })
    }

    /// Keeps `entry`, replacing whatever was cached for its key.
    pub(super) fn put(&mut self, entry: Entry) {
        self.file.entries.retain(|old| {
            !(old.tenant == entry.tenant
                && old.account_id == entry.account_id
                && old.scope == entry.scope)
        });
        self.file.entries.push(entry);
        self.changed = true;
    }

    /// Drops every token cached for `tenant` and business unit `account_id`
    /// (whatever the scope): after a login, the tokens of whoever was logged
    /// in before must not be printed for the new person.
    pub(super) fn forget(&mut self, tenant: &str, account_id: Option<&str>) {
        let before = self.file.entries.len();
        self.file
            .entries
            .retain(|old| !(old.tenant == tenant && old.account_id.as_deref() == account_id));
        self.changed |= self.file.entries.len() != before;
    }

    /// Writes the cache back if anything was put, dropping expired entries;
    /// a failure is a warning.
    pub(super) fn save(&mut self, now: u64) {
        if !self.changed || !self.writable {
            return;
        }
        let Some(path) = &self.path else { return };
        self.file.version = VERSION;
        self.file.entries.retain(|entry| now < entry.expires_at);
        let written = serde_json::to_vec_pretty(&self.file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_private(path, &bytes));
        match written {
            Ok(()) => self.changed = false,
            Err(error) => warn(path, &format!("cannot write it ({error})")),
        }
    }
}

fn warn(path: &Path, what: &str) {
    eprintln!("warning: token cache {}: {what}", path.display());
}

#[cfg(test)]
mod tests;
