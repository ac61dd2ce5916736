//! SOAP faults through the proxy: SFMC's token faults answered by one fresh
//! token and one replay, its other faults passed on untouched, and the proxy's
//! own errors on a SOAP call answered as SOAP 1.1 faults rather than JSON.

use bytes::Bytes;

use crate::support::soap::*;
use crate::support::*;

type Header = (&'static str, &'static str);

/// An envelope whose Header follows the Body (held whole by the proxy).
fn header_after_body(body: &str) -> String {
    format!(
        "<soap:Envelope xmlns:soap=\"{SOAP11}\"><soap:Body>{body}</soap:Body><soap:Header>{}</soap:Header></soap:Envelope>",
        fuel("*")
    )
}

/// What the fake answers when sent `body` directly, bypassing the proxy.
async fn direct(s: &Setup, body: Bytes) -> Reply {
    let uri = format!("{}Service.asmx", s.fake.auth_url());
    let req = http::Request::post(uri).header("content-type", "text/xml");
    s.client.fetch(req.body(full(body)).expect("request")).await
}

#[tokio::test]
async fn token_expired_and_login_failed_get_a_fresh_token_and_one_replay() {
    let header_first = envelope(&format!("<s:Header>{}</s:Header>", fuel("*")));
    let cases = [
        ("Token Expired, Header first", header_first.clone(), true),
        (
            "Token Expired, Header after Body",
            header_after_body(RETRIEVE),
            true,
        ),
        ("Login failed", header_first, false),
    ];
    // A proxy each: a key's token is dropped after a refusal at most every 30 s.
    for (case, sent, expire) in cases {
        let s = setup().await;
        assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
        match expire {
            true => s.fake.expire_all_tokens(),
            false => s.fake.revoke_all_tokens(),
        }
        let soap_requests = s.fake.soap_requests();
        let reply = soap(&s, "/Service.asmx", sent.clone()).await;
        assert_answered(&reply, 2);
        assert_eq!(s.fake.token_requests(), 2, "{case}: exactly one new token");
        assert_eq!(
            s.fake.soap_requests(),
            soap_requests + 2,
            "{case}: one replay"
        );
        let (before, after) = sent.split_once('*').expect("placeholder");
        assert_issued(&between(&received(&s).body, before, after), 2);
        assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 2);
        assert_eq!(
            s.fake.token_requests(),
            2,
            "{case}: the new token is cached"
        );
    }
}

/// A small envelope is replayable however it arrives: here in two HTTP/2
/// DATA frames, the first ending with the Header.
#[tokio::test]
async fn small_envelope_sent_in_pieces_is_replayed_too() {
    let s = setup().await;
    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
    s.fake.expire_all_tokens();
    let sent = envelope(&format!("<s:Header>{}</s:Header>", fuel("*")));
    let (head, tail) = sent.split_at(sent.find("<s:Body>").expect("body"));
    let (mut tx, body) = channel_body();
    let length = sent.len().to_string();
    let headers = [XML[0], XML[1], ("content-length", length.as_str())];
    let req = request("POST", &s.proxy, "/Service.asmx", &headers, body);
    let client = TestClient::http2();
    let pending = tokio::spawn(async move { client.fetch(req).await });
    for piece in [head, tail] {
        tx.send_data(Bytes::from(piece.to_owned()))
            .await
            .expect("send");
    }
    drop(tx);
    assert_answered(&pending.await.expect("task"), 2);
    assert_eq!((s.fake.token_requests(), s.fake.soap_requests()), (2, 3));
}

#[tokio::test]
async fn rate_limited_fault_passes_through_untouched_without_replay() {
    let s = setup().await;
    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
    s.fake.set_soap_rate_limited(true);
    let reply = soap(&s, "/Service.asmx", envelope("")).await;
    assert_eq!((reply.status, reply.proxy_error()), (500, None));
    assert_eq!(field(&reply, "faultstring"), "Rate Limited");
    let untouched = direct(&s, received(&s).body).await;
    assert_eq!(
        (&reply.body, &reply.headers["content-type"]),
        (&untouched.body, &untouched.headers["content-type"])
    );
    assert_eq!(
        (s.fake.token_requests(), s.fake.soap_requests()),
        (1, 3),
        "no replay"
    );
    s.fake.set_soap_rate_limited(false);
    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
    assert_eq!(s.fake.token_requests(), 1, "the token was not dropped");
}

