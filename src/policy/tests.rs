//! The decision table, rule by rule, on tenants built from TOML as a user
//! writes them; the integration tests (tests/it/policy.rs) run it end to end.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::{check, soap_action_read, soap_read};
use crate::config::{Settings, Tenant};
use crate::error::ProxyError;
use crate::soap::{Operation, PARTNER_API_NS};

fn tenant(policy: &str) -> Arc<Tenant> {
    let text = format!(
        "[tenants.prod]\nauth_url = \"https://mc123.auth.marketingcloudapis.com/\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n{policy}\n"
    );
    let settings = Settings::from_toml(&text, |_| None, Path::new(".")).expect("valid policy");
    settings.tenants[0].clone()
}

/// `pass`, or the refusing rule.
fn decide(tenant: &Tenant, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    match check(tenant, &method, path, &header_map(headers)) {
        Ok(()) => "pass".into(),
        Err(ProxyError::PolicyRefused { rule, .. }) => rule.into(),
        Err(other) => format!("{other:?}"),
    }
}

fn message(tenant: &Tenant, method: &str, path: &str) -> String {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    match check(tenant, &method, path, &HeaderMap::new()) {
        Err(error) => {
            assert_eq!(error.code(), "method_not_allowed");
            assert_eq!(error.status(), 403);
            error.to_string()
        }
        Ok(()) => panic!("{method} {path} passed"),
    }
}

const ALL_THREE: &str = r#"
read_only = true
allow_paths = ["/data/v1/async"]
deny_paths = ["/data/v1/async/dataextensions/key:Audit"]
"#;

#[test]
fn deny_then_allow_then_read_only() {
    let t = tenant(ALL_THREE);
    for (method, path, expected) in [
        // 3: read_only lets reads through and nothing else.
        ("GET", "/asset/v1/content/assets", "pass"),
        ("HEAD", "/asset/v1/content/assets", "pass"),
        ("OPTIONS", "/asset/v1/content/assets", "pass"),
        ("POST", "/asset/v1/content/assets", "read_only"),
        ("DELETE", "/asset/v1/content/assets/1", "read_only"),
        ("get", "/asset/v1/content/assets", "read_only"),
        ("PROPFIND", "/asset/v1", "read_only"),
        // 2: an allowed path takes any method.
        (
            "POST",
            "/data/v1/async/dataextensions/key:Orders/rows",
            "pass",
        ),
        ("PUT", "/data/v1/async", "pass"),
        ("POST", "/DATA/v1//async/./dataextensions", "pass"),
        // 1: a denied path takes none, however it is spelt.
        (
            "DELETE",
            "/data/v1/async/dataextensions/key:Audit/rows",
            "deny_paths",
        ),
        (
            "GET",
            "/data/v1/async/dataextensions/key:Audit",
            "deny_paths",
        ),
        (
            "GET",
            "/data/v1/async/dataextensions/KEY:AUDIT/rows",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions/key%3AAudit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/x/../dataextensions/key:Audit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions%2fkey:Audit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions\\key:Audit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions;a=b/key:Audit",
            "deny_paths",
        ),
        (
            "POST",
            "/data/v1/async/dataextensions/key:Audit./rows",
            "deny_paths",
        ),
        // Climbing out of an allowed prefix leaves it.
        ("POST", "/data/v1/async/%2e%2e/%2e%2e/hub", "read_only"),
        ("POST", "/data/v1/async/..;/..;/hub", "read_only"),
        ("POST", "/data/v1/asyncx", "read_only"),
        // Allowed only if read raw it is under the prefix too.
        ("POST", "/hub/x/../../data/v1/async/rows", "read_only"),
        ("POST", "/data%2Fv1%2Fasync/rows", "read_only"),
        // What cannot be read one way only is refused, reads included.
        ("GET", "/data/v1/async/%252e%252e/x", "deny_paths"),
        ("GET", "/data/v1/async%00/x", "deny_paths"),
    ] {
        assert_eq!(decide(&t, method, path, &[]), expected, "{method} {path}");
    }
}

