//! Refresh-token persistence for authorization-code tenants: one JSON file,
//! one entry per (tenant, business unit), mode 0600.
//!
//! Two rules make it safe:
//! - **Atomic replacement.** A write goes to a temp file in the same directory,
//!   is fsynced, renamed over the store and the directory fsynced. A crash at
//!   any instant leaves the old file or the new one, never a torn one, never
//!   neither. The temp file is always a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//!   mode 0600, set again with `fchmod` whatever the umask): a file or symlink
//!   planted at its path is never written through, so the store ends up 0600
//!   whatever was there before.
//! - **One refresher at a time.** SFMC refresh tokens are single-use, so a
//!   refresh holds an exclusive lock on `<store>.lock` from reading the refresh
//!   token to persisting its successor — across processes too (a `token`
//!   command beside a running proxy).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("token store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token store {path} is not valid JSON ({message}); move it away and log in again")]
    Corrupt { path: PathBuf, message: String },
}

/// The file's content.
#[derive(Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    /// `"tenant"` or `"tenant/MID"` → entry.
    entries: BTreeMap<String, Entry>,
}

/// No `Debug`: it holds a refresh token (the file's content is never printed).
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    refresh_token: String,
}

/// One link of a login's refresh-token chain as a shared store holds it:
/// the refresh token, and the version it was written as (each successor is
/// the next version, so a token is redeemed once fleet-wide).
pub struct Link {
    pub refresh_token: Secret,
    pub version: u64,
}

/// What a [`ChainStore`] answers.
pub type ChainFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ChainError>> + Send + 'a>>;

/// Why a shared chain store could not answer, or refused a write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The store cannot be reached (the message says which and why).
    #[error("{0}")]
    Unavailable(String),
    /// Another writer stored a newer link first.
    #[error("another replica stored a newer refresh token first")]
    Conflict,
}

/// Where a login's refresh tokens live when not in this process's file: a
/// store the fleet shares (Redis). The caller holds the fleet's lock for
/// the key while it refreshes; `save` compares versions all the same, so a
/// lease that ran out cannot make two successors.
pub trait ChainStore: Send + Sync + 'static {
    /// The current link of (tenant, MID), if a login is stored.
    fn load<'a>(
        &'a self,
        tenant: &'a str,
        account_id: Option<&'a str>,
    ) -> ChainFuture<'a, Option<Link>>;

    /// Stores `refresh_token` as the successor of version `after`; with
    /// `None` (a new login) it replaces whatever is there.
    fn save<'a>(
        &'a self,
        tenant: &'a str,
        account_id: Option<&'a str>,
        refresh_token: &'a str,
        after: Option<u64>,
    ) -> ChainFuture<'a, ()>;
}

/// The store on disk; cheap to clone, holds only the path.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

/// An exclusive hold on the store (released on drop): read, refresh, write.
pub struct Locked {
    store: TokenStore,
    _lock: File,
}

impl TokenStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the lock (blocking: call from `spawn_blocking`).
    pub fn lock(&self) -> Result<Locked, StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let file = lock_beside(&self.path).map_err(io)?;
        Ok(Locked {
            store: self.clone(),
            _lock: file,
        })
    }
}

/// Where and how a private JSON file failed to parse, never what it held:
/// serde_json's own message quotes the offending value (a token, say).
pub(crate) fn where_json_broke(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not in the expected shape",
        serde_json::error::Category::Eof => "cut short",
        serde_json::error::Category::Io => "unreadable",
    };
    format!("{what} at line {}, column {}", error.line(), error.column())
}

/// Waits for an exclusive lock on `<path>.lock` (`path` with its extension
/// replaced), creating the directory (0700) and the lock file (0600) if
/// needed; held until the file is dropped. Blocking. The store's lock, and
/// the same for other private files kept beside it (the CLI's access-token
/// cache).
pub(crate) fn lock_beside(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let lock_path = path.with_extension("lock");
    let mut options = private_options();
    // A symlink planted at the lock's path is not followed (nothing
    // secret is written there, but nothing is created elsewhere either).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let file = options
        .read(true)
        .write(true)
        .truncate(false)
        .open(&lock_path)?;
    file.lock()?;
    Ok(file)
}

/// Replaces `path` with `bytes` as the store is written: atomically, 0600,
/// never through a planted file or symlink (see [`write_atomically`]); the
/// directory is created 0700 first if missing. For private files kept beside
/// the store.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    write_atomically(path, bytes, &mut |_| Ok(()))
}

