use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[tenants.acme]
auth_url = "https://mc123.auth.marketingcloudapis.com/"
client_id = "${ID}"
client_secret = "${SECRET}"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "ID" => Some("the-client-id".into()),
        "SECRET" => Some("s3cret-value".into()),
        "KEY" => Some("0123456789abcdef0123".into()),
        "HOME" => Some("/home/test".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, env, Path::new("."))
}

fn error_key(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_contract_defaults() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        settings.token.refresh_before_expiry,
        Duration::from_secs(120)
    );
    assert_eq!(settings.token.replay_body_limit, 64 * 1024);
    assert_eq!(settings.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(settings.upstream.response_timeout, Duration::from_secs(300));
    assert_eq!(
        settings.upstream.allowed_instance_hosts,
        vec![".marketingcloudapis.com"]
    );
    assert_eq!(settings.default_tenant, Some(0));
    let tenant = &settings.tenants[0];
    assert_eq!(
        tenant.token_url,
        "https://mc123.auth.marketingcloudapis.com/v2/token"
    );
    assert_eq!(tenant.client_id, "the-client-id");
    assert_eq!(
        tenant
            .client_secret
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default(),
        "s3cret-value"
    );
    assert_eq!(
        settings.server.allowed_hosts.as_deref(),
        Some(&["localhost".to_owned(), "127.0.0.1".into(), "[::1]".into()][..])
    );
}

#[test]
fn auth_url_with_or_without_trailing_slash_is_the_same() {
    let without = MINIMAL.replace("marketingcloudapis.com/\"", "marketingcloudapis.com\"");
    let a = parse(MINIMAL).expect("valid");
    let b = parse(&without).expect("valid");
    assert_eq!(a.tenants[0].token_url, b.tenants[0].token_url);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let settings = parse(&format!(
        "[server]\ninbound_keys = [\"${{KEY}}\"]\n{MINIMAL}"
    ))
    .expect("valid");
    let debug = format!("{settings:?}");
    assert!(!debug.contains("s3cret-value"), "{debug}");
    assert!(!debug.contains("0123456789abcdef0123"), "{debug}");
    assert!(debug.contains("[redacted]"));
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let text = format!("{MINIMAL}client_secert = \"x\"\n");
    let message = parse(&text).expect_err("unknown key").to_string();
    assert!(message.contains("client_secert"), "{message}");
    let message = parse(&format!("[server]\nlisen = \"x\"\n{MINIMAL}"))
        .expect_err("typo")
        .to_string();
    assert!(message.contains("lisen"), "{message}");
}

#[test]
fn missing_environment_variable_is_named() {
    let text = MINIMAL.replace("${SECRET}", "${NOT_SET_ANYWHERE}");
    let message = parse(&text).expect_err("missing var").to_string();
    assert!(message.contains("NOT_SET_ANYWHERE"), "{message}");
    assert!(message.contains("tenants.acme.client_secret"), "{message}");
}

#[test]
fn bad_values_name_their_key() {
    assert_eq!(
        error_key(&MINIMAL.replace("https://mc123", "ftp://mc123")),
        "tenants.acme.auth_url"
    );
    assert_eq!(
        error_key(&MINIMAL.replace("https://mc123", "http://mc123")),
        "tenants.acme.auth_url"
    );
    assert_eq!(
        error_key(&MINIMAL.replace("https://mc123.auth.marketingcloudapis.com/", "not a url")),
        "tenants.acme.auth_url"
    );
    assert_eq!(
        error_key(&format!(
            "[token]\nrefresh_before_expiry = \"soon\"\n{MINIMAL}"
        )),
        "token.refresh_before_expiry"
    );
    assert_eq!(
        error_key(&format!("[token]\nreplay_body_limit = \"lots\"\n{MINIMAL}")),
        "token.replay_body_limit"
    );
    assert_eq!(
        error_key(&format!(
            "[upstream]\nconnect_timeout = \"5 parsecs\"\n{MINIMAL}"
        )),
        "upstream.connect_timeout"
    );
    assert_eq!(
        error_key(&format!("[server]\nlisten = \"localhost\"\n{MINIMAL}")),
        "server.listen"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}account_id = \"12ab\"\n")),
        "tenants.acme.account_id"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}path_prefix = \"acme\"\n")),
        "tenants.acme.path_prefix"
    );
}