#[tokio::test]
async fn token_fault_over_the_replay_limit_passes_through_and_the_next_call_gets_a_fresh_token() {
    let s = Setup::builder()
        .proxy(|p| p.replay_body_limit(1024))
        .start()
        .await;
    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
    s.fake.expire_all_tokens();
    let big = header_after_body(&RETRIEVE.repeat(8));
    assert!(big.len() > 1024);
    let reply = soap(&s, "/Service.asmx", big).await;
    assert_eq!((reply.status, reply.proxy_error()), (500, None));
    assert_eq!(field(&reply, "faultstring"), "Token Expired");
    assert_eq!(
        (s.fake.token_requests(), s.fake.soap_requests()),
        (1, 2),
        "no replay"
    );
    assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 2);
}

#[tokio::test]
async fn bad_envelopes_get_a_client_fault_from_the_proxy() {
    let s = Setup::builder()
        .proxy(|p| p.soap_header_limit(1024))
        .start()
        .await;
    let filler = "<Properties>EmailAddress</Properties>".repeat(128);
    let late_header = header_after_body(&filler);
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "malformed",
            "identity",
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Header></s:Body>",
            "not well-formed",
        ),
        (
            "not an envelope",
            "identity",
            RETRIEVE,
            "not a SOAP envelope",
        ),
        ("JSON", "identity", "{\"items\":[]}", "not a SOAP envelope"),
        ("empty", "identity", "", "not a SOAP envelope"),
        (
            "gzip",
            "gzip",
            "\u{1f}\u{8b}\u{8}\u{0}",
            "Content-Encoding `gzip`",
        ),
        (
            "Header after 4 KiB",
            "identity",
            &late_header,
            "soap.header_limit",
        ),
    ];
    for (case, encoding, body, says) in cases {
        let headers = [XML[0], XML[1], ("content-encoding", encoding)];
        let reply = s
            .client
            .post(&s.proxy, "/Service.asmx", &headers, body.to_owned())
            .await;
        assert_proxy_fault(&reply, 400, "bad_request", "soap:Client");
        assert!(
            field(&reply, "faultstring").contains(says),
            "{case}: {}",
            reply.text()
        );
    }
    assert_eq!((s.fake.soap_requests(), s.fake.token_requests()), (0, 0));
    let header_first = envelope(&format!("<s:Header>{}</s:Header>", fuel("*")));
    let big_body =
        header_first.replace("</RetrieveRequest>", &format!("{filler}</RetrieveRequest>"));
    assert_answered(&soap(&s, "/Service.asmx", big_body).await, 1);
}

#[tokio::test]
async fn token_fetch_failures_are_soap_faults_with_the_same_information() {
    let s = setup().await;
    s.fake.set_auth_failure(Some(invalid_client()));
    let reply = soap(&s, "/Service.asmx", envelope("")).await;
    assert_proxy_fault(&reply, 502, "token_rejected", "soap:Server");
    assert_eq!(field(&reply, "sfmc_error"), "invalid_client");
    assert!(field(&reply, "sfmc_error_description").starts_with("Invalid client ID"));
    assert!(field(&reply, "faultstring").contains("client_id and client_secret"));
    assert!(reply.headers.contains_key("retry-after"));
    assert!(!reply.text().contains(CLIENT_SECRET));

    let outage = setup().await;
    outage.fake.set_auth_failure(Some(AuthFailure::ServerError));
    let reply = soap(&outage, "/service.asmx", envelope("")).await;
    assert_proxy_fault(&reply, 503, "token_unavailable", "soap:Server");
    assert_eq!(s.fake.soap_requests() + outage.fake.soap_requests(), 0);
}