impl Locked {
    pub fn refresh_token(
        &self,
        tenant: &str,
        account_id: Option<&str>,
    ) -> Result<Option<Secret>, StoreError> {
        Ok(self
            .read()?
            .entries
            .get(&entry_key(tenant, account_id))
            .map(|e| Secret::new(e.refresh_token.clone())))
    }

    /// Persists `refresh_token` as the one for (tenant, MID); durable on return.
    pub fn save(
        &self,
        tenant: &str,
        account_id: Option<&str>,
        refresh_token: &str,
    ) -> Result<(), StoreError> {
        let mut file = self.read()?;
        file.version = 1;
        file.entries.insert(
            entry_key(tenant, account_id),
            Entry {
                refresh_token: refresh_token.to_owned(),
            },
        );
        self.write(&file)
    }

    /// Forgets (tenant, MID): a revoked login.
    pub fn remove(&self, tenant: &str, account_id: Option<&str>) -> Result<(), StoreError> {
        let mut file = self.read()?;
        if file
            .entries
            .remove(&entry_key(tenant, account_id))
            .is_some()
        {
            self.write(&file)?;
        }
        Ok(())
    }

    fn read(&self) -> Result<StoreFile, StoreError> {
        let path = &self.store.path;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: where_json_broke(&e),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(StoreFile::default()),
            Err(source) => Err(StoreError::Io {
                path: path.clone(),
                source,
            }),
        }
    }

    fn write(&self, file: &StoreFile) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| StoreError::Corrupt {
            path: self.store.path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&self.store.path, &bytes, &mut |_| Ok(())).map_err(|source| {
            StoreError::Io {
                path: self.store.path.clone(),
                source,
            }
        })
    }
}

fn entry_key(tenant: &str, account_id: Option<&str>) -> String {
    match account_id {
        Some(mid) => format!("{tenant}/{mid}"),
        None => tenant.to_owned(),
    }
}

/// The steps of an atomic write, named so a test can interrupt each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Created,
    Written,
    Synced,
    Renamed,
}

/// Temp file beside `path` (same filesystem, so the rename is atomic), written
/// and fsynced, renamed over `path`, then the directory fsynced so the rename
/// itself survives a power cut. `after` runs after each step (tests crash there).
fn write_atomically(
    path: &Path,
    bytes: &[u8],
    after: &mut dyn FnMut(Step) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("store");
    let (mut file, temp) = create_temp(dir, name)?;
    let result = (|| {
        after(Step::Created)?;
        file.write_all(bytes)?;
        after(Step::Written)?;
        file.sync_all()?;
        after(Step::Synced)?;
        std::fs::rename(&temp, path)?;
        after(Step::Renamed)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Attempts at a fresh temp name when the first is taken (a leftover, or
/// something planted there): each is a new random name.
const TEMP_ATTEMPTS: usize = 8;

/// A new, private temp file beside the store, never one that existed: a file
/// or symlink at the path makes the open fail (`O_EXCL`; `O_NOFOLLOW` as
/// well, should the platform treat a dangling link otherwise), and the next
/// name is tried. What is found there is left alone: it is not ours.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(File, PathBuf)> {
    let pid = std::process::id();
    let mut temp = dir.join(format!(".{name}.{pid}.tmp"));
    let mut attempt = 1;
    loop {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        match options.open(&temp) {
            Ok(file) => {
                set_private(&file)?;
                return Ok((file, temp));
            }
            Err(error) if attempt < TEMP_ATTEMPTS && is_taken(&error) => {
                attempt += 1;
                temp = dir.join(format!(".{name}.{pid}.{:016x}.tmp", fastrand::u64(..)));
            }
            Err(error) => return Err(error),
        }
    }
}

/// `EEXIST`, or `ELOOP` (what `O_NOFOLLOW` gives for a symlink).
fn is_taken(error: &std::io::Error) -> bool {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ELOOP) {
        return true;
    }
    error.kind() == std::io::ErrorKind::AlreadyExists
}

/// 0600 exactly, on the open file (`fchmod`): the mode given at creation
/// is narrowed by the umask, never widened, but say it outright.
fn set_private(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Files only the owner can read: the store holds long-lived credentials.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    if dir.exists() {
        return refuse_shared_dir(dir);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// An existing directory every user may write to (`/tmp`-like) is refused:
/// anyone could plant a FIFO, a link or a lock of their own where the
/// private files are read. (Group-writable is left alone: with a umask of
/// 002 every directory a user makes is, and the group is theirs alone.)
fn refuse_shared_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o002 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is writable by every user (mode {:o}); keep tokens in a private directory (chmod 700, or another token.store_file)",
                    dir.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
