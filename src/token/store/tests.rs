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
