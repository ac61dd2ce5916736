//! The code exchange both ways of receiving a code use (the TLS listener and a
//! pasted URL): the code and PKCE verifier go to SFMC's `/v2/token`
//! (`SfmcTokenClient::exchange_code`, which stores the refresh token), and the
//! first access token goes to whoever started the login.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Secret;
use crate::error::ProxyError;
use crate::failures::token_failure;
use crate::token::sfmc::SfmcTokenClient;
use crate::token::{FetchedToken, TokenFailure};

/// Finishes a login with a code: the code exchange, done by the caller. Its
/// error is SFMC's refusal (or an outage) as the proxy's error.
pub type Exchange = Arc<dyn Fn(String) -> BoxFuture<Result<(), ProxyError>> + Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The exchange for one login: the refresh token is stored by the exchange;
/// `on_token` gets the first access token (the proxy caches it, so the first
/// request after a login needs no refresh).
pub fn exchanger(
    client: Arc<SfmcTokenClient>,
    tenant: Arc<str>,
    account_id: Option<Arc<str>>,
    code_verifier: Option<Secret>,
    on_token: impl Fn(FetchedToken, Instant) + Send + Sync + 'static,
) -> Exchange {
    let on_token = Arc::new(on_token);
    Arc::new(move |code: String| {
        let (client, tenant, account_id) = (client.clone(), tenant.clone(), account_id.clone());
        let (on_token, verifier) = (on_token.clone(), code_verifier.clone());
        Box::pin(async move {
            let sent_at = Instant::now();
            let verifier = verifier.as_ref().map(Secret::expose);
            let token = client
                .exchange_code(&tenant, account_id.as_deref(), &code, verifier)
                .await
                .map_err(|error| {
                    // A code is used once: there is nothing to retry later.
                    let failure = TokenFailure {
                        error,
                        retry_in: Duration::ZERO,
                    };
                    token_failure(failure, &tenant)
                })?;
            on_token(token, sent_at);
            Ok(())
        })
    })
}