#[test]
fn plain_http_auth_url_is_allowed_only_on_loopback() {
    let text = MINIMAL.replace(
        "https://mc123.auth.marketingcloudapis.com/",
        "http://127.0.0.1:9999/",
    );
    assert_eq!(
        parse(&text).expect("loopback http").tenants[0].token_url,
        "http://127.0.0.1:9999/v2/token"
    );
}

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
fn account_ids_accept_numbers_and_strings() {
    let text = format!("{MINIMAL}account_id = 12345\naccount_ids = [12345, \"67890\"]\n");
    let settings = parse(&text).expect("valid");
    let tenant = &settings.tenants[0];
    assert_eq!(tenant.account_id.as_deref(), Some("12345"));
    assert!(tenant.account_allowed("67890"));
    assert!(!tenant.account_allowed("11111"));
    let outside = format!("{MINIMAL}account_id = 1\naccount_ids = [2]\n");
    assert_eq!(error_key(&outside), "tenants.acme.account_id");
}

#[test]
fn several_tenants_and_defaults() {
    let two = format!("{MINIMAL}\n{}", MINIMAL.replace("acme", "beta"));
    let settings = parse(&two).expect("valid");
    assert_eq!(settings.default_tenant, None);
    let chosen = |name| settings.tenant_or_default(name).map(|t| &*t.name);
    assert_eq!(chosen(Some("beta")), Ok("beta"));
    assert_eq!(chosen(Some("gamma")), Err(NoTenant::Unknown("gamma")));
    assert_eq!(chosen(None), Err(NoTenant::NoDefault));
    let with_default = format!(
        "{MINIMAL}\n{}default = true\n",
        MINIMAL.replace("acme", "beta")
    );
    let settings = parse(&with_default).expect("valid");
    assert_eq!(
        settings.default_tenant.map(|i| &*settings.tenants[i].name),
        Some("beta")
    );
    let default = settings.tenant_or_default(None).map(|t| &*t.name);
    assert_eq!(default, Ok("beta"));
    let both = format!(
        "{MINIMAL}default = true\n{}default = true\n",
        MINIMAL.replace("acme", "beta")
    );
    assert_eq!(error_key(&both), "tenants.beta.default");
}

