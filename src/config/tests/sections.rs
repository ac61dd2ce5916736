//! The other sections: server (listen, workers), token limits, broker.

use super::*;

#[test]
fn non_loopback_listen_needs_keys_or_explicit_opt_out() {
    let open = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{MINIMAL}");
    assert_eq!(error_key(&open), "server.listen");
    let keyed =
        format!("[server]\nlisten = \"0.0.0.0:8080\"\ninbound_keys = [\"${{KEY}}\"]\n{MINIMAL}");
    let settings = parse(&keyed).expect("keys make it valid");
    assert_eq!(settings.server.inbound_keys.len(), 1);
    assert!(
        settings.server.allowed_hosts.is_none(),
        "unspecified address with keys: host check off"
    );
    let opted = format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\nallow_unauthenticated_remote = true\n{MINIMAL}"
    );
    let opted = parse(&opted).expect("explicit opt-out is valid");
    assert_eq!(
        opted.server.allowed_hosts.as_deref(),
        Some(
            &[
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "[::1]".to_owned()
            ][..]
        ),
        "no key, no host check off: a rebinding page must not get through"
    );
}

#[test]
fn broker_settings_are_validated_and_default_to_open_only_on_bare_loopback() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(settings.broker.token_lifetime, Duration::from_secs(1080));
    assert!(
        settings.broker.accept_any_secret,
        "loopback, no inbound keys"
    );
    assert_eq!(settings.server.public_url, None);

    let keyed = parse(&format!(
        "[server]\ninbound_keys = [\"${{KEY}}\"]\n{MINIMAL}"
    ))
    .expect("valid");
    assert!(
        !keyed.broker.accept_any_secret,
        "inbound keys: the broker needs secrets"
    );

    let with = parse(&format!(
        "[server]\npublic_url = \"http://proxy.internal:8080\"\n[broker]\ntoken_lifetime = \"20m\"\n[broker.client_secrets]\nacme = \"${{KEY}}\"\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(
        with.server.public_url.as_deref(),
        Some("http://proxy.internal:8080/")
    );
    assert_eq!(with.broker.token_lifetime, Duration::from_secs(1200));
    assert_eq!(
        with.broker.client_secrets.get("acme").map(Secret::expose),
        Some("0123456789abcdef0123")
    );
    assert!(!format!("{with:?}").contains("0123456789abcdef0123"));

    let cases = [
        (
            "[broker.client_secrets]\nnope = \"${KEY}\"\n",
            "broker.client_secrets.nope",
        ),
        (
            "[broker.client_secrets]\nacme = \"short\"\n",
            "broker.client_secrets.acme",
        ),
        (
            "[broker]\ntoken_lifetime = \"5m\"\n",
            "broker.token_lifetime",
        ),
        ("[server]\npublic_url = \"ftp://x/\"\n", "server.public_url"),
    ];
    for (top, key) in cases {
        assert_eq!(error_key(&format!("{top}{MINIMAL}")), key, "{top}");
    }
}

#[test]
fn worker_threads_default_to_the_available_cpus_capped() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(settings.server.worker_threads, None);
    let threads = settings.server.runtime_threads();
    assert!(
        (1..=MAX_DEFAULT_WORKER_THREADS).contains(&threads),
        "{threads}"
    );
    assert_eq!(threads, default_worker_threads());
}

#[test]
fn worker_threads_can_be_set_and_must_be_sensible() {
    let settings = parse(&format!("[server]\nworker_threads = 2\n{MINIMAL}")).expect("valid");
    assert_eq!(settings.server.worker_threads, Some(2));
    assert_eq!(settings.server.runtime_threads(), 2);
    for bad in ["0", "257"] {
        assert_eq!(
            error_key(&format!("[server]\nworker_threads = {bad}\n{MINIMAL}")),
            "server.worker_threads"
        );
    }
    assert!(matches!(
        parse(&format!("[server]\nworker_threads = -1\n{MINIMAL}")),
        Err(ConfigError::Parse(_))
    ));
}

#[test]
fn token_rate_limits_and_key_bound_have_defaults_and_are_checked() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(settings.token.rate_burst, 4);
    assert_eq!(settings.token.rate_interval, Duration::from_secs(5));
    assert_eq!(settings.token.max_keys, 1024);
    let set = parse(&format!(
        "[token]\nrate_burst = 10\nrate_interval = \"1m\"\nmax_keys = 50\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(set.token.rate_burst, 10);
    assert_eq!(set.token.rate_interval, Duration::from_secs(60));
    assert_eq!(set.token.max_keys, 50);
    for (line, key) in [
        ("rate_burst = 0", "token.rate_burst"),
        ("rate_interval = \"0s\"", "token.rate_interval"),
        ("max_keys = 0", "token.max_keys"),
    ] {
        assert_eq!(error_key(&format!("[token]\n{line}\n{MINIMAL}")), key);
    }
}

#[test]
fn token_request_timeout_and_fetch_deadline_have_defaults_and_are_checked() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(settings.token.request_timeout, Duration::from_secs(10));
    assert_eq!(settings.token.fetch_deadline, Duration::from_secs(20));
    let set = parse(&format!(
        "[token]\nrequest_timeout = \"3s\"\nfetch_deadline = \"3s\"\n{MINIMAL}"
    ))
    .expect("a deadline of one attempt is valid");
    assert_eq!(set.token.request_timeout, Duration::from_secs(3));
    assert_eq!(set.token.fetch_deadline, Duration::from_secs(3));
    for (lines, key) in [
        ("request_timeout = \"500ms\"", "token.request_timeout"),
        ("request_timeout = \"soon\"", "token.request_timeout"),
        ("fetch_deadline = \"5s\"", "token.fetch_deadline"),
        (
            "request_timeout = \"30s\"\nfetch_deadline = \"20s\"",
            "token.fetch_deadline",
        ),
    ] {
        assert_eq!(error_key(&format!("[token]\n{lines}\n{MINIMAL}")), key);
    }
}

