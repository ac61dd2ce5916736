//! `sfmc-proxy token`: prints one valid access token to stdout, for curl or
//! Postman.

use std::path::Path;

use super::{Failure, build, load_for_tenant, pick_tenant, refused_key, runtime};
use crate::failures::token_failure;
use crate::token::TokenKey;

pub(super) async fn run(
    config: &Path,
    tenant: Option<&str>,
    account_id: Option<&str>,
    scope: Option<&str>,
) -> Result<(), Failure> {
    let settings = load_for_tenant(config, tenant)?;
    let tenant = pick_tenant(&settings, tenant)?;
    let key = TokenKey::for_tenant(tenant, account_id, scope).map_err(refused_key)?;
    let proxy = build(settings.clone())?;
    let lease = proxy
        .tokens()
        .get(&key)
        .await
        .map_err(|failure| runtime(token_failure(failure, &tenant.name).to_string()))?;
    say!("{}", lease.token.access_token());
    Ok(())
}
