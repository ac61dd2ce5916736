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
//!   connection), per-connection deadlines (first head, idle), HTTP/2 limits,
//!   graceful shutdown.
//! - [`proxy`]: the pipeline — runs the phases below in order, replays once after a 401.
//! - [`guard`]: inbound checks — Host allowlist, cross-site refusal and CORS, no
//!   forward proxying — and the one decision of who is calling (`Caller`).
//! - [`route`]: request → tenant, business unit (MID), scope and forwarded path;
//!   `POST /v2/token` → the [`broker`], `/_proxy/*` → [`admin`].
//! - [`broker`]: the local `/v2/token` for SDK tools, and the local tokens it issues
//!   (a request carrying one is served as the tenant and MID it is bound to).
//! - [`token`]: `TokenCache` (single-flight, refresh-ahead, backoff, a per-tenant
//!   rate limit, bounded keys), the SFMC `/v2/token` client (client credentials,
//!   refresh and code grants) and the refresh-token store.
//! - [`forward`]: request rewrite, replayable bodies; `replay`: the
//!   replay-once rule after SFMC refuses a token, for REST and SOAP alike.
//! - [`upstream`]: the client to SFMC's instances, its connection pool and the
//!   instance address (`InstanceBase`, checked before a token goes there).
//! - [`soap`]: the token into a SOAP envelope (namespace-aware, streaming), SOAP faults.
//! - [`headers`]: hop-by-hop and control-header stripping.
//! - [`admin`]: the proxy's own `/_proxy/*` paths (health, ready, the browser login).
//! - [`oauth`]: a person's login (authorization code): authorize URL, state, the
//!   TLS listener for the redirect, the pasted URL.
//! - [`telemetry`]: logging set-up and the access-log event.
//!
//! Leaves used by all: [`config`] (TOML → validated `Settings`), [`error`]
//! (`ProxyError` → status, JSON body, `x-sfmc-proxy-error`), [`body`] (the body
//! type), [`idle`] (the idle timer on client and SFMC bodies), [`tls`] (crypto
//! provider, trust roots), `sync` (poison-tolerant lock access); [`cli`] holds
//! the subcommands. The fake SFMC tenant that `demo` and the tests start is not
//! a module: it is the `sfmc-fake` crate (crates/sfmc-fake), which never
//! depends on this one.
//! `fuzzing` (hidden) is the door the fuzz targets in `fuzz/` go through.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod broker;
pub mod cli;
pub mod config;
pub(crate) mod error;
pub(crate) mod failures;
pub(crate) mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod headers;
pub(crate) mod idle;
pub mod login;
pub(crate) mod proxy;
pub(crate) mod replay;
pub mod route;
pub mod server;
pub(crate) mod soap;
pub(crate) mod sync;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;
