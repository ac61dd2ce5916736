//! Per-tenant policy end to end: `deny_paths` > `allow_paths` > `read_only`,
//! decided before a token is fetched (a refusal costs SFMC nothing), on a
//! normalised copy of the path while SFMC receives it byte for byte; SOAP
//! reads told by the Body's one element, refusals as SOAP faults.

use bytes::Bytes;
use serde_json::json;

use crate::support::soap::*;
use crate::support::*;

/// The fake's counters: (token requests, REST requests, SOAP requests).
fn seen(s: &Setup) -> (usize, usize, usize) {
    (
        s.fake.token_requests(),
        s.fake.rest_requests(),
        s.fake.soap_requests(),
    )
}

async fn send(s: &Setup, method: &str, path: &str) -> Reply {
    let body = if method == "GET" || method == "HEAD" {
        empty()
    } else {
        full(r#"{"items":[]}"#)
    };
    s.client
        .fetch(request(method, &s.proxy, path, &[], body))
        .await
}

/// A refusal by the policy: 403, the proxy's code, the tenant and the rule.
fn assert_refused(reply: &Reply, rule: &str) {
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.proxy_error(), Some("method_not_allowed"));
    let json = reply.json();
    assert_eq!(json["tenant"], "acme", "{json}");
    assert_eq!(json["rule"], rule, "{json}");
}

#[tokio::test]
async fn a_read_only_tenant_refuses_writes_before_any_token_is_fetched() {
    let s = Setup::builder().tenant(|t| t.read_only(true)).start().await;
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let reply = send(&s, method, "/hub/v1/dataevents/key:DE/rowset").await;
        assert_refused(&reply, "read_only");
        assert!(
            reply.message().starts_with(&format!(
                "tenant `acme` is read_only: {method} /hub/v1/dataevents/key:DE/rowset refused"
            )) && reply.message().contains("tenants.acme.read_only = false"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(
        seen(&s),
        (0, 0, 0),
        "a refusal costs no token, reaches nothing"
    );
    for method in ["GET", "HEAD", "OPTIONS"] {
        let reply = send(&s, method, "/hub/v1/dataevents/key:DE/rowset").await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
        assert_eq!(reply.proxy_error(), None);
    }
    assert_eq!(seen(&s), (1, 3, 0));
    // A read that asks SFMC to act as another method is no read.
    let overridden = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("x-http-method-override", "DELETE")],
        )
        .await;
    assert_refused(&overridden, "read_only");
    assert_eq!(seen(&s), (1, 3, 0));
}

#[tokio::test]
async fn deny_beats_allow_beats_read_only_however_the_path_is_spelt() {
    let s = Setup::builder()
        .tenant(|t| {
            t.read_only(true)
                .allow_paths(&["/data/v1/async"])
                .deny_paths(&["/data/v1/async/dataextensions/key:Audit"])
        })
        .start()
        .await;
    let refused = [
        ("POST", "/asset/v1/content/assets", "read_only"),
        (
            "GET",
            "/data/v1/async/dataextensions/key:Audit/rows",
            "deny_paths",
        ),
        (
            "DELETE",
            "/DATA/v1//async/dataextensions/KEY%3aaudit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/x/%2e%2e/dataextensions/key:Audit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions%2Fkey:Audit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions\\key:Audit/rows",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions;v=1/key:Audit",
            "deny_paths",
        ),
        ("POST", "/data/v1/async/%2e%2e/%2e%2e/hub/v1/x", "read_only"),
        ("POST", "/data/v1/async/..;/..;/hub/v1/x", "read_only"),
        ("POST", "/hub/x/../../data/v1/async/rows", "read_only"),
        ("POST", "/data%2Fv1%2Fasync/rows", "read_only"),
        ("GET", "/data/v1/async/%252e%252e/x", "deny_paths"),
    ];
    for (method, path, rule) in refused {
        let reply = send(&s, method, path).await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text());
        assert_refused(&reply, rule);
    }
    assert_eq!(seen(&s), (0, 0, 0));
    let passed = [
        ("POST", "/data/v1/async/dataextensions/key:Orders/rows"),
        ("PUT", "/data/v1/async"),
        ("GET", "/asset/v1/content/assets"),
    ];
    for (method, path) in passed {
        let reply = send(&s, method, path).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
        assert_eq!(reply.json()["method"], method);
    }
    assert_eq!(seen(&s), (1, 3, 0));
}

