//! `sfmc-proxy login`: a person's login for a Web or Public App tenant. Prints
//! the authorize URL, then takes the code from whichever comes first: the
//! browser's redirect to a TLS listener on the `redirect_uri`, or the final URL
//! pasted on standard input. Stores the refresh token; prints no token.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::token_cache::{self, TokenFileCache};
use super::{Failure, load_for_tenant, pick_tenant, refused_flag, runtime, usage};
use crate::login::{self, LOGIN_WAIT, LoginError};
use crate::token::TokenKey;
use crate::token::sfmc::SfmcTokenClient;

pub(super) async fn run(
    config: &Path,
    tenant: Option<&str>,
    account_id: Option<&str>,
) -> Result<(), Failure> {
    let settings = load_for_tenant(config, tenant)?;
    let tenant = pick_tenant(&settings, tenant)?;
    let key = TokenKey::for_tenant(tenant, account_id, None).map_err(refused_flag)?;
    let start = login::start(tenant).map_err(|e| usage(e.to_string()))?;
    let tls = crate::tls::client_config(settings.upstream.ca_file.as_deref())
        .map_err(|e| usage(e.to_string()))?;
    let client = SfmcTokenClient::new(&settings, tls).map_err(|e| runtime(e.to_string()))?;
    // With [redis] the login's refresh token goes to the fleet's store.
    let shared = Arc::new(settings.clone());
    let health = Arc::new(crate::fleet::Health::new());
    let client = match crate::fleet::Fleet::connect(&shared, &health).map_err(runtime)? {
        Some(fleet) => client.with_chains(fleet.chains()),
        None => client,
    };

    eprintln!("Open this URL in a browser and log in:\n");
    say!("{}", start.authorize_url);
    let listener = login::bind_callback(&start.redirect_uri).await;
    match &listener {
        Ok(_) => eprintln!(
            "\nWaiting for the browser at {} (it warns once about the proxy's own certificate: accept it),\nor paste the address the browser ended on and press Enter:",
            start.redirect_uri
        ),
        // A login the fleet's own /_proxy/callback receives: that page says
        // no login waits there (this one is the command's), and its address
        // is what to paste.
        Err(_) if login::at_callback(tenant) => eprintln!(
            "\nThe browser ends on the proxy's page at {} (it says no login is waiting there: this login is this command's).\nPaste that page's address and press Enter:",
            start.redirect_uri
        ),
        Err(error) => {
            eprintln!("\n{error}\nPaste the address the browser ended on and press Enter:")
        }
    }
    let exchange = login::exchanger(
        Arc::new(client),
        tenant.name.clone(),
        key.account_id.clone(),
        start.code_verifier.clone(),
        |_, _| {},
    );
    let received = async {
        match listener {
            Ok(listener) => listener.complete(&start.state, exchange.clone()).await,
            Err(_) => std::future::pending().await,
        }
    };
    let by_paste = async {
        let code = pasted(&start.state).await?;
        exchange(code).await.map_err(LoginError::Exchange)
    };
    tokio::select! {
        done = received => done,
        done = by_paste => done,
        () = tokio::time::sleep(LOGIN_WAIT) => return Err(runtime(format!(
            "no login within {} minutes; run `{}` again",
            LOGIN_WAIT.as_secs() / 60,
            tenant.login_command(account_id)
        ))),
    }
    .map_err(|e| runtime(e.to_string()))?;
    // `token` must not go on printing the previous person's token.
    let mut cached = TokenFileCache::open(&settings).await;
    cached.forget(&tenant.name, key.account_id.as_deref());
    cached.save(token_cache::unix_now());
    let store = settings
        .token
        .store_file
        .as_deref()
        .map_or_else(String::new, |p| p.display().to_string());
    eprintln!(
        "Logged in: tenant {}{}. The refresh token is stored in {store}; the proxy uses it from now on.",
        tenant.name,
        key.account_id
            .as_deref()
            .map_or(String::new(), |mid| format!(", business unit {mid}"))
    );
    Ok(())
}

/// The first non-empty line on standard input, read as the final URL. At the
/// end of input it waits on (the browser may still come).
async fn pasted(state: &str) -> Result<String, LoginError> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !line.trim().is_empty() {
            return login::code_from_callback(&line, state);
        }
    }
    std::future::pending().await
}
