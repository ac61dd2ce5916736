//! The cache's rules: what is reused, what never is, and that a broken file
//! is a warning rather than a failure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn settings(dir: &Path, secret: &str) -> Settings {
    let text = format!(
        "[token]\nstore_file = \"{}\"\nrefresh_before_expiry = \"120s\"\n\
         [tenants.acme]\nauth_url = \"https://mc1.auth.marketingcloudapis.com/\"\n\
         client_id = \"id\"\nclient_secret = \"{secret}\"\naccount_ids = [\"100\", \"200\"]\n",
        dir.join("tokens.json").display()
    );
    Settings::from_toml(&text, |_| None, dir).expect("valid config")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sfmc-proxy-token-cache-{name}-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn key(settings: &Settings, mid: Option<&str>) -> TokenKey {
    TokenKey::for_tenant(&settings.tenants[0], mid, None).expect("key")
}

/// An entry for `key` had at `obtained_at`, living `lifetime` seconds.
fn entry(key: &TokenKey, fingerprint: &str, obtained_at: u64, lifetime: u64) -> Entry {
    Entry {
        tenant: key.tenant.to_string(),
        account_id: key.account_id.as_deref().map(str::to_owned),
        scope: key.scope.as_deref().map(str::to_owned),
        fingerprint: fingerprint.to_owned(),
        access_token: format!("token-{obtained_at}"),
        granted_scope: Some("email_read".to_owned()),
        rest_instance: "https://mc1.rest.marketingcloudapis.com/".to_owned(),
        soap_instance: None,
        obtained_at,
        expires_at: obtained_at + lifetime,
    }
}

const NOW: u64 = 1_800_000_000;

#[tokio::test]
async fn a_token_is_reused_until_the_refresh_window_and_written_0600() {
    let dir = temp_dir("window");
    let settings = settings(&dir, "secret");
    let key = key(&settings, Some("200"));
    let fp = fingerprint(&settings.tenants[0]);
    let mut cache = TokenFileCache::open(&settings).await;
    assert!(cache.fresh(&key, &fp, NOW).is_none(), "empty at first");
    cache.put(entry(&key, &fp, NOW, 1080));
    cache.save(NOW);
    drop(cache);

    let path = dir.join(FILE_NAME);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let cache = TokenFileCache::open(&settings).await;
    let hit = |now| cache.fresh(&key, &fp, now).map(|e| e.access_token.clone());
    assert_eq!(hit(NOW + 1).as_deref(), Some("token-1800000000"));
    // Reused up to expiry - refresh_before_expiry (120 s), not after.
    assert!(hit(NOW + 1080 - 121).is_some());
    assert!(hit(NOW + 1080 - 120).is_none());
    assert!(hit(NOW + 2000).is_none());
    // A wall clock gone back before the token was had: not trusted.
    assert!(hit(NOW - 10).is_none());
    // Another business unit's key is another entry.
    let other = TokenKey::for_tenant(&settings.tenants[0], Some("100"), None).expect("key");
    assert!(cache.fresh(&other, &fp, NOW + 1).is_none());
}

#[tokio::test]
async fn a_changed_secret_or_url_never_reuses_a_token() {
    let dir = temp_dir("fingerprint");
    let old = settings(&dir, "old-secret");
    let new = settings(&dir, "new-secret");
    let old_fp = fingerprint(&old.tenants[0]);
    let new_fp = fingerprint(&new.tenants[0]);
    assert_ne!(old_fp, new_fp);
    assert!(!old_fp.contains("old-secret"));
    let key = key(&old, None);
    let mut cache = TokenFileCache::open(&old).await;
    cache.put(entry(&key, &old_fp, NOW, 1080));
    cache.save(NOW);
    drop(cache);
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).expect("written");
    assert!(!text.contains("old-secret"), "no secret on disk: {text}");

    let cache = TokenFileCache::open(&new).await;
    assert!(cache.fresh(&key, &new_fp, NOW + 1).is_none());
    assert!(cache.fresh(&key, &old_fp, NOW + 1).is_some());
    // The auth URL (hence the token URL) counts too.
    let mut moved = settings(&dir, "old-secret");
    let tenant = Arc::get_mut(&mut moved.tenants[0]).expect("sole owner");
    tenant.token_url = "https://mc2.auth.marketingcloudapis.com/v2/token".to_owned();
    assert_ne!(fingerprint(&moved.tenants[0]), old_fp);
}

#[test]
fn a_lifetime_shorter_than_the_margin_is_reused_for_half_of_it() {
    let settings = settings(&temp_dir("short"), "secret");
    let key = key(&settings, None);
    let short = entry(&key, "fp", NOW, 100);
    assert_eq!(short.reuse_until(Duration::from_secs(120)), NOW + 50);
    assert_eq!(short.reuse_until(Duration::from_secs(10)), NOW + 90);
    assert_eq!(short.expires_in(NOW + 30), 70);
    assert_eq!(short.expires_in(NOW + 300), 0);
}

#[tokio::test]
async fn a_corrupt_cache_is_ignored_and_replaced() {
    let dir = temp_dir("corrupt");
    let settings = settings(&dir, "secret");
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, b"{\"version\": 1, \"entries\": [tru").expect("write");
    let key = key(&settings, None);
    let fp = fingerprint(&settings.tenants[0]);
    let mut cache = TokenFileCache::open(&settings).await;
    assert!(cache.fresh(&key, &fp, NOW).is_none());
    cache.put(entry(&key, &fp, NOW, 1080));
    cache.save(NOW);
    drop(cache);
    let cache = TokenFileCache::peek(&settings);
    assert!(cache.fresh(&key, &fp, NOW + 1).is_some(), "rewritten whole");
}

#[tokio::test]
async fn expired_entries_are_dropped_on_write_and_a_put_replaces_its_key() {
    let dir = temp_dir("prune");
    let settings = settings(&dir, "secret");
    let fp = fingerprint(&settings.tenants[0]);
    let (default, bu) = (key(&settings, None), key(&settings, Some("100")));
    let mut cache = TokenFileCache::open(&settings).await;
    cache.put(entry(&default, &fp, NOW - 2000, 1080));
    cache.put(entry(&bu, "old-fp", NOW - 10, 1080));
    cache.put(entry(&bu, &fp, NOW, 1080));
    cache.save(NOW);
    drop(cache);
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).expect("written");
    let file: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let entries = file["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{text}");
    assert_eq!(entries[0]["account_id"], "100");
    assert_eq!(entries[0]["fingerprint"], fp.as_str());
}

#[test]
fn peeking_never_writes() {
    let dir = temp_dir("peek");
    let settings = settings(&dir, "secret");
    let key = key(&settings, None);
    let mut cache = TokenFileCache::peek(&settings);
    cache.put(entry(&key, "fp", NOW, 1080));
    cache.save(NOW);
    assert!(!dir.join(FILE_NAME).exists());
}
