//! `sfmc-proxy check`: validates the config, fetches a token per tenant and
//! reports what SFMC granted. Never prints a token.

use std::path::Path;

use super::{Failure, build, load, refused_key, runtime};
use crate::failures::token_failure;
use crate::token::{Lease, TokenKey};

pub(super) async fn run(config: &Path) -> Result<(), Failure> {
    let settings = load(config)?;
    let proxy = build(settings.clone())?;
    say!(
        "config {}: ok ({} tenant(s))",
        config.display(),
        settings.tenants.len()
    );
    let mut failed = 0;
    for tenant in &settings.tenants {
        for note in &tenant.notes {
            say!("note: {note}");
        }
        let key = TokenKey::for_tenant(tenant, None, None).map_err(refused_key)?;
        match proxy.tokens().get(&key).await {
            Ok(lease) => print_check(tenant, &lease),
            Err(failure) => {
                failed += 1;
                say!(
                    "tenant {}: FAILED\n  {}",
                    tenant.name,
                    token_failure(failure, &tenant.name)
                );
            }
        }
    }
    if failed > 0 {
        return Err(runtime(format!("{failed} tenant(s) could not get a token")));
    }
    Ok(())
}

fn print_check(tenant: &crate::config::Tenant, lease: &Lease) {
    let token = &lease.token;
    let soap = token
        .soap_instance
        .as_ref()
        .map_or("(none)".to_owned(), ToString::to_string);
    say!("tenant {}: ok", tenant.name);
    say!("  token endpoint  {}", tenant.token_url);
    say!(
        "  business unit   {}",
        tenant
            .account_id
            .as_deref()
            .unwrap_or("(the package's own)")
    );
    say!(
        "  granted scope   {}",
        token.scope.as_deref().unwrap_or("(not reported)")
    );
    say!("  expires in      {} s", token.expires_in.as_secs());
    say!("  rest instance   {}", token.rest_instance);
    say!("  soap instance   {soap}");
}
