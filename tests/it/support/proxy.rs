//! Proxies for the tests, configured with typed builders: `TestProxy::builder()`
//! sets the `[server]`, `[upstream]`, `[token]`, `[soap]` and `[broker]` keys the
//! tests use (with the start-up prefetch off unless a test turns it on), `Tenant` a `[tenants.NAME]` table, and `Setup::builder()` both for
//! one fake tenant `acme`. The builders render TOML and the real parser
//! (`Settings::from_toml`) reads it, so the config path is the one users take.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sfmc_proxy::config::Settings;
use sfmc_proxy::reload::{Live, ReloadError, ReloadReport};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use toml::{Table, Value};

use super::{CLIENT_ID, CLIENT_SECRET, FakeTenant, TestClient, init, start_fake};

/// A proxy serving on 127.0.0.1:0; stops when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The `server.admin_listen` address, when the builder asked for one.
    pub admin_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    /// What a reload replaces, as SIGHUP does in the binary.
    live: Arc<Live>,
}

impl TestProxy {
    /// Prefetch off (`token.prefetch = false`): tests that count token
    /// requests count only their own; `.prefetch(true)` turns it on.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default().prefetch(false)
    }

    async fn serve(settings: Settings, admin: bool) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin = match admin {
            true => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
            false => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr().expect("admin addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let live = Arc::new(Live::new(Arc::new(settings)).expect("proxy builds"));
        let serving = live.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            sfmc_proxy::server::serve_with_admin(vec![listener], admin, serving, shutdown).await;
        });
        TestProxy {
            addr,
            admin_addr,
            shutdown: Some(tx),
            live,
        }
    }

    /// Reloads with `config` (relative paths from the working directory),
    /// as a SIGHUP would.
    pub fn reload(&self, config: &ProxyBuilder) -> Result<ReloadReport, ReloadError> {
        self.reload_text(&config.render())
    }

    /// Reloads with this `proxy.toml` text, valid or not.
    pub fn reload_text(&self, text: &str) -> Result<ReloadReport, ReloadError> {
        self.live.reload_from(|| {
            Settings::from_toml(text, |name| std::env::var(name).ok(), Path::new("."))
        })
    }

    /// The same proxy as seen on its admin address (`admin_listener()`).
    pub fn admin(&self) -> TestProxy {
        TestProxy {
            addr: self.admin_addr.expect("started with .admin_listener()"),
            admin_addr: None,
            shutdown: None,
            live: self.live.clone(),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A proxy's configuration, key by key; `render` gives it as `proxy.toml` text.
#[derive(Clone, Default)]
pub struct ProxyBuilder {
    root: Table,
    /// Whether to serve `server.admin_listen` too.
    admin_listener: bool,
}

impl ProxyBuilder {
    pub fn listen(self, addr: SocketAddr) -> Self {
        self.set(&["server"], "listen", addr.to_string())
    }

    pub fn public_url(self, url: &str) -> Self {
        self.set(&["server"], "public_url", url)
    }

    pub fn inbound_keys(self, keys: &[&str]) -> Self {
        self.set(&["server"], "inbound_keys", strings(keys))
    }

    pub fn allowed_hosts(self, hosts: &[&str]) -> Self {
        self.set(&["server"], "allowed_hosts", strings(hosts))
    }

    pub fn allowed_origins(self, origins: &[&str]) -> Self {
        self.set(&["server"], "allowed_origins", strings(origins))
    }

    pub fn log_paths(self, on: bool) -> Self {
        self.set(&["server"], "log_paths", on)
    }

    pub fn max_connections(self, n: usize) -> Self {
        self.set(&["server"], "max_connections", integer(n))
    }

    pub fn header_read_timeout(self, timeout: Duration) -> Self {
        self.set(&["server"], "header_read_timeout", duration(timeout))
    }

    /// `"all"` or `"any"`.
    pub fn ready_requires(self, requires: &str) -> Self {
        self.set(&["server"], "ready_requires", requires)
    }

    pub fn max_concurrent_streams(self, n: u32) -> Self {
        self.set(&["server"], "max_concurrent_streams", integer(n))
    }

    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.set(&["upstream"], "connect_timeout", duration(timeout))
    }

    pub fn response_timeout(self, timeout: Duration) -> Self {
        self.set(&["upstream"], "response_timeout", duration(timeout))
    }

    /// `upstream.proxy`.
    pub fn egress_proxy(self, url: &str) -> Self {
        self.set(&["upstream"], "proxy", url)
    }

    pub fn retry_throttled(self, on: bool) -> Self {
        self.set(&["upstream"], "retry_throttled", on)
    }

    /// `[redis]` at `url`, with a fixed test encryption key.
    pub fn redis(self, url: &str) -> Self {
        self.set(&["redis"], "url", url).set(
            &["redis"],
            "encryption_key",
            "test-encryption-key-0123456789-abcdef",
        )
    }

    pub fn redis_encryption_key(self, key: &str) -> Self {
        self.set(&["redis"], "encryption_key", key)
    }

    pub fn redis_ca_file(self, path: &Path) -> Self {
        self.set(&["redis"], "ca_file", path_text(path))
    }

    pub fn redis_lock_timeout(self, timeout: Duration) -> Self {
        self.set(&["redis"], "lock_timeout", duration(timeout))
    }

    pub fn max_retry_wait(self, wait: Duration) -> Self {
        self.set(&["upstream"], "max_retry_wait", duration(wait))
    }

    pub fn ca_file(self, path: &Path) -> Self {
        self.set(&["upstream"], "ca_file", path_text(path))
    }

    /// In bytes.
    pub fn replay_body_limit(self, bytes: usize) -> Self {
        self.set(&["token"], "replay_body_limit", bytes.to_string())
    }

    pub fn store_file(self, path: &Path) -> Self {
        self.set(&["token"], "store_file", path_text(path))
    }

    pub fn rate_burst(self, n: u32) -> Self {
        self.set(&["token"], "rate_burst", integer(n))
    }

    pub fn rate_interval(self, interval: Duration) -> Self {
        self.set(&["token"], "rate_interval", duration(interval))
    }

    /// `token.prefetch`: off unless a test turns it on.
    pub fn prefetch(self, prefetch: bool) -> Self {
        self.set(&["token"], "prefetch", prefetch)
    }

    pub fn request_timeout(self, timeout: Duration) -> Self {
        self.set(&["token"], "request_timeout", duration(timeout))
    }

    pub fn fetch_deadline(self, deadline: Duration) -> Self {
        self.set(&["token"], "fetch_deadline", duration(deadline))
    }

    pub fn max_keys(self, n: usize) -> Self {
        self.set(&["token"], "max_keys", integer(n))
    }

    /// In bytes.
    pub fn soap_header_limit(self, bytes: usize) -> Self {
        self.set(&["soap"], "header_limit", bytes.to_string())
    }

    /// `[broker.client_secrets]`: the local secret SDK tools send for `tenant`.
    pub fn broker_client_secret(self, tenant: &str, secret: &str) -> Self {
        self.set(&["broker", "client_secrets"], tenant, secret)
    }

    pub fn tenant(self, tenant: Tenant) -> Self {
        let Tenant { name, table } = tenant;
        self.set(&["tenants"], &name, table)
    }

    /// The configuration as TOML text.
    pub fn render(&self) -> String {
        toml::to_string(&self.root).expect("a TOML table renders")
    }

    /// The configuration as the proxy reads it (relative paths from `base_dir`).
    pub fn settings(&self, base_dir: &Path) -> Settings {
        let text = self.render();
        Settings::from_toml(&text, |name| std::env::var(name).ok(), base_dir)
            .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"))
    }

    pub async fn start(self) -> TestProxy {
        self.start_in(Path::new(".")).await
    }

    pub async fn start_in(self, base_dir: &Path) -> TestProxy {
        init();
        let admin = self.admin_listener;
        TestProxy::serve(self.settings(base_dir), admin).await
    }

    /// Serves `server.admin_listen` too, on its own free port
    /// (`TestProxy::admin`). The settings say `127.0.0.1:0`.
    pub fn admin_listener(mut self) -> Self {
        self.admin_listener = true;
        self.set(&["server"], "admin_listen", "127.0.0.1:0")
    }

    fn set(mut self, section: &[&str], key: &str, value: impl Into<Value>) -> Self {
        let mut table = &mut self.root;
        for name in section {
            let entry = table
                .entry(name.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            table = entry.as_table_mut().expect("a section is a table");
        }
        table.insert(key.to_owned(), value.into());
        self
    }
}

/// A `[tenants.NAME]` table: auth URL, the fake's client ID and secret, and
/// whatever else a test sets.
#[derive(Clone)]
pub struct Tenant {
    name: String,
    table: Table,
}

impl Tenant {
    /// A tenant whose auth endpoint is the fake `fake`.
    pub fn new(name: &str, fake: &FakeTenant) -> Self {
        Self::at(name, &fake.auth_url())
    }

    /// A tenant whose auth endpoint is `auth_url` (for hand-made endpoints).
    pub fn at(name: &str, auth_url: &str) -> Self {
        let tenant = Tenant {
            name: name.to_owned(),
            table: Table::new(),
        };
        tenant
            .set("auth_url", auth_url)
            .set("client_id", CLIENT_ID)
            .client_secret(CLIENT_SECRET)
    }

    pub fn client_secret(self, secret: &str) -> Self {
        self.set("client_secret", secret)
    }

    /// No `client_secret` at all (a Public App).
    pub fn without_client_secret(mut self) -> Self {
        self.table.remove("client_secret");
        self
    }

    pub fn account_id(self, mid: &str) -> Self {
        self.set("account_id", mid)
    }

    pub fn account_ids(self, mids: &[&str]) -> Self {
        self.set("account_ids", strings(mids))
    }

    pub fn scope(self, scope: &str) -> Self {
        self.set("scope", scope)
    }

    pub fn path_prefix(self, prefix: &str) -> Self {
        self.set("path_prefix", prefix)
    }

    pub fn default(self, default: bool) -> Self {
        self.set("default", default)
    }

    /// `"client_credentials"` or `"authorization_code"`.
    pub fn grant(self, grant: &str) -> Self {
        self.set("grant", grant)
    }

    /// `"web"` or `"public"`.
    pub fn app_type(self, app_type: &str) -> Self {
        self.set("app_type", app_type)
    }

    pub fn redirect_uri(self, uri: &str) -> Self {
        self.set("redirect_uri", uri)
    }

    pub fn pkce(self, pkce: bool) -> Self {
        self.set("pkce", pkce)
    }

    pub fn read_only(self, read_only: bool) -> Self {
        self.set("read_only", read_only)
    }

    pub fn allow_paths(self, prefixes: &[&str]) -> Self {
        self.set("allow_paths", strings(prefixes))
    }

    pub fn deny_paths(self, prefixes: &[&str]) -> Self {
        self.set("deny_paths", strings(prefixes))
    }

    pub fn retry_throttled(self, on: bool) -> Self {
        self.set("retry_throttled", on)
    }

    pub fn max_concurrent_requests(self, n: usize) -> Self {
        self.set("max_concurrent_requests", integer(n))
    }

    pub fn queue_timeout(self, timeout: Duration) -> Self {
        self.set("queue_timeout", duration(timeout))
    }

    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.table.insert(key.to_owned(), value.into());
        self
    }
}

/// A fake tenant `acme` and a proxy in front of it.
pub struct Setup {
    pub fake: FakeTenant,
    pub proxy: TestProxy,
    pub client: TestClient,
}

/// `Setup` with no settings beyond the tenant `acme` itself.
pub async fn setup() -> Setup {
    Setup::builder().start().await
}

/// The same, with tenant `acme` allowing these business units (MIDs).
pub async fn setup_with_business_units(mids: &[&str]) -> Setup {
    Setup::builder()
        .tenant(|t| t.account_ids(mids))
        .start()
        .await
}

impl Setup {
    pub fn builder() -> SetupBuilder {
        SetupBuilder {
            proxy: TestProxy::builder(),
            // Its auth URL is the fake's, known once the fake runs.
            acme: Tenant::at("acme", ""),
        }
    }
}

pub struct SetupBuilder {
    proxy: ProxyBuilder,
    acme: Tenant,
}

impl SetupBuilder {
    /// The proxy's settings besides the tenant.
    pub fn proxy(mut self, configure: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> Self {
        self.proxy = configure(self.proxy);
        self
    }

    /// The tenant `acme`'s settings besides its auth URL and credentials.
    pub fn tenant(mut self, configure: impl FnOnce(Tenant) -> Tenant) -> Self {
        self.acme = configure(self.acme);
        self
    }

    pub async fn start(self) -> Setup {
        let fake = start_fake().await;
        let acme = self.acme.set("auth_url", fake.auth_url());
        let proxy = self.proxy.tenant(acme).start().await;
        Setup {
            fake,
            proxy,
            client: TestClient::new(),
        }
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

fn integer(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().ok().expect("a TOML integer"))
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}
