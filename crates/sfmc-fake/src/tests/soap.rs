//! The fake's SOAP endpoint on its own, driven by a plain HTTP client.

use std::time::Duration;

use http::HeaderValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Got, creds, fetch, full, get, req, start, token};
use crate::{FakeConfig, FakeTenant, hex, reply_field};

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// An envelope whose Header is `header` (none when `None`), retrieving `object`.
fn envelope(header: Option<&str>, object: &str) -> String {
    let header = header.map_or(String::new(), |h| format!("<s:Header>{h}</s:Header>"));
    format!(
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"{SOAP11}\">{header}<s:Body><RetrieveRequestMsg xmlns=\"http://exacttarget.com/wsdl/partnerAPI\"><RetrieveRequest><ObjectType>{object}</ObjectType><Properties>EmailAddress</Properties></RetrieveRequest></RetrieveRequestMsg></s:Body></s:Envelope>"
    )
}

fn fuel(token: &str) -> String {
    format!("<fueloauth xmlns=\"http://exacttarget.com\">{token}</fueloauth>")
}

async fn soap(fake: &FakeTenant, path: &str, body: &str) -> Got {
    let headers = [("content-type", "text/xml"), ("soapaction", "Retrieve")];
    fetch(req(fake, "POST", path, &headers, full(body))).await
}

async fn token_text(fake: &FakeTenant, body: &Value) -> String {
    let reply = token(fake, body).await.json();
    reply["access_token"].as_str().expect("token").to_owned()
}

/// A Retrieve envelope carrying a newly issued token.
async fn with_new_token(fake: &FakeTenant) -> String {
    envelope(Some(&fuel(&token_text(fake, &creds()).await)), "Subscriber")
}

/// Posts `body`, expecting a fault with this faultstring.
async fn assert_refused(fake: &FakeTenant, body: &str, faultstring: &str, context: &str) {
    assert_fault(
        &soap(fake, "/Service.asmx", body).await,
        faultstring,
        context,
    );
}

fn field(got: &Got, name: &str) -> String {
    let xml = String::from_utf8_lossy(&got.2);
    reply_field(&xml, name).unwrap_or_else(|| panic!("no <{name}> in {xml}"))
}

/// A fault from the fake: HTTP 500, SOAP content type, this faultstring.
fn assert_fault(got: &Got, faultstring: &str, context: &str) {
    assert_eq!(got.0, 500, "{context}");
    assert_eq!(got.1["content-type"], "text/xml; charset=utf-8");
    assert_eq!(field(got, "faultstring"), faultstring, "{context}");
}

#[tokio::test]
async fn valid_fueloauth_in_any_prefix_or_place_gets_a_retrieve_response() {
    let fake = start(FakeConfig::default()).await;
    let mut body = creds();
    body["account_id"] = json!("200");
    let token = token_text(&fake, &body).await;
    let prefixed = format!(
        "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:etns=\"http://exacttarget.com\"><soap:Header><etns:fueloauth>{token}</etns:fueloauth></soap:Header><soap:Body><RetrieveRequestMsg><RetrieveRequest><ObjectType>DataExtensionObject[Key]</ObjectType></RetrieveRequest></RetrieveRequestMsg></soap:Body></soap:Envelope>"
    );
    let local = envelope(
        Some(&format!(
            "<h:fueloauth xmlns:h=\"http://exacttarget.com\">\n {token} </h:fueloauth>"
        )),
        "DataExtensionObject[Key]",
    );
    let after_body = format!(
        "<Envelope xmlns=\"http://www.w3.org/2003/05/soap-envelope\"><Body><RetrieveRequestMsg><RetrieveRequest><ObjectType>DataExtensionObject[Key]</ObjectType></RetrieveRequest></RetrieveRequestMsg></Body><Header>{}</Header></Envelope>",
        fuel(&format!("<![CDATA[{token}]]>"))
    );
    for (path, body) in [
        ("/Service.asmx", prefixed),
        ("/service.asmx", local),
        ("/SERVICE.ASMX", after_body),
    ] {
        let got = soap(&fake, path, &body).await;
        assert_eq!(got.0, 200, "{path}: {}", String::from_utf8_lossy(&got.2));
        assert_eq!(got.1["content-type"], "text/xml; charset=utf-8");
        assert_eq!(field(&got, "OverallStatus"), "OK");
        assert_eq!(field(&got, "RequestID").len(), 32);
        let xml = String::from_utf8_lossy(&got.2);
        assert_eq!(
            xml.matches(
                "<Results xsi:type=\"DataExtensionObject[Key]\"><Client><ID>200</ID></Client>"
            )
            .count(),
            2,
            "{xml}"
        );
        assert_eq!(field(&got, "fake:TokenNumber"), "1");
        assert_eq!(field(&got, "fake:AccountId"), "200");
        assert_eq!(field(&got, "fake:Operation"), "RetrieveRequestMsg");
        assert_eq!(field(&got, "fake:SoapAction"), "Retrieve");
        assert_eq!(field(&got, "fake:BodyLength"), body.len().to_string());
        assert_eq!(field(&got, "fake:BodySha256"), hex(&Sha256::digest(&body)));
        let seen = fake.last_soap_request().expect("recorded");
        assert_eq!(
            (seen.path_and_query.as_str(), &seen.body[..]),
            (path, body.as_bytes())
        );
        assert_eq!(seen.headers["soapaction"], "Retrieve");
    }
    assert_eq!((fake.soap_requests(), fake.rest_requests()), (3, 0));
}

