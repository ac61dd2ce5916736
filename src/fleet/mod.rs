//! The fleet: what replicas of the proxy share through Redis (`[redis]`),
//! so that they behave as one — one token per (tenant, business unit,
//! scope) for all of them. `tokens` is the token source that makes it so,
//! `client` the Redis client, `seal` what protects what is stored and
//! names it, `health` whether Redis answers (metrics, logs, readiness).
//!
//! Without `[redis]` nothing here runs.

mod client;
mod health;
mod seal;
mod tokens;

pub use health::Health;
pub use seal::Sealer;
pub use tokens::SharedTokens;
