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
use crate::token::{FetchedToken, TokenError, TokenFailure};

/// Finishes a login with a code: the code exchange, done by the caller. Its
/// error is SFMC's refusal (or an outage) as the proxy's error.
pub type Exchange = Arc<dyn Fn(String) -> BoxFuture<Result<(), ProxyError>> + Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The exchange for one login: the refresh token is stored by the exchange;
/// `on_result` gets how the request to SFMC ended, with the first access
/// token on success (the proxy caches it, so the first request after a login
/// needs no refresh, and counts the request in its metrics).
pub fn exchanger(
    client: Arc<SfmcTokenClient>,
    tenant: Arc<str>,
    account_id: Option<Arc<str>>,
    code_verifier: Option<Secret>,
    on_result: impl Fn(Result<FetchedToken, &TokenError>, Instant) + Send + Sync + 'static,
) -> Exchange {
    let on_result = Arc::new(on_result);
    Arc::new(move |code: String| {
        let (client, tenant, account_id) = (client.clone(), tenant.clone(), account_id.clone());
        let (on_result, verifier) = (on_result.clone(), code_verifier.clone());
        Box::pin(async move {
            let sent_at = Instant::now();
            let verifier = verifier.as_ref().map(Secret::expose);
            match client
                .exchange_code(&tenant, account_id.as_deref(), &code, verifier)
                .await
            {
                Ok(token) => {
                    on_result(Ok(token), sent_at);
                    Ok(())
                }
                Err(error) => {
                    on_result(Err(&error), sent_at);
                    // A code is used once: there is nothing to retry later.
                    let failure = TokenFailure {
                        error,
                        retry_in: Duration::ZERO,
                    };
                    Err(token_failure(failure, &tenant))
                }
            }
        })
    })
}
