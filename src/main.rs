//! The `smtp-oauth-relay` binary: parse the command line, install the TLS provider and the
//! log subscriber, run the command on a multi-threaded tokio runtime.

use std::process::ExitCode;

use clap::Parser;
use smtp_oauth_relay::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    smtp_oauth_relay::tls::install_default_provider();
    smtp_oauth_relay::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}
