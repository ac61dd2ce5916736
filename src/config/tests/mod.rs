use std::path::Path;
use std::time::Duration;

use super::*;

mod sections;
mod tenants;

pub(super) const MINIMAL: &str = r#"
[tenants.acme]
auth_url = "https://mc123.auth.marketingcloudapis.com/"
client_id = "${ID}"
client_secret = "${SECRET}"
"#;

pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "ID" => Some("the-client-id".into()),
        "SECRET" => Some("s3cret-value".into()),
        "KEY" => Some("0123456789abcdef0123".into()),
        "HOME" => Some("/home/test".into()),
        _ => None,
    }
}

pub(super) fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, env, Path::new("."))
}

pub(super) fn error_key(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_contract_defaults() {
    let settings = parse(MINIMAL).expect("valid");
    assert_eq!(list_addresses(&settings.server.listen), "127.0.0.1:8080");
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
    let example = include_str!("../../../proxy.toml");
    let env = |name: &str| match name {
        "SFMC_CLIENT_ID" | "SFMC_CLIENT_SECRET" => Some(format!("value-of-{name}")),
        _ => None,
    };
    let settings = Settings::from_toml(example, env, Path::new(".")).expect("proxy.toml is valid");
    assert_eq!(list_addresses(&settings.server.listen), DEFAULT_LISTEN);
    assert_eq!(&*settings.tenants[0].name, "acme");
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

    // A misspelt key (`proxy_url` for `proxy`) whose value holds a password.
    let userinfo =
        format!("[upstream]\nproxy_url = \"http://user:pa55word@proxy.corp:3128\"\n{MINIMAL}");
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