#[test]
fn secret_file_is_read_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("sfmc-proxy-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("secret.txt"), "from-file\n").expect("write");
    let text = MINIMAL.replace(
        "client_secret = \"${SECRET}\"",
        "client_secret_file = \"secret.txt\"",
    );
    let settings = Settings::from_toml(&text, env, &dir).expect("valid");
    assert_eq!(
        settings.tenants[0]
            .client_secret
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default(),
        "from-file"
    );
    let missing = MINIMAL.replace(
        "client_secret = \"${SECRET}\"",
        "client_secret_file = \"nope.txt\"",
    );
    match Settings::from_toml(&missing, env, &dir) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "tenants.acme.client_secret_file"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sizes_parse_with_binary_and_decimal_units() {
    assert_eq!(parse_size("k", "64KiB").ok(), Some(65536));
    assert_eq!(parse_size("k", "1 MiB").ok(), Some(1 << 20));
    assert_eq!(parse_size("k", "1000").ok(), Some(1000));
    assert_eq!(parse_size("k", "2KB").ok(), Some(2000));
    assert!(parse_size("k", "KiB").is_err());
    assert!(parse_size("k", "12 parsecs").is_err());
}

#[test]
fn the_annotated_example_config_is_valid() {
    let example = include_str!("../../proxy.toml");
    let env = |name: &str| match name {
        "SFMC_CLIENT_ID" | "SFMC_CLIENT_SECRET" => Some(format!("value-of-{name}")),
        _ => None,
    };
    let settings = Settings::from_toml(example, env, Path::new(".")).expect("proxy.toml is valid");
    assert_eq!(settings.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(&*settings.tenants[0].name, "acme");
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
fn authorization_code_tenants_need_an_https_redirect_and_public_apps_no_secret() {
    let web = parse(&format!(
        "{MINIMAL}grant = \"authorization_code\"\nredirect_uri = \"https://127.0.0.1:8443/\"\n"
    ))
    .expect("web app");
    assert!(matches!(
        &web.tenants[0].grant,
        Grant::AuthorizationCode { app_type: AppType::Web, redirect_uri, pkce: true } if redirect_uri == "https://127.0.0.1:8443/"
    ));
    assert!(web.tenants[0].client_secret.is_some());
    let public = parse(
        "[tenants.p]\nauth_url = \"https://mc1.auth.marketingcloudapis.com\"\nclient_id = \"id\"\ngrant = \"authorization_code\"\napp_type = \"public\"\nredirect_uri = \"https://127.0.0.1/\"\n",
    )
    .expect("public app");
    assert!(
        public.tenants[0].client_secret.is_none(),
        "a public app has no secret"
    );
    assert_eq!(
        public.token.store_file,
        Some(PathBuf::from(
            "/home/test/.local/state/sfmc-proxy/tokens.json"
        ))
    );

    let cases = [
        (
            format!("{MINIMAL}grant = \"authorization_code\"\n"),
            "tenants.acme.redirect_uri",
        ),
        (
            format!(
                "{MINIMAL}grant = \"authorization_code\"\nredirect_uri = \"http://127.0.0.1/\"\n"
            ),
            "tenants.acme.redirect_uri",
        ),
        (
            format!(
                "{MINIMAL}grant = \"authorization_code\"\nredirect_uri = \"https://localhost/\"\n"
            ),
            "tenants.acme.redirect_uri",
        ),
        (
            format!(
                "{MINIMAL}grant = \"authorization_code\"\napp_type = \"public\"\nredirect_uri = \"https://127.0.0.1/\"\n"
            ),
            "tenants.acme.client_secret",
        ),
        (
            format!("{MINIMAL}app_type = \"web\"\n"),
            "tenants.acme.app_type",
        ),
        (
            format!("{MINIMAL}grant = \"password\"\n"),
            "tenants.acme.grant",
        ),
    ];
    for (text, key) in cases {
        assert_eq!(error_key(&text), key, "{text}");
    }
}

#[test]
fn store_file_defaults_to_the_state_directory() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| (name != "HOME").then(|| env(name)).flatten())
        }
    };
    let at = |pairs| {
        Settings::from_toml(MINIMAL, env(pairs), Path::new("/etc/p"))
            .expect("valid")
            .token
            .store_file
    };
    assert_eq!(
        at(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]),
        Some(PathBuf::from("/s/sfmc-proxy/tokens.json"))
    );
    assert_eq!(
        at(&[("HOME", "/h")]),
        Some(PathBuf::from("/h/.local/state/sfmc-proxy/tokens.json"))
    );
    assert_eq!(at(&[]), None);
    let configured = Settings::from_toml(
        &format!("[token]\nstore_file = \"t.json\"\n{MINIMAL}"),
        env(&[]),
        Path::new("/etc/p"),
    )
    .expect("valid");
    assert_eq!(
        configured.token.store_file,
        Some(PathBuf::from("/etc/p/t.json"))
    );
    let login_without_store =
        format!("{MINIMAL}grant = \"authorization_code\"\nredirect_uri = \"https://127.0.0.1/\"\n");
    match Settings::from_toml(&login_without_store, env(&[]), Path::new(".")) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "token.store_file"),
        other => panic!("expected token.store_file error, got {other:?}"),
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
fn scopes_are_normalised_to_single_spaces_wherever_they_come_from() {
    assert_eq!(
        normalise_scope("  email_read \t email_write  "),
        "email_read email_write"
    );
    assert_eq!(normalise_scope("   "), "");
    let spaced = format!("{MINIMAL}scope = \" email_read   email_write \"\n");
    let settings = parse(&spaced).expect("valid");
    assert_eq!(
        settings.tenants[0].scope.as_deref(),
        Some("email_read email_write")
    );
}

#[test]
fn scopes_are_sorted_and_deduplicated() {
    assert_eq!(normalise_scope("b a a"), "a b");
    assert_eq!(normalise_scope("  a   b "), "a b");
    assert_eq!(normalise_scope("b a a"), normalise_scope("a b"));
    let settings = parse(&format!(
        "{MINIMAL}scope = \"email_read  data_extensions_read email_read\"\n"
    ))
    .expect("valid");
    assert_eq!(
        settings.tenants[0].scope.as_deref(),
        Some("data_extensions_read email_read")
    );
}

