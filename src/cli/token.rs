//! `sfmc-proxy token`: prints one valid access token to stdout, for curl or
//! Postman. The token is cached (`token_cache`) and printed again until its
//! refresh window, as `gcloud auth print-access-token` does: SFMC asks
//! clients to reuse a token, and `$(sfmc-proxy token)` in a loop would
//! otherwise make one a call. `--fresh` asks SFMC for a new one (and caches
//! that).

use std::path::Path;
use std::time::SystemTime;

use super::token_cache::{self, Entry, TokenFileCache};
use super::{Failure, build, load_for_tenant, pick_tenant, refused_flag, runtime};
use crate::failures::token_failure;
use crate::token::TokenKey;

pub(super) async fn run(
    config: &Path,
    tenant: Option<&str>,
    account_id: Option<&str>,
    scope: Option<&str>,
    fresh: bool,
) -> Result<(), Failure> {
    let settings = load_for_tenant(config, tenant)?;
    let tenant = pick_tenant(&settings, tenant)?;
    let key = TokenKey::for_tenant(tenant, account_id, scope).map_err(refused_flag)?;
    let fingerprint = token_cache::fingerprint(tenant);
    if !fresh
        && let Some(entry) =
            TokenFileCache::reusable(&settings, &key, &fingerprint, token_cache::unix_now())
    {
        say!("{}", entry.access_token);
        return Ok(());
    }
    // Locked from here to the write: a concurrent `token` waits, then
    // reuses this one's token instead of asking SFMC for another.
    let mut cache = TokenFileCache::open(&settings).await;
    if !fresh && let Some(entry) = cache.fresh(&key, &fingerprint, token_cache::unix_now()) {
        say!("{}", entry.access_token);
        return Ok(());
    }
    let proxy = build(settings.clone())?;
    let lease = proxy
        .tokens()
        .get(&key)
        .await
        .map_err(|failure| runtime(token_failure(failure, &tenant.name).to_string()))?;
    // Saved before it is printed: a reader that goes away early (`| head`)
    // must not cost the next call a token request.
    cache.put(Entry::new(
        &key,
        &fingerprint,
        &lease.token,
        SystemTime::now(),
    ));
    cache.save(token_cache::unix_now());
    say!("{}", lease.token.access_token());
    Ok(())
}