#[tokio::test]
async fn allow_paths_alone_is_an_allowlist_and_deny_paths_alone_a_blocklist() {
    let s = Setup::builder()
        .tenant(|t| t.allow_paths(&["/hub/v1/dataevents"]))
        .start()
        .await;
    let allowed = send(&s, "POST", "/hub/v1/dataevents/key:DE/rowset").await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let other = send(&s, "GET", "/asset/v1/content/assets").await;
    assert_refused(&other, "allow_paths");
    assert!(
        other.message().contains("`/hub/v1/dataevents`"),
        "{}",
        other.message()
    );

    let s = Setup::builder()
        .tenant(|t| t.deny_paths(&["/messaging"]))
        .start()
        .await;
    assert_refused(
        &send(&s, "GET", "/messaging/v1/email/messages").await,
        "deny_paths",
    );
    let elsewhere = send(&s, "DELETE", "/hub/v1/dataevents/key:DE").await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
}

#[tokio::test]
async fn an_allowed_odd_path_reaches_sfmc_byte_for_byte() {
    let s = Setup::builder()
        .tenant(|t| t.read_only(true).allow_paths(&["/data/v1/async"]))
        .start()
        .await;
    for path in [
        "/DATA/v1//async/%2e/dataextensions/key:My%20DE;v=1/rows",
        "/data/v1/async/x/../dataextensions/key%3AMy%20DE/rows",
        "/data/v1/async/%2E%2E%2Fasync/rows",
    ] {
        let reply = s
            .client
            .post(&s.proxy, &format!("{path}?$page=1&a=%2F"), &[], "{}")
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let echo = reply.json();
        assert_eq!(echo["method"], "POST", "{path}");
        assert_eq!(echo["path"], path, "the path as sent, not as matched");
        assert_eq!(echo["query"], "$page=1&a=%2F");
    }
}

#[tokio::test]
async fn the_policy_sees_the_path_after_the_tenant_prefix() {
    let s = Setup::builder()
        .tenant(|t| t.path_prefix("/acme").deny_paths(&["/hub"]))
        .start()
        .await;
    assert_refused(
        &send(&s, "GET", "/acme/hub/v1/campaigns").await,
        "deny_paths",
    );
    assert_refused(&send(&s, "GET", "/acme//HUB/v1").await, "deny_paths");
    let other = send(&s, "GET", "/acme/asset/v1/content/assets").await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.json()["path"], "/asset/v1/content/assets");
}

#[tokio::test]
async fn admin_paths_and_the_broker_are_not_subject_to_the_policy() {
    let s = Setup::builder()
        .tenant(|t| t.read_only(true).deny_paths(&["/"]))
        .start()
        .await;
    let health = s.client.get(&s.proxy, "/_proxy/health", &[]).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let token = s
        .client
        .post(
            &s.proxy,
            "/v2/token",
            &[("content-type", "application/json")],
            json!({"grant_type": "client_credentials", "client_id": "acme", "client_secret": "x"})
                .to_string(),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.text());
    // A request with the broker's local token is the tenant's, and refused.
    let local = token.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let with_local = s
        .client
        .get(
            &s.proxy,
            "/hub/v1/x",
            &[("authorization", &format!("Bearer {local}"))],
        )
        .await;
    assert_refused(&with_local, "deny_paths");
    assert_eq!(s.fake.rest_requests(), 0);
}

/// A SOAP 1.1 envelope whose Body holds `operation`.
fn envelope_with(header: &str, operation: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<s:Envelope xmlns:s=\"{SOAP11}\">{header}<s:Body>{operation}</s:Body></s:Envelope>"
    )
}

const PARTNER: &str = "http://exacttarget.com/wsdl/partnerAPI";

fn create() -> String {
    format!(
        "<CreateRequest xmlns=\"{PARTNER}\"><Objects xsi:type=\"Subscriber\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><EmailAddress>a@example.com</EmailAddress></Objects></CreateRequest>"
    )
}

async fn soap_with(s: &Setup, action: &str, body: impl Into<Bytes>) -> Reply {
    let headers = [
        ("content-type", "text/xml; charset=utf-8"),
        ("soapaction", action),
    ];
    s.client
        .post(&s.proxy, "/Service.asmx", &headers, body)
        .await
}