#[test]
fn a_configured_business_unit_id_is_one_to_ten_digits() {
    assert_eq!(
        error_key(&format!("{MINIMAL}account_id = \"12345678901\"\n")),
        "tenants.acme.account_id"
    );
    assert_eq!(
        error_key(&format!("{MINIMAL}account_ids = [\"1\", \"\"]\n")),
        "tenants.acme.account_ids[1]"
    );
    let ok = parse(&format!("{MINIMAL}account_id = 1234567890\n")).expect("valid");
    assert_eq!(ok.tenants[0].account_id.as_deref(), Some("1234567890"));
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

/// What a parse error may show when the line holds a secret: where, which
/// key, what is wrong — never the value.
fn parse_error(text: &str) -> String {
    match parse(text) {
        Err(error @ ConfigError::Parse(_)) => error.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_on_secret_lines_name_the_key_and_line_but_not_the_value() {
    let broken = MINIMAL.replace(
        "client_secret = \"${SECRET}\"",
        "client_secret = \"sup3r-s3cret-value",
    );
    let error = parse_error(&broken);
    assert!(!error.contains("sup3r-s3cret"), "{error}");
    assert!(error.contains("client_secret"), "{error}");
    assert!(error.contains("line 5"), "{error}");

    let bad_type = format!("[server]\ninbound_keys = \"inbound-key-0123456789\"\n{MINIMAL}");
    let error = parse_error(&bad_type);
    assert!(!error.contains("inbound-key-0123456789"), "{error}");
    assert!(error.contains("inbound_keys"), "{error}");
    assert!(error.contains("line 2"), "{error}");

    let listed =
        format!("[server]\ninbound_keys = [\n  \"inbound-key-0123456789\",\n  5,\n]\n{MINIMAL}");
    let error = parse_error(&listed);
    assert!(!error.contains("inbound-key-0123456789"), "{error}");

    let broker =
        format!("{MINIMAL}[broker.client_secrets]\nacme = \"local-secret-0123456789\" x\n");
    let error = parse_error(&broker);
    assert!(!error.contains("local-secret-0123456789"), "{error}");
    assert!(error.contains("broker.client_secrets.acme"), "{error}");

    let userinfo =
        format!("[upstream]\nproxy = \"http://user:pa55word@proxy.corp:3128\"\n{MINIMAL}");
    let error = parse_error(&userinfo);
    assert!(!error.contains("pa55word"), "{error}");
    assert!(error.contains("line 2"), "{error}");

    let typo = MINIMAL
        .replace("client_secret =", "client_secert =")
        .replace("${SECRET}", "typo-s3cret");
    let error = parse_error(&typo);
    assert!(!error.contains("typo-s3cret"), "{error}");
    assert!(error.contains("client_secert"), "{error}");

    // A multi-line string carries the secret onto lines of its own.
    for broken in [
        MINIMAL.replace(
            "client_secret = \"${SECRET}\"",
            "client_secret = \"\"\"\nS3CRET-VALUE-XYZ",
        ),
        MINIMAL.replace(
            "client_secret = \"${SECRET}\"",
            "client_secret = '''S3CRET-VALUE-XYZ'''x",
        ),
    ] {
        let error = parse_error(&broken);
        assert!(!error.contains("S3CRET-VALUE-XYZ"), "{error}");
    }
}

#[test]
fn syntax_errors_elsewhere_keep_toml_s_full_report() {
    let error = parse_error(&format!("[server]\nlisten = 8080\n{MINIMAL}"));
    assert!(
        error.contains("listen = 8080"),
        "the line is shown: {error}"
    );
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn pkce_is_on_by_default_and_only_for_authorization_code_tenants() {
    let login = format!(
        "{MINIMAL}grant = \"authorization_code\"\nredirect_uri = \"https://127.0.0.1:8443/\"\n"
    );
    let off = parse(&format!("{login}pkce = false\n")).expect("valid");
    assert!(matches!(
        off.tenants[0].grant,
        Grant::AuthorizationCode { pkce: false, .. }
    ));
    assert_eq!(
        error_key(&format!("{MINIMAL}pkce = false\n")),
        "tenants.acme.pkce"
    );
}
