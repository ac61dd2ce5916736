use super::*;

#[test]
fn statuses_and_codes_follow_the_contract() {
    let cases: Vec<(ProxyError, u16, &str)> = vec![
        (
            ProxyError::UnknownTenant {
                name: "x".into(),
                known: "a".into(),
            },
            400,
            "unknown_tenant",
        ),
        (
            ProxyError::AccountNotAllowed {
                tenant: "a".into(),
                mid: "1".into(),
            },
            403,
            "account_not_allowed",
        ),
        (
            ProxyError::TokenRejected(Box::new(TokenRejection {
                tenant: "a".into(),
                status: 401,
                sfmc_error: "invalid_client".into(),
                sfmc_error_description: None,
                url: "https://mc1.auth.marketingcloudapis.com/v2/token".into(),
                hint: "check client_id and client_secret".into(),
                retry_after_secs: 5,
            })),
            502,
            "token_rejected",
        ),
        (
            ProxyError::TokenUnavailable {
                tenant: "a".into(),
                reason: "down".into(),
                retry_after_secs: 1,
            },
            503,
            "token_unavailable",
        ),
        (
            ProxyError::UpstreamUnavailable("x".into()),
            502,
            "upstream_unavailable",
        ),
        (
            ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
            504,
            "upstream_timeout",
        ),
        (
            ProxyError::HostNotAllowed("evil".into()),
            403,
            "host_not_allowed",
        ),
        (
            ProxyError::CrossSiteRequest("https://evil".into()),
            403,
            "cross_site_request",
        ),
        (ProxyError::InboundKeyRequired, 401, "inbound_key_required"),
        (
            ProxyError::MethodNotAllowed("CONNECT".into()),
            403,
            "method_not_allowed",
        ),
        (
            ProxyError::PolicyRefused {
                tenant: "prod".into(),
                rule: "read_only",
                message: "x".into(),
            },
            403,
            "method_not_allowed",
        ),
        (ProxyError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
        (ProxyError::BadRequest("x".into()), 400, "bad_request"),
        (
            ProxyError::NoTenantSelected("x".into()),
            400,
            "unknown_tenant",
        ),
        (
            ProxyError::InstanceNotAllowed {
                url: "https://evil".into(),
                reason: "x".into(),
            },
            502,
            "instance_not_allowed",
        ),
        (ProxyError::NotFound("/_proxy/x".into()), 404, "not_found"),
        (
            ProxyError::WrongMethod {
                path: "/_proxy/status/drop",
                allow: "POST",
            },
            405,
            "method_not_allowed",
        ),
        (
            ProxyError::UnknownKey {
                tenant: "a".into(),
                account_id: "1".into(),
                scope: "x".into(),
            },
            404,
            "unknown_key",
        ),
        (ProxyError::FormTokenInvalid, 403, "form_token_invalid"),
        (ProxyError::LocalTokenInvalid, 401, "local_token_invalid"),
        (
            ProxyError::LoginRequired {
                tenant: "a".into(),
                reason: "x".into(),
                command: "sfmc-proxy login".into(),
            },
            503,
            "login_required",
        ),
        (ProxyError::Internal("x".into()), 500, "internal_error"),
        (ProxyError::Overloaded("x".into()), 503, "overloaded"),
        (
            ProxyError::UpstreamBusy {
                tenant: "a".into(),
                limit: 4,
                waited: std::time::Duration::from_secs(30),
            },
            503,
            "upstream_busy",
        ),
    ];
    for (error, status, code) in cases {
        let side = match code {
            "internal_error" | "overloaded" | "upstream_busy" => Side::Internal,
            _ => match status {
                502..=504 => Side::Upstream,
                _ => Side::Downstream,
            },
        };
        assert_eq!(error.side(), side, "{code}");
        let response: Response<Bytes> = error.into_response();
        assert_eq!(response.status().as_u16(), status, "{code}");
        assert_eq!(response.headers()[PROXY_ERROR_HEADER], code);
        assert_eq!(response.headers()["content-type"], "application/json");
    }
}

#[test]
fn a_wrong_method_says_which_are_allowed() {
    let error = ProxyError::WrongMethod {
        path: "/_proxy/status/drop",
        allow: "POST",
    };
    assert_eq!(error.to_string(), "/_proxy/status/drop answers POST only");
    let response: Response<Bytes> = error.into_response();
    assert_eq!(response.headers()["allow"], "POST");
}

#[test]
fn token_rejected_carries_sfmc_error_and_description() {
    let error = ProxyError::TokenRejected(Box::new(TokenRejection {
        tenant: "acme".into(),
        status: 401,
        sfmc_error: "invalid_client".into(),
        sfmc_error_description: Some("Invalid client ID.".into()),
        url: "https://mc1.auth.marketingcloudapis.com/v2/token".into(),
        hint: "check client_id and client_secret".into(),
        retry_after_secs: 5,
    }));
    let body = error.json_body();
    assert_eq!(body["error"], "token_rejected");
    assert_eq!(body["sfmc_error"], "invalid_client");
    assert_eq!(body["sfmc_error_description"], "Invalid client ID.");
    assert_eq!(body["tenant"], "acme");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid_client")
    );
    let response: Response<Bytes> = error.into_response();
    assert_eq!(response.headers()["retry-after"], "5");
}
