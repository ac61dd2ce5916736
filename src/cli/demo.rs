//! `sfmc-proxy demo`: the embedded fake SFMC tenant, the proxy in front of it,
//! a short self-check through the proxy (REST and SOAP), and curl lines to try
//! by hand.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use sfmc_fake::{FakeConfig, FakeTenant, reply_field};

use super::{Failure, bind_as, build_live, runtime, shutdown_signal, usage};
use crate::config::Settings;

const ROWSET_PATH: &str =
    "/hub/v1/dataevents/key:DemoDE/rowset?$filter=Email%20eq%20%27a@example.com%27";
/// A SOAP Retrieve with no token in it (README's SOAP example): the proxy adds it.
const SOAP_RETRIEVE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Body>
    <RetrieveRequestMsg xmlns="http://exacttarget.com/wsdl/partnerAPI">
      <RetrieveRequest><ObjectType>Subscriber</ObjectType>
        <Properties>EmailAddress</Properties><Properties>SubscriberKey</Properties>
      </RetrieveRequest>
    </RetrieveRequestMsg>
  </s:Body>
</s:Envelope>"#;

pub(super) async fn run(listen: SocketAddr) -> Result<(), Failure> {
    let fake_config = FakeConfig::default();
    let (client_id, client_secret) = (
        fake_config.client_id.clone(),
        fake_config.client_secret.clone(),
    );
    let fake = FakeTenant::start(fake_config)
        .await
        .map_err(|e| runtime(format!("cannot start the fake tenant: {e}")))?;
    let toml = format!(
        "[server]\nlisten = \"{listen}\"\n\n[tenants.demo]\nauth_url = \"{}\"\nclient_id = \"{client_id}\"\nclient_secret = \"{client_secret}\"\naccount_ids = [\"100\", \"200\"]\n",
        fake.auth_url()
    );
    let settings =
        Settings::from_toml(&toml, |_| None, Path::new(".")).map_err(|e| usage(e.to_string()))?;
    let live = build_live(Arc::new(settings))?;
    let listener = bind_as(listen, "demo --listen").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| runtime(format!("cannot read the listening address: {e}")))?;
    let server = tokio::spawn(crate::server::serve(listener, live, shutdown_signal()));
    say!("sfmc-proxy demo");
    say!(
        "  fake SFMC tenant  {} (auth, REST and SOAP host; client_id {client_id})",
        fake.auth_url()
    );
    say!("  proxy             http://{addr}/ (holds the client secret; your scripts hold none)\n");
    self_check(addr, &fake).await;
    print_try_lines(addr);
    let _ = server.await;
    drop(fake);
    Ok(())
}

async fn self_check(addr: SocketAddr, fake: &FakeTenant) {
    say!("Self-check through the proxy:");
    // Straight to the loopback proxy, never through an HTTP_PROXY from the environment.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    let base = format!("http://{addr}");
    let calls: [(&str, Option<&str>); 3] = [
        (ROWSET_PATH, None),
        (ROWSET_PATH, None),
        ("/asset/v1/content/assets", Some("200")),
    ];
    for (path, mid) in calls {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(mid) = mid {
            request = request.header("X-SFMC-Account-Id", mid);
        }
        let line = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let echo: Value = response.json().await.unwrap_or(Value::Null);
                format!(
                    "{status}; the fake SFMC saw token #{} for MID {}",
                    echo["token_number"],
                    echo["account_id"].as_str().unwrap_or("?")
                )
            }
            Err(error) => format!("failed: {error}"),
        };
        let selector = mid.map_or(String::new(), |m| format!(" [X-SFMC-Account-Id: {m}]"));
        say!("  GET {path}{selector} -> {line}");
    }
    say!("  {}", soap_check(&client, &base).await);
    say!(
        "  token requests sent to SFMC: {} for 4 calls (one per business unit; SOAP shares REST's token)\n",
        fake.token_requests()
    );
}

/// One SOAP Retrieve through the proxy, described in a line.
async fn soap_check(client: &reqwest::Client, base: &str) -> String {
    let request = client
        .post(format!("{base}/Service.asmx"))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "Retrieve")
        .body(SOAP_RETRIEVE);
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let xml = response.text().await.unwrap_or_default();
            let field = |name| reply_field(&xml, name).unwrap_or_else(|| "?".to_owned());
            match reply_field(&xml, "faultstring") {
                Some(fault) => format!("{status}; SOAP fault: {fault}"),
                None => format!(
                    "{status}; OverallStatus {}, {} results; the fake SFMC found token #{} for MID {} in the envelope",
                    field("OverallStatus"),
                    xml.matches("<Results ").count(),
                    field("fake:TokenNumber"),
                    field("fake:AccountId"),
                ),
            }
        }
        Err(error) => format!("failed: {error}"),
    };
    format!("POST /Service.asmx [SOAPAction: Retrieve, no token in the envelope] -> {outcome}")
}

fn print_try_lines(addr: SocketAddr) {
    say!("Try it yourself (no token, no secret in any of these):");
    say!("  curl -s 'http://{addr}{ROWSET_PATH}'");
    say!("  curl -s -H 'X-SFMC-Account-Id: 200' http://{addr}/asset/v1/content/assets");
    say!(
        "  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"items\":[{{\"Email\":\"a@example.com\"}}]}}' http://{addr}/data/v1/async/dataextensions/key:DemoDE/rows"
    );
    say!(
        "  curl -s -H 'X-SFMC-Account-Id: 999' http://{addr}/asset/v1/content/assets   # 403 account_not_allowed"
    );
    say!("  curl -s http://{addr}/_proxy/health");
    // Unindented: a heredoc's closing `XML` must start its line.
    say!("\nSOAP (the proxy puts the token into the envelope's Header):");
    say!(
        "curl -s http://{addr}/Service.asmx -H 'Content-Type: text/xml; charset=utf-8' -H 'SOAPAction: Retrieve' --data-binary @- <<'XML'\n{SOAP_RETRIEVE}\nXML"
    );
    say!("\nPress Ctrl-C to stop.");
}
