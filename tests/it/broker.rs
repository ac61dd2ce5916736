//! The local token broker: `POST /v2/token` on the proxy for SDK tools, and
//! requests that carry its local tokens served with the real token.

use serde_json::{Value, json};

use crate::support::*;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn local_token(s: &Setup, body: Value) -> String {
    let reply = s
        .client
        .post(&s.proxy, "/v2/token", &[JSON], body.to_string())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A form-encoded token request, as FuelSDK and most tools send it.
async fn token_form(s: &Setup, path: &str, body: &str) -> Reply {
    s.client
        .post(&s.proxy, path, &[FORM], body.to_owned())
        .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn json_and_form_requests_get_an_sfmc_shaped_local_token() {
    let s = setup_with_business_units(&["100", "200"]).await;
    let base = s.proxy.url("/");
    let json_reply = s
        .client
        .post(
            &s.proxy,
            "/v2/token",
            &[JSON],
            json!({"grant_type": "client_credentials", "client_id": "acme",
                   "client_secret": "anything", "account_id": 200})
            .to_string(),
        )
        .await;
    let form_reply = token_form(
        &s,
        "/v2/token",
        "grant_type=client_credentials&client_id=acme&client_secret=x%20y&account_id=100",
    )
    .await;
    for reply in [&json_reply, &form_reply] {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 1080);
        assert_eq!(body["rest_instance_url"], base.as_str());
        assert_eq!(body["soap_instance_url"], base.as_str());
        assert!(body["scope"].as_str().is_some_and(|s| !s.is_empty()));
        let token = body["access_token"].as_str().expect("token");
        assert!(token.starts_with("sfmcproxy_") && token.len() >= 10 + 32);
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    assert_ne!(
        json_reply.json()["access_token"],
        form_reply.json()["access_token"]
    );
    assert_eq!(
        s.fake.token_requests(),
        2,
        "one real token per business unit"
    );
}

#[tokio::test]
async fn rest_calls_with_a_local_token_get_the_real_token_of_their_business_unit() {
    let s = setup_with_business_units(&["100", "200"]).await;
    let local = local_token(
        &s,
        json!({"grant_type": "client_credentials", "client_id": CLIENT_ID,
               "client_secret": "x", "account_id": "200"}),
    )
    .await;
    // FuelSDK-Python joins its base URL and paths into `//hub/v1/...`.
    let auth = bearer(&local);
    let reply = s
        .client
        .get(
            &s.proxy,
            "//hub/v1/objects?x=%20",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["path"], "//hub/v1/objects");
    assert_eq!(echo["query"], "x=%20");
    assert_eq!(
        echo["account_id"], "200",
        "the MID the local token is bound to"
    );
    let sent = echo["headers"]["authorization"]
        .as_str()
        .expect("a token reached SFMC");
    assert_ne!(sent, auth, "the local token never reaches SFMC");
    assert!(!sent.contains("sfmcproxy_"));
    assert_eq!(
        s.fake.token_requests(),
        1,
        "the broker's real token is reused"
    );
}

#[tokio::test]
async fn real_token_never_reaches_the_client_through_the_broker() {
    let s = setup().await;
    let reply = token_form(
        &s,
        "/v2/token",
        "grant_type=client_credentials&client_id=acme&client_secret=x",
    )
    .await;
    let local = reply.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let echo = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[("authorization", &bearer(&local))])
        .await
        .json();
    assert_eq!(echo["token_number"], 1, "SFMC got its own token");
    let real = s.fake.last_issued_token().expect("the real token");
    assert!(
        !reply.text().contains(&real) && !reply.text().contains("fake-"),
        "broker answer holds no real token"
    );
    let in_headers = reply
        .headers
        .values()
        .any(|v| String::from_utf8_lossy(v.as_bytes()).contains(&real));
    assert!(!in_headers);
}

#[tokio::test]
async fn unknown_or_stale_local_token_is_sfmcs_401_so_tools_authenticate_again() {
    let s = setup().await;
    let reply = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("authorization", "Bearer sfmcproxy_0123456789abcdef")],
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.proxy_error(), Some("local_token_invalid"));
    assert_eq!(reply.json()["message"], "Not Authorized");
    assert_eq!(reply.json()["errorcode"], 0);
    assert_eq!(s.fake.rest_requests(), 0);
    assert_eq!(s.fake.token_requests(), 0);
    // A bearer value that is not the proxy's own is ignored, as before.
    let foreign = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("authorization", "Bearer whatever")],
        )
        .await;
    assert_eq!(foreign.status, 200);
}

