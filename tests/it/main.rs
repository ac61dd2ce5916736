//! The integration tests, in one binary: `support` starts a fake SFMC tenant
//! and a proxy on 127.0.0.1 (ephemeral ports) and holds the shared helpers;
//! each other module is one capability, tested over real sockets.

mod support;

mod admin;
mod broker;
mod cli;
mod diagnosis;
mod egress;
mod flags;
mod fleet;
mod forward_proxy;
mod guard;
mod hints;
mod install;
mod login;
mod logs;
mod metrics;
mod parking;
mod policy;
mod pool;
mod prometheus;
mod reload;
mod rest;
mod security;
mod soap;
mod soap_faults;
mod status;
mod tenants;
mod throttling;
mod tokens;
