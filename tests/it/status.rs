//! The status page, `/_proxy/status`: JSON for programs, HTML for a browser,
//! from one model (each tenant's state, each key's token facts, last error in
//! SFMC's words), never a token or a secret; and its action,
//! `POST /_proxy/status/drop`, behind the guard's cross-site refusal and a
//! per-process form token.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const JSON: (&str, &str) = ("accept", "application/json");
/// What Chromium sends for a page.
const BROWSER: (&str, &str) = (
    "accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
);
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
/// SFMC's refusal of a business unit the package is not enabled for.
const NOT_ENABLED: &str = "The client is not enabled for this account (MID 300).";

/// Tenant `acme` (default, business units 100 and 300) on a fake, and an
/// authorization-code tenant `web` nobody has logged in to yet.
struct Scene {
    fake: FakeTenant,
    proxy: TestProxy,
    client: TestClient,
    dir: PathBuf,
}

async fn scene(name: &str) -> Scene {
    let fake = start_fake().await;
    let dir = temp_dir(name);
    let web = Tenant::new("web", &fake)
        .grant("authorization_code")
        .redirect_uri("https://127.0.0.1:8443/callback");
    let proxy = TestProxy::builder()
        .store_file(&dir.join("tokens.json"))
        .tenant(
            Tenant::new("acme", &fake)
                .default(true)
                .account_ids(&["100", "300"]),
        )
        .tenant(web)
        .start()
        .await;
    Scene {
        fake,
        proxy,
        client: TestClient::new(),
        dir,
    }
}

impl Scene {
    /// A token for acme's own business unit, then SFMC's refusal of MID 300.
    async fn one_good_key_and_one_refused(&self, description: &str) {
        let ok = self.client.get(&self.proxy, "/hub/v1/x", &[]).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        self.fake.set_auth_failure(Some(AuthFailure::Reject {
            status: 401,
            error: "unauthorized_client".into(),
            description: description.into(),
        }));
        let mid = [("x-sfmc-account-id", "300")];
        let refused = self.client.get(&self.proxy, "/hub/v1/x", &mid).await;
        assert_eq!(refused.status, 502, "{}", refused.text());
        self.fake.set_auth_failure(None);
    }

    async fn status(&self, headers: &[(&str, &str)]) -> Reply {
        self.client
            .get(&self.proxy, "/_proxy/status", headers)
            .await
    }

