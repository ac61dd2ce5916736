//! The `sfmc-proxy` binary: parse the command line and hand over to [`sfmc_proxy::cli`].

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = sfmc_proxy::cli::Cli::from_command_line();
    sfmc_proxy::tls::install_crypto_provider();
    // Until the very end: `run` returns after `serve`'s graceful shutdown.
    let _logs = sfmc_proxy::telemetry::init(cli.log_format);
    sfmc_proxy::cli::run(cli)
}
