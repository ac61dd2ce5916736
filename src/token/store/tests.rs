use super::*;

fn temp_store(name: &str) -> TokenStore {
    let dir = std::env::temp_dir().join(format!("sfmc-proxy-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TokenStore::new(dir.join("state").join("tokens.json"))
}

#[test]
fn entries_are_kept_per_tenant_and_business_unit_in_a_private_file() {
    let store = temp_store("entries");
    let locked = store.lock().expect("lock");
    assert!(locked.refresh_token("acme", None).expect("read").is_none());
    locked.save("acme", None, "rt-default").expect("save");
    locked.save("acme", Some("200"), "rt-200").expect("save");
    let read = |mid| {
        locked
            .refresh_token("acme", mid)
            .expect("read")
            .map(|s| s.expose().to_owned())
    };
    assert_eq!(read(None).as_deref(), Some("rt-default"));
    assert_eq!(read(Some("200")).as_deref(), Some("rt-200"));
    locked.remove("acme", Some("200")).expect("remove");
    assert_eq!(read(Some("200")), None);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600, "the store is private");
        assert_eq!(mode(store.path().parent().expect("dir")), 0o700);
    }
}

#[test]
fn a_write_interrupted_at_any_step_leaves_the_old_or_the_new_file() {
    let store = temp_store("crash");
    let locked = store.lock().expect("lock");
    locked.save("acme", None, "old-token").expect("save");
    let old = std::fs::read(store.path()).expect("old bytes");
    let new_file = StoreFile {
        version: 1,
        entries: BTreeMap::from([(
            "acme".to_owned(),
            Entry {
                refresh_token: "new-token".into(),
            },
        )]),
    };
    let new = serde_json::to_vec_pretty(&new_file).expect("json");
    for crash_at in [Step::Created, Step::Written, Step::Synced, Step::Renamed] {
        std::fs::write(store.path(), &old).expect("reset to old");
        let result = write_atomically(store.path(), &new, &mut |step| {
            if step == crash_at {
                Err(std::io::Error::other("crash"))
            } else {
                Ok(())
            }
        });
        assert!(result.is_err());
        let on_disk = std::fs::read(store.path()).expect("the store is never missing");
        let expected = if crash_at == Step::Renamed {
            &new
        } else {
            &old
        };
        assert_eq!(&on_disk, expected, "crash after {crash_at:?}");
        let token = locked
            .refresh_token("acme", None)
            .expect("parses")
            .expect("entry");
        assert!(["old-token", "new-token"].contains(&token.expose()));
        let leftovers: Vec<_> = std::fs::read_dir(store.path().parent().expect("dir"))
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temp file left after {crash_at:?}");
    }
}

#[test]
fn the_lock_is_exclusive_across_open_files() {
    let store = temp_store("lock");
    let held = store.lock().expect("lock");
    let other = File::options()
        .read(true)
        .write(true)
        .open(store.path().with_extension("lock"))
        .expect("open lock file");
    assert!(
        matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "a second refresher (another process too) must wait"
    );
    drop(held);
    other.try_lock().expect("free once released");
}

#[test]
fn corrupt_store_is_an_error_that_says_what_to_do() {
    let store = temp_store("corrupt");
    let locked = store.lock().expect("lock");
    std::fs::write(store.path(), b"{not json").expect("write");
    let error = locked.refresh_token("acme", None).expect_err("corrupt");
    assert!(error.to_string().contains("log in again"));
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Where `write_atomically` first tries to put its temp file.
#[cfg(unix)]
fn first_temp_path(store: &TokenStore) -> PathBuf {
    let dir = store.path().parent().expect("dir");
    dir.join(format!(".tokens.json.{}.tmp", std::process::id()))
}

#[cfg(unix)]
#[test]
fn a_store_that_was_world_readable_becomes_private() {
    use std::os::unix::fs::PermissionsExt;
    let store = temp_store("was-0644");
    let locked = store.lock().expect("lock");
    std::fs::write(store.path(), b"{\"version\":1,\"entries\":{}}").expect("write");
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    locked.save("acme", None, "rt-secret").expect("save");
    assert_eq!(mode(store.path()), 0o600);
}

#[cfg(unix)]
#[test]
fn a_world_readable_file_planted_at_the_temp_path_does_not_leak_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let store = temp_store("planted-file");
    let locked = store.lock().expect("lock");
    let planted = first_temp_path(&store);
    std::fs::write(&planted, b"planted").expect("plant");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    locked.save("acme", None, "rt-secret").expect("save");
    assert_eq!(mode(store.path()), 0o600, "the store is private");
    let planted_now = std::fs::read(&planted).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&planted_now).contains("rt-secret"),
        "the token went into the planted file"
    );
    let token = locked
        .refresh_token("acme", None)
        .expect("read")
        .expect("entry");
    assert_eq!(token.expose(), "rt-secret");
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_at_the_temp_path_is_not_followed() {
    let store = temp_store("planted-link");
    let locked = store.lock().expect("lock");
    let target = store.path().with_file_name("elsewhere.txt");
    std::fs::write(&target, b"").expect("target");
    let planted = first_temp_path(&store);
    std::os::unix::fs::symlink(&target, &planted).expect("symlink");
    locked.save("acme", None, "rt-secret").expect("save");
    let leaked = std::fs::read_to_string(&target).expect("target");
    assert!(!leaked.contains("rt-secret"), "the symlink was followed");
    let meta = std::fs::symlink_metadata(store.path()).expect("store");
    assert!(meta.file_type().is_file(), "the store is a regular file");
    assert_eq!(mode(store.path()), 0o600);
}

#[cfg(unix)]
#[test]
fn a_directory_every_user_may_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let store = temp_store("shared-dir");
    let dir = store.path().parent().expect("dir").to_owned();
    std::fs::create_dir_all(&dir).expect("create");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let error = store.lock().map(|_| ()).expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("writable by every user (mode 1777)"),
        "{text}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(store.lock().is_ok(), "a private directory is used");
}