#[test]
fn allow_paths_alone_is_an_allowlist() {
    let t = tenant(r#"allow_paths = ["/hub/v1/dataevents", "/asset"]"#);
    for (method, path, expected) in [
        ("POST", "/hub/v1/dataevents/key:X/rowset", "pass"),
        ("GET", "/asset/v1/content/assets", "pass"),
        ("GET", "/hub/v1/campaigns", "allow_paths"),
        ("GET", "/", "allow_paths"),
        ("POST", "/Service.asmx", "allow_paths"),
        // A letter that might fold into an allowed prefix does not open it.
        ("GET", "/%C3%A4sset/v1", "allow_paths"),
        ("GET", "/asset%252Fv1", "allow_paths"),
    ] {
        assert_eq!(decide(&t, method, path, &[]), expected, "{method} {path}");
    }
    let text = message(&t, "GET", "/hub/v1/campaigns");
    assert!(
        text.contains("`/hub/v1/dataevents`, `/asset`")
            && text.contains("tenants.prod.allow_paths"),
        "{text}"
    );
}

#[test]
fn deny_paths_alone_refuses_only_there() {
    let t = tenant(r#"deny_paths = ["/messaging", "/Service.asmx"]"#);
    for (method, path, expected) in [
        ("POST", "/hub/v1/dataevents", "pass"),
        ("GET", "/messaging/v1/email/messages", "deny_paths"),
        ("POST", "/messaging/v1/email/messages", "deny_paths"),
        ("POST", "/Service.asmx", "deny_paths"),
        ("POST", "/service.ASMX", "deny_paths"),
        // U+017F (long s) may be read as `s` by a case-insensitive router.
        ("POST", "/me%C5%BF%C5%BFaging/v1", "deny_paths"),
    ] {
        assert_eq!(decide(&t, method, path, &[]), expected, "{method} {path}");
    }
    let text = message(&t, "DELETE", "/messaging/v1/x");
    assert!(
        text.contains("tenant `prod` refuses DELETE /messaging/v1/x")
            && text.contains("`/messaging` in deny_paths")
            && text.contains("tenants.prod.deny_paths"),
        "{text}"
    );
}

#[test]
fn an_open_tenant_lets_everything_through() {
    let t = tenant("");
    assert!(t.policy.is_open());
    for path in ["/x", "/%252e", "/a%00b"] {
        assert_eq!(decide(&t, "DELETE", path, &[]), "pass", "{path}");
    }
}

#[test]
fn read_only_refusal_says_what_and_how() {
    let t = tenant("read_only = true");
    let text = message(&t, "POST", "/hub/v1/x");
    assert!(
        text.starts_with("tenant `prod` is read_only: POST /hub/v1/x refused")
            && text.contains("tenants.prod.read_only = false")
            && text.contains("tenants.prod.allow_paths"),
        "{text}"
    );
    // A path too long to quote whole is clipped.
    let long = format!("/{}", "a".repeat(5000));
    assert!(message(&t, "POST", &long).len() < 1000);
}

#[test]
fn a_method_override_header_is_the_method_it_names() {
    let t = tenant("read_only = true");
    for (name, value, expected) in [
        ("x-http-method-override", "DELETE", "read_only"),
        ("X-HTTP-Method", "put", "read_only"),
        ("x-method-override", "POST", "read_only"),
        ("x-http-method-override", "GET", "pass"),
        ("x-http-method-override", " head ", "pass"),
    ] {
        assert_eq!(
            decide(&t, "GET", "/x", &[(name, value)]),
            expected,
            "{name}: {value}"
        );
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

#[test]
fn a_soap_action_must_name_a_read_when_there_is_one() {
    for (pairs, passes) in [
        (&[][..], true),
        (&[("soapaction", "Retrieve")][..], true),
        (&[("soapaction", "\"Describe\"")][..], true),
        (&[("soapaction", "\"\"")][..], true),
        (
            &[(
                "soapaction",
                "http://exacttarget.com/wsdl/partnerAPI/Retrieve",
            )][..],
            true,
        ),
        (&[("soapaction", "Create")][..], false),
        (&[("soapaction", "Create/Retrieve")][..], false),
        (&[("soapaction", "http://evil.example/Retrieve")][..], false),
        (
            &[("soapaction", "Retrieve"), ("soapaction", "Delete")][..],
            false,
        ),
        (
            &[("content-type", "application/soap+xml; action=\"Retrieve\"")][..],
            true,
        ),
        (
            &[(
                "content-type",
                "application/soap+xml; charset=utf-8; action=Update",
            )][..],
            false,
        ),
    ] {
        assert_eq!(
            soap_action_read(&header_map(pairs)).is_ok(),
            passes,
            "{pairs:?}"
        );
    }
}

#[test]
fn only_retrieve_and_describe_in_the_partner_namespace_are_soap_reads() {
    let op = |ns: Option<&str>, name: &str| Operation {
        namespace: ns.map(str::to_owned),
        local_name: name.into(),
    };
    let partner = Some(PARTNER_API_NS);
    for (operation, passes) in [
        (op(partner, "RetrieveRequestMsg"), true),
        (op(partner, "DefinitionRequestMsg"), true),
        (op(partner, "CreateRequest"), false),
        (op(partner, "DeleteRequest"), false),
        (op(partner, "PerformRequestMsg"), false),
        (op(partner, "retrieverequestmsg"), false),
        (op(None, "RetrieveRequestMsg"), false),
        (
            op(Some("http://exacttarget.com"), "RetrieveRequestMsg"),
            false,
        ),
    ] {
        assert_eq!(soap_read(Ok(&operation)).is_ok(), passes, "{operation:?}");
    }
    let unreadable = ProxyError::BadRequest("the Body is empty".into());
    let refused = soap_read(Err(&unreadable)).expect_err("refused");
    assert!(
        refused.contains("operation cannot be told: the Body is empty"),
        "{refused}"
    );
}