#[test]
fn ready_requires_and_prefetch_have_defaults_and_refuse_other_values() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(settings.server.ready_requires, ReadyRequires::All);
    assert!(settings.token.prefetch, "prefetch is on by default");
    let set = parse(&format!(
        "[server]\nready_requires = \"any\"\n[token]\nprefetch = false\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(set.server.ready_requires, ReadyRequires::Any);
    assert!(!set.token.prefetch);
    let wrong = format!("[server]\nready_requires = \"most\"\n{MINIMAL}");
    assert_eq!(error_key(&wrong), "server.ready_requires");
    let typed = format!("[token]\nprefetch = \"yes\"\n{MINIMAL}");
    assert!(parse(&typed).is_err(), "prefetch is a boolean");
}

#[test]
fn shutdown_timeout_defaults_to_30s_and_names_its_key() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(
        settings.server.shutdown_timeout,
        std::time::Duration::from_secs(30)
    );
    let set = parse(&format!("[server]\nshutdown_timeout = \"5s\"\n{MINIMAL}")).expect("valid");
    assert_eq!(
        set.server.shutdown_timeout,
        std::time::Duration::from_secs(5)
    );
    let wrong = format!("[server]\nshutdown_timeout = \"soon\"\n{MINIMAL}");
    assert_eq!(error_key(&wrong), "server.shutdown_timeout");
}

#[test]
fn admin_listen_must_be_loopback_and_checks_only_loopback_names_without_a_key() {
    let remote = format!("[server]\nadmin_listen = \"0.0.0.0:9090\"\n{MINIMAL}");
    assert_eq!(error_key(&remote), "server.admin_listen");
    let garbled = format!("[server]\nadmin_listen = \"localhost\"\n{MINIMAL}");
    assert_eq!(error_key(&garbled), "server.admin_listen");
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\ninbound_keys = [\"${{KEY}}\"]\nadmin_listen = \"[::1]:9090\"\nallowed_origins = [\"https://tools.example\"]\n{MINIMAL}"
    );
    let settings = parse(&text).expect("valid");
    assert_eq!(settings.server.admin_listen, "[::1]:9090".parse().ok());
    let admin = settings.server.for_admin_listener();
    assert!(admin.inbound_keys.is_empty(), "no key on the admin address");
    assert_eq!(
        admin.allowed_hosts.as_deref(),
        Some(
            &[
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "[::1]".to_owned()
            ][..]
        ),
        "loopback names only, although the main address checks none"
    );
    assert!(
        admin.allowed_origins.is_empty(),
        "no page elsewhere may read the admin address"
    );
}

#[test]
fn inbound_keys_file_adds_one_key_a_line_and_refuses_short_or_none() {
    let dir = std::env::temp_dir().join(format!("sfmc-proxy-keys-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("keys"),
        "0123456789abcdef-one\n\n  0123456789abcdef-two  \n",
    )
    .expect("write");
    std::fs::write(dir.join("short"), "0123456789abcdef-one\ntoo-short\n").expect("write");
    std::fs::write(dir.join("empty"), "\n").expect("write");
    let with = |file: &str| {
        format!(
            "[server]\nlisten = \"0.0.0.0:8080\"\ninbound_keys = [\"${{KEY}}\"]\ninbound_keys_file = \"{file}\"\n{MINIMAL}"
        )
    };
    let settings = Settings::from_toml(&with("keys"), env, &dir).expect("valid");
    let keys: Vec<&str> = settings
        .server
        .inbound_keys
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(
        keys,
        [
            "0123456789abcdef0123",
            "0123456789abcdef-one",
            "0123456789abcdef-two"
        ]
    );
    // `${VAR}` in the path: a systemd unit's ${CREDENTIALS_DIRECTORY}.
    let env_dir = |name: &str| match name {
        "CREDENTIALS_DIRECTORY" => Some(dir.display().to_string()),
        other => env(other),
    };
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\ninbound_keys_file = \"${{CREDENTIALS_DIRECTORY}}/keys\"\n{MINIMAL}"
    );
    let from_env = Settings::from_toml(&text, env_dir, Path::new("/nonexistent"))
        .expect("a file alone makes a non-loopback listen valid");
    assert_eq!(from_env.server.inbound_keys.len(), 2);
    for bad in ["short", "empty", "missing"] {
        match Settings::from_toml(&with(bad), env, &dir) {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "server.inbound_keys_file", "{bad}");
                assert!(!message.contains("0123456789abcdef"), "no key in {message}");
            }
            other => panic!("{bad}: expected Invalid, got {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