#[tokio::test]
async fn soap_retrieve_and_describe_pass_a_read_only_tenant_and_create_is_a_fault() {
    let s = Setup::builder().tenant(|t| t.read_only(true)).start().await;
    let fault = soap_with(&s, "Create", envelope_with("", &create())).await;
    assert_proxy_fault(&fault, 403, "method_not_allowed", "soap:Client");
    assert!(
        field(&fault, "faultstring").contains("tenant `acme` is read_only"),
        "{}",
        fault.text()
    );
    assert_eq!(field(&fault, "rule"), "read_only");
    // Told by the Body, not by SOAPAction: a Create that claims to be a Retrieve.
    let disguised = soap_with(&s, "Retrieve", envelope_with("", &create())).await;
    assert_proxy_fault(&disguised, 403, "method_not_allowed", "soap:Client");
    assert!(
        field(&disguised, "faultstring").contains("SOAP CreateRequest"),
        "{}",
        disguised.text()
    );
    // And by SOAPAction too: a Retrieve body sent as an Update.
    let action = soap_with(&s, "Update", envelope("")).await;
    assert_proxy_fault(&action, 403, "method_not_allowed", "soap:Client");
    assert_eq!(seen(&s), (0, 0, 0), "no token fetched, nothing sent");

    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
    let describe = format!(
        "<DefinitionRequestMsg xmlns=\"{PARTNER}\"><DescribeRequests><ObjectDefinitionRequest><ObjectType>Subscriber</ObjectType></ObjectDefinitionRequest></DescribeRequests></DefinitionRequestMsg>"
    );
    let described = soap_with(&s, "Describe", envelope_with("", &describe)).await;
    assert_eq!(described.status, 200, "{}", described.text());
    assert_eq!(field(&described, "fake:Operation"), "DefinitionRequestMsg");
    assert_eq!(seen(&s), (1, 0, 2));
}

#[tokio::test]
async fn a_soap_operation_is_read_namespace_aware_and_refused_when_it_cannot_be_told() {
    let s = Setup::builder().tenant(|t| t.read_only(true)).start().await;
    let fuel_header = format!("<s:Header>{}</s:Header>", fuel("x"));
    let passes = [
        // Comments, whitespace and a processing instruction before it.
        envelope_with(
            &fuel_header,
            &format!("\n <!-- first --> <?pi x?>\n{RETRIEVE}"),
        ),
        // A prefixed operation element, its namespace declared on the Envelope.
        format!(
            "<soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:et=\"{PARTNER}\"><soap:Body><et:RetrieveRequestMsg><et:RetrieveRequest><et:ObjectType>Subscriber</et:ObjectType></et:RetrieveRequest></et:RetrieveRequestMsg></soap:Body></soap:Envelope>"
        ),
    ];
    for body in passes {
        let reply = soap(&s, "/Service.asmx", body.clone()).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text());
    }
    let before = seen(&s);
    let refused = [
        // Another namespace's element first, however it is named.
        envelope_with("", &format!("<x:Note xmlns:x=\"urn:x\"/>{RETRIEVE}")),
        envelope_with("", "<RetrieveRequestMsg xmlns=\"urn:other\"/>"),
        envelope_with("", "<RetrieveRequestMsg/>"),
        // A Body in another namespace before the SOAP one.
        format!(
            "<s:Envelope xmlns:s=\"{SOAP11}\"><b:Body xmlns:b=\"urn:b\">{RETRIEVE}</b:Body><s:Body>{}</s:Body></s:Envelope>",
            create()
        ),
        // A Create after the Retrieve, in the Body or in a second Body.
        envelope_with("", &format!("{RETRIEVE}{}", create())),
        format!(
            "<s:Envelope xmlns:s=\"{SOAP11}\"><s:Body>{RETRIEVE}</s:Body><s:Body>{}</s:Body></s:Envelope>",
            create()
        ),
        // Text before the operation, an empty Body, a DTD, a cut envelope.
        envelope_with("", &format!("x{RETRIEVE}")),
        envelope_with("", ""),
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE s:Envelope><s:Envelope xmlns:s=\"{SOAP11}\"><s:Body>{RETRIEVE}</s:Body></s:Envelope>"
        ),
        format!("<s:Envelope xmlns:s=\"{SOAP11}\"><s:Header></s:Header><s:Bo"),
    ];
    for body in refused {
        let reply = soap(&s, "/Service.asmx", body.clone()).await;
        assert_eq!(reply.status, 403, "{body}: {}", reply.text());
        assert_eq!(reply.proxy_error(), Some("method_not_allowed"), "{body}");
    }
    assert_eq!(seen(&s), before, "nothing refused reached SFMC");
}