#[tokio::test]
async fn missing_unknown_revoked_misplaced_or_doubled_tokens_fail_login() {
    let fake = start(FakeConfig::default()).await;
    let token = token_text(&fake, &creds()).await;
    let other_ns = format!("<fueloauth xmlns=\"urn:other\">{token}</fueloauth>");
    let nested = format!("<x>{}</x>", fuel(&token));
    let doubled = format!("{}{}", fuel(&token), fuel(&token));
    let in_body = format!(
        "<s:Envelope xmlns:s=\"{SOAP11}\"><s:Body>{}</s:Body></s:Envelope>",
        fuel(&token)
    );
    let cases = [
        ("no header", envelope(None, "Subscriber")),
        ("empty", envelope(Some(&fuel("")), "Subscriber")),
        (
            "unknown",
            envelope(Some(&fuel("fake-1-unknown")), "Subscriber"),
        ),
        ("another namespace", envelope(Some(&other_ns), "Subscriber")),
        ("nested", envelope(Some(&nested), "Subscriber")),
        ("doubled", envelope(Some(&doubled), "Subscriber")),
        ("in the body", in_body),
    ];
    for (case, body) in &cases {
        assert_refused(&fake, body, "Login failed", case).await;
    }
    let valid = envelope(Some(&fuel(&token)), "Subscriber");
    assert_eq!(soap(&fake, "/Service.asmx", &valid).await.0, 200);
    fake.revoke_all_tokens();
    let got = soap(&fake, "/Service.asmx", &valid).await;
    assert_fault(&got, "Login failed", "revoked");
    assert!(String::from_utf8_lossy(&got.2).contains(">q0:Security</faultcode>"));
}

#[tokio::test(start_paused = true)]
async fn expired_tokens_get_token_expired() {
    let fake = start(FakeConfig {
        expires_in: 60,
        ..FakeConfig::default()
    })
    .await;
    let first = with_new_token(&fake).await;
    assert_eq!(soap(&fake, "/Service.asmx", &first).await.0, 200);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_refused(&fake, &first, "Token Expired", "lifetime").await;
    let second = with_new_token(&fake).await;
    assert_eq!(soap(&fake, "/Service.asmx", &second).await.0, 200);
    fake.expire_all_tokens();
    assert_refused(&fake, &second, "Token Expired", "early").await;
    let auth = format!("Bearer {}", token_text(&fake, &creds()).await);
    assert_eq!(
        get(&fake, "/hub/v1/x", &auth).await.0,
        200,
        "a new token is valid"
    );
}

#[tokio::test]
async fn rate_limited_on_demand_and_bad_bodies_are_faults() {
    let fake = start(FakeConfig::default()).await;
    let valid = with_new_token(&fake).await;
    fake.set_soap_rate_limited(true);
    assert_refused(&fake, &valid, "Rate Limited", "on").await;
    fake.set_soap_rate_limited(false);
    assert_eq!(soap(&fake, "/Service.asmx", &valid).await.0, 200);
    for (case, body) in [
        (
            "malformed",
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body></x>",
        ),
        ("not soap", "<Envelope><Body><x/></Body></Envelope>"),
        ("json", "{\"a\":1}"),
        ("truncated", &valid[..valid.len() - 5]),
    ] {
        let got = soap(&fake, "/Service.asmx", body).await;
        assert_eq!(got.0, 500, "{case}");
        assert!(field(&got, "faultstring").starts_with("Server was unable to read request."));
        assert!(String::from_utf8_lossy(&got.2).contains(">soap:Client</faultcode>"));
    }
    let got = get(&fake, "/Service.asmx", "").await;
    assert_eq!(
        (got.0, &got.1["allow"]),
        (405, &HeaderValue::from_static("POST"))
    );
    assert_eq!((fake.soap_requests(), fake.rest_requests()), (6, 0));
}
