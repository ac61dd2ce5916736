//! Several tenants and business units behind one proxy: selection by default,
//! header and path prefix, and the refusals that keep a request in its lane.

use crate::support::*;

/// Two fake tenants: `acme` (default, MIDs 100/200 allowed) and `beta` (prefix /beta).
async fn two_tenants() -> (FakeTenant, FakeTenant, TestProxy) {
    let acme = start_fake().await;
    let beta = start_fake().await;
    let proxy = TestProxy::builder()
        .tenant(
            Tenant::new("acme", &acme)
                .default(true)
                .account_ids(&["100", "200"]),
        )
        .tenant(Tenant::new("beta", &beta).path_prefix("/beta"))
        .start()
        .await;
    (acme, beta, proxy)
}

#[tokio::test]
async fn default_tenant_serves_unprefixed_requests() {
    let (acme, beta, proxy) = two_tenants().await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/hub/v1/x");
    assert_eq!((acme.rest_requests(), beta.rest_requests()), (1, 0));
}

#[tokio::test]
async fn path_prefix_selects_the_tenant_and_is_stripped() {
    let (acme, beta, proxy) = two_tenants().await;
    let client = TestClient::new();
    let reply = client
        .get(&proxy, "/beta/hub/v1/x?$filter=a%20b", &[])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/hub/v1/x");
    assert_eq!(reply.json()["query"], "$filter=a%20b");
    assert_eq!(client.get(&proxy, "/beta", &[]).await.json()["path"], "/");
    // A prefix matches whole segments only: /betamax is the default tenant's.
    assert_eq!(
        client.get(&proxy, "/betamax/x", &[]).await.json()["path"],
        "/betamax/x"
    );
    assert_eq!((acme.rest_requests(), beta.rest_requests()), (1, 2));
}

#[tokio::test]
async fn tenant_header_selects_the_tenant() {
    let (acme, beta, proxy) = two_tenants().await;
    let reply = TestClient::new()
        .get(&proxy, "/hub/v1/x", &[("x-sfmc-tenant", "beta")])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!((acme.rest_requests(), beta.rest_requests()), (0, 1));
    assert_eq!((acme.token_requests(), beta.token_requests()), (0, 1));
}

#[tokio::test]
async fn unknown_tenant_is_a_400_naming_the_known_ones() {
    let (_acme, _beta, proxy) = two_tenants().await;
    let reply = TestClient::new()
        .get(&proxy, "/hub/v1/x", &[("x-sfmc-tenant", "gamma")])
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.proxy_error(), Some("unknown_tenant"));
    let message = reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("gamma") && message.contains("acme, beta"),
        "{message}"
    );
}

#[tokio::test]
async fn conflicting_prefix_and_header_is_a_400() {
    let (_acme, _beta, proxy) = two_tenants().await;
    let reply = TestClient::new()
        .get(&proxy, "/beta/x", &[("x-sfmc-tenant", "acme")])
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.proxy_error(), Some("bad_request"));
}

#[tokio::test]
async fn without_a_default_requests_must_select_a_tenant() {
    let one = start_fake().await;
    let two = start_fake().await;
    let proxy = TestProxy::builder()
        .tenant(Tenant::new("one", &one))
        .tenant(Tenant::new("two", &two))
        .start()
        .await;
    let reply = TestClient::new().get(&proxy, "/hub/v1/x", &[]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.proxy_error(), Some("unknown_tenant"));
    assert!(reply.message().contains("X-SFMC-Tenant"));
    assert_eq!(
        TestClient::new()
            .get(&proxy, "/hub/v1/x", &[("x-sfmc-tenant", "two")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn business_unit_outside_account_ids_is_a_403_and_no_token_is_requested() {
    let (acme, _beta, proxy) = two_tenants().await;
    let client = TestClient::new();
    let allowed = client
        .get(&proxy, "/hub/v1/x", &[("x-sfmc-account-id", "200")])
        .await;
    assert_eq!(allowed.json()["account_id"], "200");
    let refused = client
        .get(&proxy, "/hub/v1/x", &[("x-sfmc-account-id", "999")])
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.proxy_error(), Some("account_not_allowed"));
    assert_eq!(refused.json()["account_id"], "999");
    let malformed = client
        .get(&proxy, "/hub/v1/x", &[("x-sfmc-account-id", "12ab")])
        .await;
    assert_eq!(malformed.proxy_error(), Some("bad_request"));
    assert_eq!(acme.token_requests(), 1);
}