#[tokio::test]
async fn a_soap_envelope_with_a_large_streamed_header_is_read_whole_to_tell_its_operation() {
    let s = Setup::builder()
        .tenant(|t| t.read_only(true))
        .proxy(|p| p.soap_header_limit(512 * 1024))
        .start()
        .await;
    let header = format!(
        "<s:Header>{}<pad>{}</pad></s:Header>",
        fuel("x"),
        "p".repeat(300 * 1024)
    );
    for (operation, status) in [(RETRIEVE.to_owned(), 200), (create(), 403)] {
        let body = envelope_with(&header, &operation);
        let (mut tx, streamed) = channel_body();
        let req = request("POST", &s.proxy, "/Service.asmx", &XML, streamed);
        let client = s.client.clone();
        let reply = tokio::spawn(async move { client.fetch(req).await });
        for chunk in body.as_bytes().chunks(16 * 1024) {
            tx.send_data(Bytes::copy_from_slice(chunk))
                .await
                .expect("send");
        }
        drop(tx);
        let reply = reply.await.expect("reply");
        assert_eq!(reply.status, status, "{}", reply.text());
    }
    assert_eq!(s.fake.soap_requests(), 1);
    let received = received(&s);
    assert!(
        received
            .body
            .ends_with(format!("{RETRIEVE}</s:Body></s:Envelope>").as_bytes())
    );
    // An envelope larger than soap.header_limit cannot be told: refused.
    let near = format!("<s:Header><pad>{}</pad></s:Header>", "p".repeat(500 * 1024));
    let late = format!("<!--{}-->{RETRIEVE}", "c".repeat(20 * 1024));
    let reply = soap(&s, "/Service.asmx", envelope_with(&near, &late)).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("soap.header_limit"),
        "{}",
        reply.text()
    );
    assert_eq!(s.fake.soap_requests(), 1);
}

#[tokio::test]
async fn soap_follows_the_path_rules_too() {
    let s = Setup::builder()
        .tenant(|t| t.read_only(true).allow_paths(&["/Service.asmx"]))
        .start()
        .await;
    let created = soap_with(&s, "Create", envelope_with("", &create())).await;
    assert_eq!(created.status, 200, "allowed: {}", created.text());
    assert_eq!(field(&created, "fake:Operation"), "CreateRequest");

    let s = Setup::builder()
        .tenant(|t| t.deny_paths(&["/service.asmx"]))
        .start()
        .await;
    let denied = soap(&s, "/Service.asmx", envelope("")).await;
    assert_proxy_fault(&denied, 403, "method_not_allowed", "soap:Client");
    assert_eq!(field(&denied, "rule"), "deny_paths");

    let s = Setup::builder()
        .tenant(|t| t.allow_paths(&["/hub"]))
        .start()
        .await;
    let not_listed = soap(&s, "/Service.asmx", envelope("")).await;
    assert_proxy_fault(&not_listed, 403, "method_not_allowed", "soap:Client");
    assert_eq!(seen(&s), (0, 0, 0));
}

#[tokio::test]
async fn a_keyless_soap_call_with_a_local_token_meets_the_policy_too() {
    let key = "inbound-key-0123456789";
    let s = Setup::builder()
        .proxy(|p| {
            p.inbound_keys(&[key])
                .broker_client_secret("acme", "local-secret-0123456789")
        })
        .tenant(|t| t.read_only(true))
        .start()
        .await;
    let token = s
        .client
        .post(
            &s.proxy,
            "/v2/token",
            &[("content-type", "application/json")],
            json!({"grant_type": "client_credentials", "client_id": "acme",
                   "client_secret": "local-secret-0123456789"})
            .to_string(),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let local = token.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let header = format!("<s:Header>{}</s:Header>", fuel(&local));
    let fault = soap_with(&s, "Create", envelope_with(&header, &create())).await;
    assert_proxy_fault(&fault, 403, "method_not_allowed", "soap:Client");
    assert_eq!(s.fake.soap_requests(), 0);
    let read = soap(&s, "/Service.asmx", envelope_with(&header, RETRIEVE)).await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(s.fake.soap_requests(), 1);
}