/// Errors found before the request is routed (guard, selectors) are faults too
/// on a SOAP call: a SOAP client reads a Fault, not JSON.
#[tokio::test]
async fn guard_and_selector_errors_on_a_soap_call_are_soap_faults_too() {
    let s = Setup::builder()
        .proxy(|p| p.inbound_keys(&["inbound-key-0123456789"]))
        .tenant(|t| t.path_prefix("/acme").account_ids(&["100"]))
        .start()
        .await;
    let key = ("x-proxy-key", "inbound-key-0123456789");
    // (path, extra headers, status, code)
    let cases: [(&str, &[Header], u16, &str); 4] = [
        (
            "/Service.asmx",
            &[key, ("x-sfmc-account-id", "999")],
            403,
            "account_not_allowed",
        ),
        (
            "/acme/service.asmx",
            &[key, ("x-sfmc-tenant", "nope")],
            400,
            "bad_request",
        ),
        (
            "/Service.asmx",
            &[key, ("x-sfmc-tenant", "nope")],
            400,
            "unknown_tenant",
        ),
        ("/Service.asmx", &[], 401, "inbound_key_required"),
    ];
    for (path, extra, status, code) in cases {
        let headers: Vec<_> = XML.iter().chain(extra).copied().collect();
        let reply = s.client.post(&s.proxy, path, &headers, envelope("")).await;
        assert_proxy_fault(&reply, status, code, "soap:Client");
    }
    let rest = s
        .client
        .get(&s.proxy, "/hub/v1/x", &[key, ("x-sfmc-account-id", "999")])
        .await;
    assert_eq!(
        (rest.status, rest.json()["error"].as_str()),
        (403, Some("account_not_allowed"))
    );
    assert_eq!(s.fake.soap_requests() + s.fake.token_requests(), 0);
}

/// An envelope the proxy cannot edit byte for byte is refused with a Client
/// fault that says why, before any token is fetched: never a misplaced edit.
#[tokio::test]
async fn envelopes_in_encodings_that_cannot_be_edited_exactly_get_a_client_fault_saying_why() {
    let s = setup().await;
    let plain = envelope(&format!("<s:Header>{}</s:Header>", fuel("*")));
    let utf16: Vec<u8> = plain.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let declared = plain.replace("encoding=\"UTF-8\"", "encoding=\"utf-16\"");
    let cases: [(&str, &str, Vec<u8>, &str); 4] = [
        (
            "UTF-16 with its BOM",
            "text/xml",
            [&b"\xFF\xFE"[..], &utf16].concat(),
            "UTF-16 (little-endian) byte order mark",
        ),
        ("UTF-16 without a BOM", "text/xml", utf16, "UTF-16"),
        (
            "declared utf-16",
            "text/xml",
            declared.into_bytes(),
            "the XML declaration names encoding `utf-16`",
        ),
        (
            "Content-Type charset",
            "text/xml; charset=\"UTF-32\"",
            plain.clone().into_bytes(),
            "the Content-Type names encoding `UTF-32`",
        ),
    ];
    for (case, content_type, body, says) in cases {
        let headers = [("content-type", content_type), XML[1]];
        let reply = s
            .client
            .post(&s.proxy, "/Service.asmx", &headers, body)
            .await;
        assert_proxy_fault(&reply, 400, "bad_request", "soap:Client");
        let faultstring = field(&reply, "faultstring");
        assert!(
            faultstring.contains(says) && faultstring.contains("send it as UTF-8"),
            "{case}: {faultstring}"
        );
    }
    assert_eq!((s.fake.soap_requests(), s.fake.token_requests()), (0, 0));
}

/// SFMC words its refusals in more than one way: `Login Failed: token
/// revoked` in another case means the same as `Login failed`, and gets the
/// same fresh token and one replay (not the fault passed on until the cached
/// token expires).
#[tokio::test]
async fn token_faults_worded_otherwise_get_a_fresh_token_and_one_replay_too() {
    let wordings = [
        ("TOKEN EXPIRED.", "Login Failed: token revoked", false),
        ("token expired: renew it", "LOGIN FAILED", true),
    ];
    for (expired, revoked, expire) in wordings {
        let s = setup().await;
        s.fake.set_soap_refusal_wording(expired, revoked);
        assert_answered(&soap(&s, "/Service.asmx", envelope("")).await, 1);
        match expire {
            true => s.fake.expire_all_tokens(),
            false => s.fake.revoke_all_tokens(),
        }
        let sent = envelope(&format!("<s:Header>{}</s:Header>", fuel("*")));
        let reply = soap(&s, "/Service.asmx", sent.clone()).await;
        assert_answered(&reply, 2);
        assert_eq!(
            (s.fake.token_requests(), s.fake.soap_requests()),
            (2, 3),
            "{revoked}: one new token, one replay"
        );
        let (before, after) = sent.split_once('*').expect("placeholder");
        assert_issued(&between(&received(&s).body, before, after), 2);
    }
}
