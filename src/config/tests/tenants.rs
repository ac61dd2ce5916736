//! Tenants: URLs, business units, scopes, secrets, grants and the default.

use super::*;

#[test]
fn auth_url_with_or_without_trailing_slash_is_the_same() {
    let without = MINIMAL.replace("marketingcloudapis.com/\"", "marketingcloudapis.com\"");
    let a = parse(MINIMAL).expect("valid");
    let b = parse(&without).expect("valid");
    assert_eq!(a.tenants[0].token_url, b.tenants[0].token_url);
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

#[test]
fn policy_keys_default_to_open_and_name_the_entry_they_refuse() {
    let open = parse(MINIMAL).expect("valid");
    assert!(open.tenants[0].policy.is_open());
    let text = format!(
        "{MINIMAL}read_only = true\nallow_paths = [\"/data/v1/async\"]\ndeny_paths = [\"/data/v1/async/dataextensions/key:Audit\", \"/Service.asmx\"]\n"
    );
    let policy = &parse(&text).expect("valid").tenants[0].policy;
    assert!(policy.read_only && !policy.is_open());
    assert_eq!(policy.allow_paths[0].text, "/data/v1/async");
    assert_eq!(policy.deny_paths.len(), 2);
    for (entry, key) in [
        ("allow_paths = [\"hub/v1\"]", "tenants.acme.allow_paths[0]"),
        (
            "allow_paths = [\"/a\", \"/b?x=1\"]",
            "tenants.acme.allow_paths[1]",
        ),
        ("deny_paths = [\"/a#b\"]", "tenants.acme.deny_paths[0]"),
        ("deny_paths = [\"/a;b\"]", "tenants.acme.deny_paths[0]"),
        ("deny_paths = [\"/a%252e\"]", "tenants.acme.deny_paths[0]"),
        (
            "deny_paths = [\"/_proxy/status\"]",
            "tenants.acme.deny_paths[0]",
        ),
        ("read_only = \"yes\"", ""),
    ] {
        let text = format!("{MINIMAL}{entry}\n");
        match parse(&text) {
            Err(ConfigError::Invalid { key: got, message }) => {
                assert_eq!(got, key, "{entry}");
                assert!(message.contains("like \"/hub/v1/dataevents\""), "{message}");
            }
            Err(ConfigError::Parse(message)) if key.is_empty() => {
                assert!(message.contains("read_only"), "{message}");
            }
            other => panic!("{entry}: {other:?}"),
        }
    }
}

#[test]
fn an_auth_url_pasted_as_the_token_url_is_cut_to_its_base_with_a_note() {
    for pasted in ["/v2/token", "/v2/token/", "/V2/Token"] {
        let text = MINIMAL.replace(
            "marketingcloudapis.com/\"",
            &format!("marketingcloudapis.com{pasted}\""),
        );
        let settings = parse(&text).expect("valid");
        let tenant = &settings.tenants[0];
        assert_eq!(
            tenant.token_url, "https://mc123.auth.marketingcloudapis.com/v2/token",
            "{pasted}"
        );
        assert_eq!(tenant.notes.len(), 1);
        assert!(
            tenant.notes[0].starts_with("tenants.acme.auth_url: "),
            "{:?}",
            tenant.notes
        );
        assert!(tenant.notes[0].contains("Authentication Base URI"));
    }
    let plain = parse(MINIMAL).expect("valid");
    assert!(
        plain.tenants[0].notes.is_empty(),
        "the base URL as written: no note"
    );
}

#[test]
fn a_path_prefix_may_not_take_an_sfmc_api_root_or_the_proxys_paths() {
    for prefix in [
        "/hub",
        "/HUB",
        "/hub/x",
        "/Asset",
        "/data",
        "/interaction",
        "/v2",
        "/_proxy",
        "/service.asmx",
        "/Service.asmx",
        "/messaging/",
        "/ott",
        "/favicon.ico",
    ] {
        let text = format!("{MINIMAL}path_prefix = \"{prefix}\"\n");
        assert_eq!(error_key(&text), "tenants.acme.path_prefix", "{prefix}");
        let message = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("pick a name of your own"), "{message}");
    }
    for prefix in ["/hubspot", "/acme", "/prod/hub", "/data2"] {
        let text = format!("{MINIMAL}path_prefix = \"{prefix}\"\n");
        assert!(parse(&text).is_ok(), "{prefix} is a name of one's own");
    }
}

#[test]
fn an_auth_url_with_a_fragment_query_or_credentials_is_refused() {
    for url in [
        "https://mc123.auth.marketingcloudapis.com/#frag",
        "https://mc123.auth.marketingcloudapis.com/?a=1",
        "https://u:p@mc123.auth.marketingcloudapis.com/",
    ] {
        let text = MINIMAL.replace("https://mc123.auth.marketingcloudapis.com/", url);
        assert_ne!(text, MINIMAL, "MINIMAL names the URL replaced");
        assert_eq!(error_key(&text), "tenants.acme.auth_url", "{url}");
    }
}

#[test]
fn throttling_retry_and_concurrency_default_off_and_are_set_per_tenant() {
    let settings = parse(MINIMAL).expect("valid");
    assert!(!settings.upstream.retry_throttled);
    assert_eq!(settings.upstream.max_retry_wait, Duration::from_secs(10));
    let tenant = &settings.tenants[0];
    assert!(!tenant.retry_throttled);
    assert_eq!(tenant.concurrency, None);

    // [upstream] sets the default; a tenant's own key wins either way.
    let upstream_on = "[upstream]\nretry_throttled = true\nmax_retry_wait = \"3s\"\n";
    let beta = MINIMAL.replace("acme", "beta") + "retry_throttled = false\n";
    let text = format!("{upstream_on}{MINIMAL}max_concurrent_requests = 8\n{beta}");
    let settings = parse(&text).expect("valid");
    assert_eq!(settings.upstream.max_retry_wait, Duration::from_secs(3));
    let (acme, beta) = (&settings.tenants[0], &settings.tenants[1]);
    assert!(acme.retry_throttled);
    assert!(!beta.retry_throttled);
    assert_eq!(
        acme.concurrency,
        Some(ConcurrencyLimit {
            max: 8,
            queue_timeout: Duration::from_secs(30)
        })
    );
    let own = format!(
        "{MINIMAL}retry_throttled = true\nmax_concurrent_requests = 2\nqueue_timeout = \"0s\"\n"
    );
    let tenant = &parse(&own).expect("valid").tenants[0];
    assert!(tenant.retry_throttled);
    assert_eq!(
        tenant.concurrency.map(|c| (c.max, c.queue_timeout)),
        Some((2, Duration::ZERO))
    );
}

#[test]
fn a_concurrency_limit_must_be_one_or_more_and_a_queue_timeout_needs_it() {
    for bad in ["0", "100001"] {
        let text = format!("{MINIMAL}max_concurrent_requests = {bad}\n");
        assert_eq!(error_key(&text), "tenants.acme.max_concurrent_requests");
    }
    let alone = format!("{MINIMAL}queue_timeout = \"5s\"\n");
    assert_eq!(error_key(&alone), "tenants.acme.queue_timeout");
    let unreadable = format!("{MINIMAL}max_concurrent_requests = 1\nqueue_timeout = \"soon\"\n");
    assert_eq!(error_key(&unreadable), "tenants.acme.queue_timeout");
    for wait in ["a while", "500ms", "61s"] {
        let text = format!("[upstream]\nmax_retry_wait = \"{wait}\"\n{MINIMAL}");
        assert_eq!(error_key(&text), "upstream.max_retry_wait", "{wait}");
    }
}
