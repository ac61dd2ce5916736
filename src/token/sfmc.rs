//! The SFMC `/v2/token` client and its wire types: the client-credentials
//! grant here, the refresh and code grants in `refresh`.
//!
//! Sends the documented JSON body, classifies failures (a refusal is not
//! retried; a connection failure, 5xx or timeout is) and checks the instance
//! URLs before a token is ever used with them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{ChainStore, TokenStore};
use super::{FetchFuture, FetchedToken, Sent, TokenError, TokenEvents, TokenKey, TokenSource};
use crate::config::{Egress, Grant, Route, Secret, Settings, Tenant};
use crate::error::error_chain;
use crate::upstream::{ConnectError, InstanceBase, probe_egress};

/// Token responses are a few hundred bytes; refuse to read megabytes.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

#[derive(Serialize)]
struct ClientCredentialsRequest<'a> {
    grant_type: &'static str,
    client_id: &'a str,
    client_secret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    scope: Option<String>,
    rest_instance_url: String,
    #[serde(default)]
    soap_instance_url: Option<String>,
    /// Web and public apps only.
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A successful token response: the access token, and the refresh token that
/// replaces the one just used (authorization-code tenants).
pub struct Granted {
    pub token: FetchedToken,
    pub refresh_token: Option<Secret>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// Fetches tokens for the configured tenants from SFMC.
pub struct SfmcTokenClient {
    http: reqwest::Client,
    tenants: HashMap<Arc<str>, Arc<Tenant>>,
    allowed_instance_hosts: Vec<String>,
    /// Where authorization-code tenants keep their refresh tokens.
    pub(super) store: Option<TokenStore>,
    /// With `[redis]`: the fleet's store of them instead of `store`.
    pub(super) chains: Option<Arc<dyn ChainStore>>,
    /// Told of every request sent (the metrics).
    events: Arc<dyn TokenEvents>,
    /// The egress path, and what is needed to ask a refusing proxy why.
    egress: Egress,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl SfmcTokenClient {
    pub fn new(settings: &Settings, tls: rustls::ClientConfig) -> Result<Self, reqwest::Error> {
        let egress = settings.upstream.egress.clone();
        let route = egress.clone();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            // The egress path is the one the API client takes
            // (`upstream.proxy`, else the environment as `config::egress`
            // reads it); reqwest's own reading of the environment is off.
            .no_proxy()
            .proxy(reqwest::Proxy::custom(move |url| {
                match route.route(url.scheme() == "https", url.host_str()?) {
                    Route::Proxy(proxy) => Some(proxy.client_url().clone()),
                    // `send` refuses an unusable route before any request.
                    Route::Direct | Route::Unusable(_) => None,
                }
            }))
            .connect_timeout(settings.upstream.connect_timeout)
            // `token.request_timeout` bounds every call, a login's code
            // exchange included; the cache's fetches also cut each attempt
            // themselves and add `token.fetch_deadline` (`Inner::fetch_into`
            // in `token`), so a source that is not this client is bounded too.
            .timeout(settings.token.request_timeout)
            .user_agent(concat!("sfmc-proxy/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tenants = settings
            .tenants
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        Ok(Self {
            http,
            tenants,
            allowed_instance_hosts: settings.upstream.allowed_instance_hosts.clone(),
            store: settings.token.store_file.clone().map(TokenStore::new),
            chains: None,
            events: super::ledger::no_events(),
            egress,
            tls: Arc::new(tls),
            connect_timeout: settings.upstream.connect_timeout,
        })
    }

    /// Keeps logins' refresh tokens in `chains` (the fleet's Redis) rather
    /// than in `token.store_file`.
    pub fn with_chains(mut self, chains: Arc<dyn ChainStore>) -> Self {
        self.chains = Some(chains);
        self
    }

    /// Tells `events` of every request this client sends to `/v2/token`.
    pub fn with_events(mut self, events: Arc<dyn TokenEvents>) -> Self {
        self.events = events;
        self
    }

    pub(super) fn tenant(&self, name: &str) -> Result<&Arc<Tenant>, TokenError> {
        self.tenants
            .get(name)
            .ok_or_else(|| TokenError::Unavailable {
                reason: format!("tenant `{name}` is not configured"),
                retryable: false,
            })
    }

    async fn request(&self, key: &TokenKey) -> Result<FetchedToken, TokenError> {
        let tenant = self.tenant(&key.tenant)?;
        match &tenant.grant {
            Grant::ClientCredentials => {
                let body = ClientCredentialsRequest {
                    grant_type: "client_credentials",
                    client_id: &tenant.client_id,
                    client_secret: tenant.client_secret.as_ref().map_or("", Secret::expose),
                    account_id: key.account_id.as_deref(),
                    scope: key.scope.as_deref(),
                };
                Ok(self
                    .post(tenant, key.account_id.as_deref(), &body)
                    .await?
                    .token)
            }
            Grant::AuthorizationCode { .. } => self.refresh(tenant, key).await,
        }
    }

    /// One `POST {auth_url}/v2/token` with `body`, its answer checked.
    /// The one place a request to SFMC's `/v2/token` is sent, so the events
    /// hook is told of each (for `account_id`, the MID the body asks for) and
    /// of nothing that was never sent (no stored login, a store error).
    pub(super) async fn post(
        &self,
        tenant: &Tenant,
        account_id: Option<&str>,
        body: &impl Serialize,
    ) -> Result<Granted, TokenError> {
        let result = self.send(tenant, body).await;
        self.events
            .sent(&tenant.name, account_id, Sent::of(&result));
        result
    }

    async fn send(&self, tenant: &Tenant, body: &impl Serialize) -> Result<Granted, TokenError> {
        let url = &tenant.token_url;
        let route = self.egress.route_for_url(url);
        if let Route::Unusable(unusable) = route {
            return Err(TokenError::Unavailable {
                reason: format!("token request to {url} not sent: {unusable}"),
                retryable: false,
            });
        }
        let response = match self.http.post(url).json(body).send().await {
            Ok(response) => response,
            Err(error) => return Err(self.unavailable(url, route, &error).await),
        };
        if let Route::Proxy(proxy) = route
            && response.status() == reqwest::StatusCode::PROXY_AUTHENTICATION_REQUIRED
        {
            // The proxy's own answer to an absolute-form request (plain
            // http); SFMC never answers 407.
            return Err(proxy_refusal(
                url,
                ConnectError::proxy_refused(proxy, url, 407, "Proxy Authentication Required"),
            ));
        }
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(&tenant.token_url, &e, ""))?;
        parse_response(&tenant.token_url, status, &bytes, &self.allowed_instance_hosts).map_err(|error| match error {
            // A 200 that is no token: most often a web page, because
            // auth_url is not the package's Authentication Base URI.
            TokenError::InvalidResponse(reason) => TokenError::InvalidResponse(format!(
                "{reason} (POST {} answered HTTP {}, Content-Type: {content_type}); check that auth_url is the package's Authentication Base URI",
                tenant.token_url,
                status.as_u16()
            )),
            other => other,
        })
    }
}

/// SFMC's answer to one token request, its status and body as they came:
/// the grant, or why there is none. Pure (no I/O), so that it can be fuzzed.
pub(crate) fn parse_response(
    url: &str,
    status: http::StatusCode,
    bytes: &[u8],
    allowed_instance_hosts: &[String],
) -> Result<Granted, TokenError> {
    if bytes.len() > MAX_TOKEN_RESPONSE {
        return Err(TokenError::InvalidResponse(format!(
            "token response of {} bytes is implausibly large",
            bytes.len()
        )));
    }
    if status.is_success() {
        parse_success(bytes, allowed_instance_hosts)
    } else {
        Err(classify_error(url, status, bytes))
    }
}

fn parse_success(bytes: &[u8], allowed_instance_hosts: &[String]) -> Result<Granted, TokenError> {
    let parsed: TokenResponse = serde_json::from_slice(bytes).map_err(|e| {
        TokenError::InvalidResponse(format!(
            "SFMC's token response is not the expected JSON: {e}"
        ))
    })?;
    let instance = |url: &str| {
        InstanceBase::parse(url, allowed_instance_hosts).map_err(|reason| {
            TokenError::InstanceNotAllowed {
                url: url.to_owned(),
                reason,
            }
        })
    };
    let rest_instance = instance(&parsed.rest_instance_url)?;
    let soap_instance = match parsed.soap_instance_url.as_deref() {
        Some(url) if !url.trim().is_empty() => Some(instance(url)?),
        _ => None,
    };
    if parsed.access_token.is_empty() || parsed.expires_in == 0 {
        return Err(TokenError::InvalidResponse(
            "SFMC returned an empty token or zero lifetime".into(),
        ));
    }
    let token = FetchedToken {
        access_token: parsed.access_token,
        expires_in: Duration::from_secs(parsed.expires_in),
        scope: parsed.scope,
        rest_instance,
        soap_instance,
    };
    Ok(Granted {
        token,
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

impl TokenSource for SfmcTokenClient {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> FetchFuture<'a> {
        Box::pin(self.request(key))
    }

    fn target(&self, key: &TokenKey) -> String {
        match self.tenants.get(&key.tenant) {
            Some(tenant) => format!("POST {}", tenant.token_url),
            None => format!("tenant `{}`'s /v2/token", key.tenant),
        }
    }
}

impl SfmcTokenClient {
    /// Why a request got no answer. Through an egress proxy, reqwest's
    /// tunnel error drops the proxy's status; asking the proxy the same way
    /// the API client does gets it ("answered 407 …") and what to change.
    async fn unavailable(&self, url: &str, route: Route<'_>, error: &reqwest::Error) -> TokenError {
        let Route::Proxy(proxy) = route else {
            return unavailable(url, error, "");
        };
        if error.is_connect() {
            let deadline = tokio::time::Instant::now() + self.connect_timeout;
            if let Err(refused) =
                probe_egress(proxy, &authority_of(url), self.tls.clone(), deadline).await
            {
                return proxy_refusal(url, refused);
            }
        }
        unavailable(url, error, &format!(" through {proxy}"))
    }
}

/// `host:port` of a URL, for CONNECT.
fn authority_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or(443)
        ),
        Err(_) => url.to_owned(),
    }
}

/// The egress proxy's refusal; credentials or a denied host do not change
/// on a retry, an unreachable proxy may.
fn proxy_refusal(url: &str, error: ConnectError) -> TokenError {
    let retryable = !matches!(
        error,
        ConnectError::ProxyRefused {
            status: 401 | 403 | 407,
            ..
        }
    );
    TokenError::Unavailable {
        reason: format!("token request to {url} failed: {error}"),
        retryable,
    }
}

fn unavailable(url: &str, error: &reqwest::Error, via: &str) -> TokenError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // The error's source chain says why (DNS, TLS, refused); the URL holds no secret.
    TokenError::Unavailable {
        reason: format!("token request to {url}{via} {what}: {}", error_chain(error)),
        retryable: true,
    }
}

/// 4xx: SFMC refused (wrong secret, BU not enabled, bad scope): retrying will
/// not help. 5xx: an outage: retry. 429: throttled: do not retry right away.
fn classify_error(url: &str, status: reqwest::StatusCode, body: &[u8]) -> TokenError {
    if status.is_server_error() {
        return TokenError::Unavailable {
            reason: format!(
                "SFMC's auth endpoint is failing: POST {url} answered HTTP {}",
                status.as_u16()
            ),
            retryable: true,
        };
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return TokenError::Unavailable {
            reason: format!("SFMC is throttling token requests: POST {url} answered HTTP 429"),
            retryable: false,
        };
    }
    let parsed: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    let (error, description) = match parsed {
        Some(ErrorResponse {
            error: Some(error),
            error_description,
        }) => (error, error_description),
        _ => (format!("http_{}", status.as_u16()), None),
    };
    TokenError::Rejected {
        status: status.as_u16(),
        error,
        description,
        url: url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_has_only_the_fields_that_are_set() {
        let body = ClientCredentialsRequest {
            grant_type: "client_credentials",
            client_id: "id",
            client_secret: "secret",
            account_id: None,
            scope: None,
        };
        let json = serde_json::to_value(&body).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"grant_type": "client_credentials", "client_id": "id", "client_secret": "secret"})
        );
    }

    const URL: &str = "https://mc1.auth.marketingcloudapis.com/v2/token";

    #[test]
    fn sfmc_refusals_keep_error_and_description() {
        let body = br#"{"error":"invalid_client","error_description":"Invalid client ID.","error_uri":"x"}"#;
        let error = classify_error(URL, reqwest::StatusCode::UNAUTHORIZED, body);
        assert_eq!(
            error,
            TokenError::Rejected {
                status: 401,
                error: "invalid_client".into(),
                description: Some("Invalid client ID.".into()),
                url: URL.into(),
            }
        );
        let unparsable = classify_error(URL, reqwest::StatusCode::BAD_REQUEST, b"<html>");
        assert!(
            matches!(unparsable, TokenError::Rejected { ref error, .. } if error == "http_400")
        );
    }

    #[test]
    fn server_errors_are_retryable_and_throttling_is_not() {
        assert!(classify_error(URL, reqwest::StatusCode::BAD_GATEWAY, b"").retryable());
        assert!(!classify_error(URL, reqwest::StatusCode::TOO_MANY_REQUESTS, b"").retryable());
        assert!(!classify_error(URL, reqwest::StatusCode::UNAUTHORIZED, b"{}").retryable());
    }
}
