//! Every default of `proxy.toml`, named, in one place: what a key is when the
//! file does not set it. The README's configuration reference and
//! `proxy.toml`'s comments state the same values.

use std::time::Duration;

/// `server.listen`: loopback only, so nothing off the machine reaches the
/// credentials unless the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `server.allowed_hosts` without inbound keys: the loopback names (plus the
/// listen address itself), since any other name may be a web page that
/// rebound its own name to this address.
pub const DEFAULT_ALLOWED_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// `server.header_read_timeout`: time a new connection has to send its first
/// request head (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `server.idle_timeout` and `upstream.idle_timeout` (nginx's keep-alive and
/// send timeouts are of the same order).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// `server.max_concurrent_streams`: HTTP/2 streams per connection (Envoy,
/// nginx and Go's server use 100 to 250).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;

/// `server.log_paths`: the access log names each request's path (never its
/// query); off for users whose paths carry customer data.
pub const DEFAULT_LOG_PATHS: bool = true;

/// `server.shutdown_timeout`: how long in-flight requests (a long download)
/// may run on after SIGTERM or Ctrl-C; what `docker stop` waits by default
/// is 10 s, Kubernetes' grace period 30 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// `token.refresh_before_expiry`: SFMC tokens live about 20 minutes.
pub const DEFAULT_REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(120);

/// `token.replay_body_limit`: a body up to this size is held so a request
/// can be replayed once after SFMC refuses its token.
pub const DEFAULT_REPLAY_BODY_LIMIT: usize = 64 * 1024;

/// `token.rate_burst` and `token.rate_interval`: token requests a tenant may
/// send to SFMC at once, and how fast one is regained.
pub const DEFAULT_RATE_BURST: u32 = 4;
pub const DEFAULT_RATE_INTERVAL: Duration = Duration::from_secs(5);

/// `token.request_timeout`: one `/v2/token` call. SFMC answers in well under
/// a second; a call this slow is an outage, worth one more try.
pub const DEFAULT_TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `token.fetch_deadline`: one fetch, retries included; a client waits at most
/// about this long for a 503 when the auth host is down.
pub const DEFAULT_TOKEN_FETCH_DEADLINE: Duration = Duration::from_secs(20);

/// `token.prefetch`: fetch each client-credentials tenant's default token
/// at start, so a wrong secret shows in the log at once.
pub const DEFAULT_PREFETCH: bool = true;

/// `server.ready_requires`: `/_proxy/ready` is 200 only when every tenant
/// (login tenants aside) is ready.
pub const DEFAULT_READY_REQUIRES: super::ReadyRequires = super::ReadyRequires::All;

/// `token.max_keys`: (tenant, business unit, scope) keys the cache holds.
pub const DEFAULT_MAX_KEYS: usize = 1024;

/// `upstream.connect_timeout` and `upstream.response_timeout` (SFMC's slow
/// calls, large data extension reads, take minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// `upstream.retry_throttled`: off, SFMC's 429 and 503 reach the client as
/// they are (its own retry logic may already handle them).
pub const DEFAULT_RETRY_THROTTLED: bool = false;

/// `upstream.max_retry_wait`: the longest `Retry-After` the proxy waits out
/// itself; a longer one is the client's to handle (no caller should hang
/// minutes on a proxy that looks dead).
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// `tenants.NAME.queue_timeout`: how long a request waits for one of its
/// tenant's `max_concurrent_requests` slots before `503 upstream_busy`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// `upstream.allowed_instance_hosts`: SFMC's own instance hosts.
pub const DEFAULT_ALLOWED_INSTANCE_HOSTS: [&str; 1] = [".marketingcloudapis.com"];

/// `tenants.NAME.read_only`: off, every method passes (`allow_paths` and
/// `deny_paths` are empty unless set: no path is refused).
pub const DEFAULT_READ_ONLY: bool = false;

/// `soap.header_limit` and `soap.preauth_limit`.
pub const DEFAULT_SOAP_HEADER_LIMIT: usize = 1024 * 1024;
pub const DEFAULT_SOAP_PREAUTH_LIMIT: usize = 8 * 1024;

/// `broker.token_lifetime`: local tokens last as long as SFMC's
/// server-to-server tokens (18 minutes, inside SFMC's own 20), so SDKs renew
/// them the same way (FuelSDK when under 300 s remain, sfmc-sdk at expiry).
pub const DEFAULT_BROKER_TOKEN_LIFETIME: Duration = Duration::from_secs(1080);

/// `tenants.NAME.pkce`.
pub const DEFAULT_PKCE: bool = true;

/// `redis.key_prefix`: every key the proxy writes starts with it.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "sfmc-proxy:";

/// `redis.lock_timeout`: twice a token request's `token.request_timeout`,
/// so a fetch fits in one lease; a replica that dies holding the lock
/// frees it after this.
pub const DEFAULT_REDIS_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// `redis.operation_timeout`: Redis answers in well under a millisecond on
/// a local network; slower is a Redis in trouble, and requests go on
/// without it.
pub const DEFAULT_REDIS_OPERATION_TIMEOUT: Duration = Duration::from_millis(250);
