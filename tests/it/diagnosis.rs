//! When SFMC refuses a token, every place a person looks — `check`, `token`,
//! `serve`'s log and the 502 body a client gets — shows SFMC's own `error`
//! and `error_description`, the URL that answered, and what to change,
//! chosen by what SFMC said. Never Rust's `Debug` text. Through the binary.

use bytes::Bytes;

use crate::support::*;

/// What no human-facing text may contain: `Debug` output of the token
/// layer's errors.
fn assert_no_debug_text(text: &str) {
    for debug in [
        "Rejected {",
        "Unavailable {",
        "InvalidResponse(",
        "LoginRequired {",
    ] {
        assert!(!text.contains(debug), "Debug text `{debug}` in:\n{text}");
    }
}

#[tokio::test]
async fn check_shows_sfmcs_words_the_url_and_to_check_id_and_secret() {
    let fake = start_fake().await;
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake).client_secret("wrong-one"));
    let path = config_file("words-check", &config.render());
    let output = run_binary(&["check"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let printed = stdout_of(&output);
    let said = format!(
        "POST {}v2/token answered HTTP 401: invalid_client \"Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.\"",
        fake.auth_url()
    );
    assert!(printed.contains(&said), "{printed}");
    assert!(
        printed.contains("check tenants.acme.client_id and client_secret"),
        "{printed}"
    );
    assert_no_debug_text(&printed);
    assert_no_debug_text(&stderr_of(&output));
    assert!(!printed.contains("wrong-one") && !stderr_of(&output).contains("wrong-one"));
}

#[tokio::test]
async fn token_says_the_package_lacks_the_business_unit_when_sfmc_says_so() {
    let fake = start_fake().await;
    fake.set_auth_failure(Some(AuthFailure::Reject {
        status: 401,
        error: "invalid_request".into(),
        description: "The client does not have access to account_id 67890.".into(),
    }));
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake).account_ids(&["67890"]));
    let path = config_file("words-token", &config.render());
    let output = run_binary(&["token", "--account-id", "67890"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no token printed");
    let error = stderr_of(&output);
    assert!(
        error.contains("invalid_request \"The client does not have access to account_id 67890.\""),
        "{error}"
    );
    assert!(
        error.contains(&format!("POST {}v2/token", fake.auth_url())),
        "{error}"
    );
    assert!(
        error.contains("the installed package has no access to this business unit"),
        "the hint follows the description, not the error code: {error}"
    );
    assert!(!error.contains("client_id and client_secret"), "{error}");
    assert_no_debug_text(&error);
}

#[tokio::test]
async fn a_404_page_from_the_auth_host_asks_whether_auth_url_is_the_base_uri() {
    let auth_url = static_auth_reply(
        http::StatusCode::NOT_FOUND,
        "text/html",
        Bytes::from_static(b"<html><body>Not Found</body></html>"),
    )
    .await;
    let config = TestProxy::builder().tenant(Tenant::at("acme", &auth_url));
    let path = config_file("words-404", &config.render());
    let output = run_binary(&["check"], &path, &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let printed = stdout_of(&output);
    assert!(
        printed.contains(&format!(
            "POST {auth_url}v2/token answered HTTP 404 (no SFMC error in the body)"
        )),
        "{printed}"
    );
    assert!(
        printed.contains("is tenants.acme.auth_url the package's Authentication Base URI"),
        "{printed}"
    );
    assert!(!printed.contains("client_secret"), "not blamed: {printed}");
    assert_no_debug_text(&printed);
}

#[tokio::test]
async fn serve_logs_and_answers_sfmcs_words_with_the_url_and_the_hint() {
    let fake = start_fake().await;
    fake.set_auth_failure(Some(invalid_client()));
    let config = TestProxy::builder().tenant(Tenant::new("acme", &fake));
    let mut proxy = Binary::start("words-serve", config, "info").await;
    let reply = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(proxy.url("/asset/v1/content/assets"))
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 502);
    let body: serde_json::Value = reply.json().await.expect("JSON error body");
    let token_url = format!("{}v2/token", fake.auth_url());
    assert_eq!(body["error"], "token_rejected");
    assert_eq!(body["sfmc_error"], "invalid_client");
    assert_eq!(body["token_url"], token_url.as_str());
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "POST {token_url} answered HTTP 401: invalid_client \"Invalid client ID."
        )) && message.contains("client_id and client_secret"),
        "{message}"
    );
    let logged = proxy
        .next_event(|event| event["message"] == "token request failed")
        .await;
    let error = logged["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "POST {token_url} answered HTTP 401: invalid_client"
        )),
        "{logged}"
    );
    let hint = logged["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("client_id and client_secret"), "{logged}");
    let log = proxy.stop().await;
    assert_no_debug_text(&log);
}