    async fn json(&self) -> Value {
        let reply = self.status(&[JSON]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    async fn form_token(&self) -> String {
        let body = self.json().await;
        let token = &body["actions"]["drop"]["form_token"];
        token.as_str().expect("a form token").to_owned()
    }

    async fn drop_key(&self, form: &str, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![FORM];
        all.extend_from_slice(headers);
        let path = "/_proxy/status/drop";
        self.client
            .post(&self.proxy, path, &all, form.to_owned())
            .await
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A key of a tenant in the JSON, by business unit.
fn key<'a>(body: &'a Value, tenant: &str, mid: Option<&str>) -> &'a Value {
    let keys = body["tenants"][tenant]["keys"].as_array().expect("keys");
    keys.iter()
        .find(|k| k["account_id"].as_str() == mid)
        .unwrap_or_else(|| panic!("no key {mid:?} for {tenant}: {body}"))
}

#[tokio::test(start_paused = true)]
async fn json_shows_each_tenant_and_key_with_its_timing_scope_and_sfmc_words() {
    let s = scene("status-json").await;
    s.one_good_key_and_one_refused(NOT_ENABLED).await;
    tokio::time::advance(Duration::from_secs(192)).await;
    // A new connection: the idle ones were closed while time moved.
    let reply = TestClient::new()
        .get(&s.proxy, "/_proxy/status", &[JSON])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();

    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        body["generated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let acme = &body["tenants"]["acme"];
    assert_eq!(acme["grant"], "client_credentials");
    assert_eq!(
        (&acme["state"], &acme["ready"]),
        (&"ready".into(), &true.into())
    );
    assert_eq!(acme["keys"].as_array().map(Vec::len), Some(2), "{body}");

    let own = key(&body, "acme", None);
    assert_eq!(own["default"], true);
    assert_eq!(own["token_present"], true);
    let age = own["age_s"].as_u64().expect("age_s");
    let left = own["expires_in_s"].as_u64().expect("expires_in_s");
    assert!(age >= 192, "paused time moved 192 s: {own}");
    assert!(
        (1079..=1080).contains(&(age + left)),
        "the fake's 1080 s: {own}"
    );
    assert!(own["refresh_in_s"].as_u64().is_some_and(|r| r < left));
    assert!(own["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        own["granted_scope"],
        "email_read email_write documents_and_images_read data_extensions_read data_extensions_write"
    );
    assert_eq!(own["rest_host"], "127.0.0.1");
    assert!(own["last_success_age_s"].as_u64().is_some_and(|a| a >= 192));
    assert_eq!(own["last_error"], Value::Null);
    assert_eq!(
        (&own["requests"], &own["errors"]),
        (&1.into(), &0.into()),
        "{own}"
    );

    let refused = key(&body, "acme", Some("300"));
    assert_eq!(
        (&refused["default"], &refused["token_present"]),
        (&false.into(), &false.into())
    );
    assert_eq!(refused["age_s"], Value::Null);
    assert_eq!(
        (&refused["requests"], &refused["errors"]),
        (&1.into(), &1.into())
    );
    let error = &refused["last_error"];
    assert_eq!(error["error"], "token_rejected");
    assert_eq!(error["sfmc_status"], 401);
    assert_eq!(
        error["sfmc_error"], "unauthorized_client",
        "SFMC's words: {error}"
    );
    assert_eq!(error["sfmc_error_description"], NOT_ENABLED);
    assert!(error["age_s"].as_u64().is_some_and(|a| a >= 192));
    assert!(error["at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let web = &body["tenants"]["web"];
    assert_eq!(web["grant"], "authorization_code (web app)");
    assert_eq!(web["state"], "login_required");
    assert_eq!(web["login_command"], "sfmc-proxy login --tenant web");
    assert_eq!(web["error"]["error"], "login_required");
    assert_eq!(body["actions"]["drop"]["path"], "/_proxy/status/drop");
}

#[tokio::test(start_paused = true)]
async fn every_tenant_appears_before_any_request_and_a_hung_one_is_starting() {
    let (fake, hung) = (start_fake().await, start_fake().await);
    hung.set_auth_failure(Some(AuthFailure::Hang));
    let proxy = TestProxy::builder()
        .tenant(Tenant::new("acme", &fake).default(true))
        .tenant(Tenant::new("stuck", &hung))
        .start()
        .await;
    let started = tokio::time::Instant::now();
    let reply = TestClient::new().get(&proxy, "/_proxy/status", &[]).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "a hung token endpoint holds the page for readiness's 2 s only: {waited:?}"
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.headers["content-type"] == "application/json",
        "no Accept: JSON"
    );
    let body = reply.json();
    assert_eq!(body["tenants"]["acme"]["state"], "ready", "{body}");
    assert_eq!(body["tenants"]["stuck"]["state"], "starting", "{body}");
    assert_eq!(key(&body, "stuck", None)["token_present"], false);
}

#[tokio::test]
async fn neither_rendering_shows_a_token_or_a_secret() {
    let s = scene("status-secrets").await;
    s.one_good_key_and_one_refused(NOT_ENABLED).await;
    let token = s.fake.last_issued_token().expect("the fake issued a token");
    let json = s.status(&[JSON]).await;
    let html = s.status(&[BROWSER]).await;
    assert_eq!(html.headers["content-type"], "text/html; charset=utf-8");
    for (what, reply) in [("JSON", &json), ("HTML", &html)] {
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        let text = reply.text();
        assert!(
            text.contains("acme") && text.contains("unauthorized_client"),
            "{what}"
        );
        assert!(!text.contains(&token), "{what} shows the access token");
        assert!(
            !text.contains(CLIENT_SECRET),
            "{what} shows the client secret"
        );
    }
}

#[tokio::test]
async fn the_page_escapes_sfmc_text_and_is_locked_down() {
    let s = scene("status-html").await;
    let hostile = r#"</td><script>alert('x')</script><img src=x onerror="alert(1)">"#;
    s.one_good_key_and_one_refused(hostile).await;
    let reply = s.status(&[BROWSER]).await;
    assert_eq!(reply.status, 200);
    let headers = &reply.headers;
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "same-origin");
    let html = reply.text();
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    assert!(
        html.contains(
            "&lt;/td&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
        ),
        "SFMC's text in full, escaped: {html}"
    );
    for outside in ["src=\"http", "href=\"http", "url(", "@import"] {
        assert!(!html.contains(outside), "no outside resource ({outside})");
    }
    assert!(html.contains("expires in "), "{html}");
    assert!(
        html.contains("sfmc-proxy login --tenant web"),
        "the login command"
    );
    assert!(html.contains(r#"data-state="login_required""#));
    // acme's two keys and web's (its refused refresh).
    assert_eq!(
        html.matches("drop cached token</button>").count(),
        3,
        "one per key"
    );
}

#[tokio::test]
async fn dropping_a_key_makes_the_next_request_fetch_a_new_token() {
    let s = scene("status-drop").await;
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(s.fake.token_requests(), 1, "cached");
    let form = format!(
        "tenant=acme&account_id=&scope=&form_token={}",
        s.form_token().await
    );

    let reply = s.drop_key(&form, &[JSON]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["dropped"], true);
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(s.fake.token_requests(), 2, "fetched anew after the drop");

    // A browser is sent back to the page, which says what was dropped; its
    // readiness check of the tenant's own key fetches the new token at once.
    let reply = s.drop_key(&form, &[BROWSER]).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    let location = reply.headers["location"].to_str().expect("location");
    assert_eq!(location, "/_proxy/status?dropped=acme");
    assert_eq!(s.fake.token_requests(), 2, "dropped, not fetched yet");
    let page = s.client.get(&s.proxy, location, &[BROWSER]).await;
    assert!(
        page.text()
            .contains("Dropped the cached token of <b>acme</b>"),
        "{}",
        page.text()
    );
    assert_eq!(s.fake.token_requests(), 3);
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(s.fake.token_requests(), 3, "the page's new token serves");

    let token = s.form_token().await;
    let unknown = format!("tenant=acme&account_id=300&form_token={token}");
    let reply = s.drop_key(&unknown, &[JSON]).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some("unknown_key"));
    assert!(
        reply.message().contains("business unit 300"),
        "{}",
        reply.message()
    );
    let reply = s
        .drop_key(&format!("tenant=nope&form_token={token}"), &[JSON])
        .await;
    assert_eq!(reply.proxy_error(), Some("unknown_tenant"));
}

#[tokio::test]
async fn the_action_refuses_cross_site_posts_missing_form_tokens_and_gets() {
    let s = scene("status-csrf").await;
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    let token = s.form_token().await;
    let form = format!("tenant=acme&form_token={token}");
    let refusals = [
        (
            form.clone(),
            vec![("origin", "https://evil.example")],
            "cross_site_request",
        ),
        (form.clone(), vec![("origin", "null")], "cross_site_request"),
        (
            form.clone(),
            vec![("sec-fetch-site", "cross-site")],
            "cross_site_request",
        ),
        ("tenant=acme".to_owned(), vec![], "form_token_invalid"),
        (
            format!("tenant=acme&form_token={}", &token[1..]),
            vec![],
            "form_token_invalid",
        ),
        (
            "tenant=acme&form_token=".to_owned(),
            vec![],
            "form_token_invalid",
        ),
    ];
    for (body, headers, code) in refusals {
        let reply = s.drop_key(&body, &headers).await;
        assert_eq!(reply.status, 403, "{headers:?} {body}: {}", reply.text());
        assert_eq!(reply.proxy_error(), Some(code), "{headers:?} {body}");
    }
    let get = s.client.get(&s.proxy, "/_proxy/status/drop", &[]).await;
    assert_eq!(get.status, 405, "{}", get.text());
    assert_eq!(get.headers["allow"], "POST");
    let post = s
        .client
        .post(&s.proxy, "/_proxy/status", &[FORM], form.clone())
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    assert_eq!(s.fake.token_requests(), 1);
    assert_eq!(s.client.get(&s.proxy, "/hub/v1/x", &[]).await.status, 200);
    assert_eq!(s.fake.token_requests(), 1, "nothing was dropped");

    // The page's own form, as a browser posts it: same origin.
    let origin = format!("http://{}", s.proxy.addr);
    let reply = s
        .drop_key(
            &form,
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn the_page_needs_the_inbound_key_where_one_is_set() {
    let key = "status-page-inbound-key-0123456789";
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&[key]))
        .start()
        .await;
    let without = s.client.get(&s.proxy, "/_proxy/status", &[]).await;
    assert_eq!(without.status, 401);
    assert_eq!(without.proxy_error(), Some("inbound_key_required"));
    let with = s
        .client
        .get(&s.proxy, "/_proxy/status", &[("x-proxy-key", key)])
        .await;
    assert_eq!(with.status, 200, "{}", with.text());
    assert!(!with.text().contains(key));
}

#[tokio::test]
async fn a_browser_uses_the_page_and_its_action_on_the_admin_address_without_the_key() {
    let key = "status-page-inbound-key-0123456789";
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&[key]).admin_listener())
        .start()
        .await;
    let admin = s.proxy.admin();
    let with_key = [("x-proxy-key", key)];
    assert_eq!(
        s.client.get(&s.proxy, "/hub/v1/x", &with_key).await.status,
        200
    );
    let page = s.client.get(&admin, "/_proxy/status", &[BROWSER]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let marker = r#"name="form_token" value=""#;
    let at = html.find(marker).expect("a form token in the page") + marker.len();
    let token = &html[at..at + 64];
    let origin = format!("http://{}", admin.addr);
    let headers = [
        FORM,
        BROWSER,
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let form = format!("tenant=acme&account_id=&scope=&form_token={token}");
    let path = "/_proxy/status/drop";
    let reply = s.client.post(&admin, path, &headers, form.clone()).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert_eq!(s.fake.token_requests(), 1);
    assert_eq!(
        s.client.get(&s.proxy, "/hub/v1/x", &with_key).await.status,
        200
    );
    assert_eq!(s.fake.token_requests(), 2, "dropped: fetched anew");
    // The main address still wants the key, for the action too.
    let main = s.client.post(&s.proxy, path, &[FORM], form).await;
    assert_eq!(main.proxy_error(), Some("inbound_key_required"));
}