#[tokio::test]
async fn wrong_client_unknown_tenant_and_bad_grant_are_refused_like_sfmc() {
    let s = Setup::builder()
        .proxy(|p| p.broker_client_secret("acme", "local-secret-0123456789"))
        .tenant(|t| t.account_ids(&["100"]))
        .start()
        .await;
    let cases = [
        (
            "grant_type=client_credentials&client_id=acme&client_secret=wrong",
            401,
            "invalid_client",
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&client_id=nope&client_secret=local-secret-0123456789",
            401,
            "invalid_client",
            "invalid_client",
        ),
        (
            "grant_type=password&client_id=acme&client_secret=local-secret-0123456789",
            400,
            "unsupported_grant_type",
            "unsupported_grant_type",
        ),
        (
            "grant_type=client_credentials&client_id=acme&client_secret=local-secret-0123456789&account_id=999",
            401,
            "unauthorized_client",
            "account_not_allowed",
        ),
    ];
    for (body, status, error, code) in cases {
        let reply = s.client.post(&s.proxy, "/v2/token", &[FORM], body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"], error, "{body}");
        assert!(
            reply.json()["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        assert_eq!(reply.proxy_error(), Some(code), "{body}");
        assert!(!reply.text().contains("local-secret"), "no secret echoed");
    }
    assert_eq!(s.fake.token_requests(), 0, "nothing reached SFMC");
    let ok = token_form(
        &s,
        "/v2/token",
        "grant_type=client_credentials&client_id=acme&client_secret=local-secret-0123456789",
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn sfmc_refusing_the_package_reaches_the_tool_at_authentication() {
    let s = setup().await;
    s.fake.set_auth_failure(Some(AuthFailure::Reject {
        status: 401,
        error: "invalid_client".into(),
        description: "Client authentication failed.".into(),
    }));
    let reply = token_form(
        &s,
        "/v2/token",
        "grant_type=client_credentials&client_id=acme&client_secret=x",
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.proxy_error(), Some("token_rejected"));
    assert_eq!(reply.json()["error"], "invalid_client", "SFMC's own error");
    assert_eq!(
        reply.json()["error_description"],
        "Client authentication failed."
    );
}

#[tokio::test]
async fn with_inbound_keys_the_broker_needs_a_local_secret_and_its_tokens_stand_in_for_the_key() {
    let key = "inbound-key-0123456789";
    let open = Setup::builder()
        .proxy(|p| p.inbound_keys(&[key]))
        .start()
        .await;
    let refused = token_form(
        &open,
        "/v2/token",
        "grant_type=client_credentials&client_id=acme&client_secret=anything",
    )
    .await;
    assert_eq!(refused.status, 401, "no way around the inbound key");
    // A caller without a key learns nothing of which tenants exist …
    let unknown = token_form(
        &open,
        "/v2/token",
        "grant_type=client_credentials&client_id=nosuch&client_secret=anything",
    )
    .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.body, refused.body,
        "the same answer for a known and an unknown tenant"
    );
    assert!(!refused.text().contains("acme"), "{}", refused.text());
    // … while one with the inbound key is told what to configure.
    let keyed = open
        .client
        .post(
            &open.proxy,
            "/v2/token",
            &[("x-proxy-key", key), FORM],
            "grant_type=client_credentials&client_id=acme&client_secret=anything",
        )
        .await;
    assert_eq!(keyed.status, 401);
    assert!(
        keyed.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("broker.client_secrets.acme")),
        "{}",
        keyed.text()
    );

    let s = Setup::builder()
        .proxy(|p| {
            p.inbound_keys(&[key])
                .broker_client_secret("acme", "local-secret-0123456789")
        })
        .start()
        .await;
    let local = local_token(
        &s,
        json!({"grant_type": "client_credentials", "client_id": "acme",
               "client_secret": "local-secret-0123456789"}),
    )
    .await;
    let with_local = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[("authorization", &bearer(&local))])
        .await;
    assert_eq!(
        with_local.status, 200,
        "a local token stands in for the key"
    );
    let without = s.client.get(&s.proxy, "/hub/v1/x", &[]).await;
    assert_eq!(without.proxy_error(), Some("inbound_key_required"));
}

#[tokio::test]
async fn public_url_is_what_the_broker_advertises() {
    let s = Setup::builder()
        .proxy(|p| p.public_url("http://sfmc-proxy.internal:8080"))
        .start()
        .await;
    let reply = token_form(
        &s,
        "/v2/token",
        "grant_type=client_credentials&client_id=acme&client_secret=x",
    )
    .await;
    assert_eq!(
        reply.json()["rest_instance_url"],
        "http://sfmc-proxy.internal:8080/"
    );
    assert_eq!(
        reply.json()["soap_instance_url"],
        "http://sfmc-proxy.internal:8080/"
    );
}

#[tokio::test]
async fn auth_urls_joined_any_way_reach_the_broker_not_sfmc() {
    // FuelSDK-Python posts to `authenticationurl + "/v2/token"` (a trailing
    // slash gives `//v2/token`); a tool may also carry a tenant's prefix.
    let s = Setup::builder()
        .tenant(|t| t.path_prefix("/acme"))
        .start()
        .await;
    for path in ["//v2/token", "/acme/v2/token", "/acme//v2/token"] {
        let reply = token_form(
            &s,
            path,
            "grant_type=client_credentials&client_id=acme&client_secret=x",
        )
        .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert!(
            reply.json()["access_token"]
                .as_str()
                .is_some_and(|t| t.starts_with("sfmcproxy_")),
            "{path}"
        );
    }
    assert_eq!(
        s.fake.rest_requests(),
        0,
        "the tool's credentials never reach SFMC"
    );
}

#[tokio::test]
async fn soap_calls_with_a_local_token_in_fueloauth_get_the_real_token_of_their_business_unit() {
    use crate::support::soap::*;
    let s = setup_with_business_units(&["100", "200"]).await;
    let local = local_token(
        &s,
        json!({"grant_type": "client_credentials", "client_id": "acme",
               "client_secret": "x", "account_id": "200"}),
    )
    .await;
    // As FuelSDK-Python writes it, to the lower-case path it uses.
    let envelope = format!(
        "<soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:etns=\"http://exacttarget.com\"><soap:Header><etns:fueloauth>{local}</etns:fueloauth></soap:Header><soap:Body>{RETRIEVE}</soap:Body></soap:Envelope>"
    );
    let reply = soap(&s, "/service.asmx", envelope.clone()).await;
    assert_answered(&reply, 1);
    let received = received(&s);
    let sent_token = between(
        &received.body,
        &envelope[..envelope.find(&local).expect("token")],
        &envelope[envelope.find(&local).expect("token") + local.len()..],
    );
    assert_issued(&sent_token, 1);
    assert!(!String::from_utf8_lossy(&received.body).contains(&local));
    assert!(
        reply.text().contains(">200<"),
        "the bound MID: {}",
        reply.text()
    );
    assert_eq!(s.fake.token_requests(), 1);
}

/// With a UTF-8 byte order mark before the envelope (.NET tools), the local
/// token is read from the right bytes and replaced there.
#[tokio::test]
async fn a_local_token_in_an_envelope_with_a_bom_is_resolved_and_replaced() {
    use crate::support::soap::*;
    let s = setup_with_business_units(&["100", "200"]).await;
    let local = local_token(
        &s,
        json!({"grant_type": "client_credentials", "client_id": "acme",
               "client_secret": "x", "account_id": "200"}),
    )
    .await;
    let before = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{SOAP11}\"><soap:Header>{FUEL_OPEN}"
    );
    let after =
        format!("</fueloauth></soap:Header><soap:Body>{RETRIEVE}</soap:Body></soap:Envelope>");
    let reply = soap(&s, "/Service.asmx", format!("{before}{local}{after}")).await;
    assert_answered(&reply, 1);
    assert_eq!(field(&reply, "fake:AccountId"), "200", "the bound MID");
    let sent_token = between(&received(&s).body, &before, &after);
    assert_issued(&sent_token, 1);
    assert_eq!(s.fake.token_requests(), 1);
}

#[tokio::test]
async fn stale_local_tokens_get_the_answers_tools_reauthenticate_on() {
    use crate::support::soap::*;
    let s = setup().await;
    let stale = "sfmcproxy_00000000000000000000000000000000";
    let rest = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[("authorization", &bearer(stale))])
        .await;
    assert_eq!(rest.status, 401);
    let challenge = rest.headers["www-authenticate"].to_str().expect("text");
    assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""));
    let fault = soap(
        &s,
        "/Service.asmx",
        envelope(&format!("<s:Header>{}</s:Header>", fuel(stale))),
    )
    .await;
    assert_proxy_fault(&fault, 500, "local_token_invalid", "soap:Security");
    assert_eq!(field(&fault, "faultstring"), "Token Expired");
    assert_eq!(s.fake.soap_requests(), 0);
    assert_eq!(s.fake.token_requests(), 0);
}

/// A tool that authenticates before every call gets the one live token back
/// each time, not a new entry in the proxy's table per call.
#[tokio::test]
async fn a_thousand_identical_token_requests_share_one_local_token() {
    let s = setup().await;
    let body = json!({"grant_type": "client_credentials", "client_id": "acme",
                      "client_secret": "x", "account_id": "100", "scope": "email_read"});
    let first = local_token(&s, body.clone()).await;
    for _ in 0..999 {
        assert_eq!(local_token(&s, body.clone()).await, first);
    }
    let other = local_token(
        &s,
        json!({"grant_type": "client_credentials",
        "client_id": CLIENT_ID, "client_secret": "x", "account_id": "100", "scope": "email_read"}),
    )
    .await;
    assert_ne!(other, first, "another client id has its own");
    assert_eq!(s.fake.token_requests(), 1);
    let reply = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[("authorization", &bearer(&first))])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}
