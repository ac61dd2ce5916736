//! sfmc-proxy: an authenticating reverse proxy for Salesforce Marketing Cloud.
//!
//! Scripts, Postman and SDKs talk plain HTTP to the proxy; it gets or reuses the
//! right OAuth2 token for the tenant, business unit and scope, rewrites the
//! request to the tenant's instance with `Authorization: Bearer …`, and streams
//! the answer back. The client secret lives only here.
//!
//! # Layout
//! One module per job; a request travels through them in this order:
//! - [`server`]: accept loop, connection limit (shedding the longest-idle
//!   connection; resized by a reload), per-connection deadlines (first head,
//!   idle), HTTP/2 limits, graceful shutdown (`server.shutdown_timeout`).
//! - `proxy`: the pipeline — runs the phases below in order, nothing else.
//!   A `Proxy` is one generation of the configuration; [`reload`] holds the
//!   current one (`Live`, swapped atomically; a request keeps the one it
//!   began with) and replaces it on SIGHUP, keeping the tokens of tenants
//!   whose credentials did not change.
//! - [`guard`]: inbound checks — Host allowlist, cross-site refusal and CORS, no
//!   forward proxying — and the one decision of who is calling (`Caller`,
//!   with the one Bearer parser).
//! - [`route`]: request → tenant, business unit (MID), scope and forwarded path,
//!   and every path constant; `POST /v2/token` → the `broker`, `/_proxy/*` →
//!   `admin`.
//! - `policy`: a tenant's `deny_paths`, `allow_paths` and `read_only`, once
//!   routing knows the tenant and before any token is fetched (a SOAP call's
//!   operation is read from its whole envelope, bounded).
//! - `broker`: the local `/v2/token` for SDK tools, and the local tokens it issues
//!   (a request carrying one is served as the tenant and MID it is bound to).
//! - [`token`]: `TokenKey` (and its one checked constructor), `TokenCache`
//!   (single-flight, refresh-ahead, backoff, a per-tenant rate limit, bounded
//!   keys), the SFMC `/v2/token` client (client credentials, refresh and code
//!   grants) and the refresh-token store. It knows nothing of HTTP serving.
//! - `forward`: request rewrite, replayable bodies, and each API's send
//!   (`forward/rest.rs`, `forward/soap.rs`), each tenant's
//!   `max_concurrent_requests` (`forward/slots.rs`); `replay`: the
//!   replay-once rule after SFMC refuses a token and the retry after SFMC
//!   throttles, written once for both (the throttling rule itself, pure,
//!   is `throttle`'s).
//! - [`upstream`]: the client to SFMC's instances (connect, pool) and the
//!   instance address (`InstanceBase`, checked before a token goes there).
//! - `soap`: the token into a SOAP envelope (namespace-aware, streaming), SOAP faults.
//! - [`headers`]: hop-by-hop and control-header stripping.
//! - `admin`: the proxy's own `/_proxy/*` paths (health, ready, metrics,
//!   the browser login, the status page as JSON and HTML and its "drop
//!   cached token" action); `readiness`: each tenant's state (`ready`, `starting`,
//!   `login_required`, `failing`, `degraded`) and the `server.ready_requires`
//!   rule, read from the token cache without ever joining a fetch in flight.
//! - `prefetch`: at start, each client-credentials tenant's default token,
//!   fetched in the background, and one log line per tenant saying how it went.
//! - [`login`]: a person's login (authorization code, PKCE) for `sfmc-proxy
//!   login` and `/_proxy/login` alike: start, the TLS listener for the
//!   redirect, pending browser logins, `/_proxy/callback` behind a TLS
//!   front (its waiting logins in process or in Redis), the code exchange.
//! - [`telemetry`]: logging set-up, the access-log event, and the metrics
//!   registry behind `/_proxy/metrics` (fed by the same record when a
//!   response ends, by the token cache's `TokenEvents` hook, and read from
//!   the cache's ledger at scrape time).
//!
//! Shared by the phases: `body` (the body type), `failures` (the one place
//! a token failure, a refused key or a missing tenant becomes a
//! `ProxyError`). Leaves, importing no other module: [`config`] (TOML →
//! validated `Settings`, one file a section, every default named in
//! `config/defaults.rs`), `error` (`ProxyError` → status, side, code,
//! message: one table), [`headers`], `idle` (the idle timer on client and
//! SFMC bodies), [`tls`] (crypto provider, trust roots, randomness), `sync`
//! (poison-tolerant lock access), `gauge` (a gauge raised while a guard
//! lives). [`cli`] holds the subcommands. Modules
//! without a link are `pub(crate)`: only the binary, the tests, the
//! benchmarks and the fuzz targets need the rest. No two modules import each
//! other (`.ci/module_cycles.py` checks it in CI).
//!
//! The fake SFMC tenant that `demo` and the tests start is not a module: it
//! is the `sfmc-fake` crate (crates/sfmc-fake, behind the default `demo`
//! feature), which never depends on this one. `fuzzing` (hidden) is the door
//! the fuzz targets in `fuzz/` go through.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod broker;
pub mod cli;
pub mod config;
pub(crate) mod error;
pub(crate) mod failures;
pub(crate) mod fleet;
pub(crate) mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod gauge;
pub mod guard;
pub mod headers;
pub(crate) mod idle;
pub mod login;
pub(crate) mod policy;
pub(crate) mod prefetch;
pub(crate) mod proxy;
pub(crate) mod readiness;
pub mod reload;
pub(crate) mod replay;
pub mod route;
pub mod server;
pub(crate) mod soap;
pub(crate) mod sync;
pub mod telemetry;
pub(crate) mod throttle;
pub mod tls;
pub mod token;
pub mod upstream;
