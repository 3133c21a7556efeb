//! `room619`: the demo shop's binary.
//!
//! `cargo run --release` starts every demo service in one process and prints
//! where it listens. Configuration comes from `--config FILE`, `ROOM619_*`
//! variables and the flags below; an invalid configuration exits with status 2.

use std::{io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand};
use room619::{Node, config::ConfigArgs, observability::logging};
use shop::echo;

/// Exit status for an invalid configuration or command line.
const EXIT_BAD_CONFIG: u8 = 2;

/// The room619 demo shop.
#[derive(Debug, Parser)]
#[command(name = "room619", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the selected services (the default command).
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.config.load() {
        Ok(config) => config,
        Err(err) => {
            report(&format!("room619: {err}"));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            report(&format!("room619: cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    // Span export (telemetry.otlp_endpoint), installed before the logging
    // layers; its gRPC channel runs on the runtime.
    let telemetry = {
        let _entered = runtime.enter();
        room619::observability::tracing::Telemetry::new(&config.telemetry, &config.node.name)
    };
    match telemetry {
        Ok(Some(telemetry)) => telemetry.install(),
        Ok(None) => {}
        Err(err) => {
            report(&format!("room619: {err}"));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    }
    if let Err(err) = logging::init(&config.log) {
        report(&format!("room619: {err}"));
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == room619::ErrorKind::Config => {
            report(&format!("room619: {err}"));
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(err) => {
            tracing::error!(error = ?err, "room619 failed");
            report(&format!("room619: {err}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: room619::config::Config) -> room619::Result<()> {
    let running = Node::builder()
        .config(config)
        .service(echo::service()?)
        .build()?
        .start()
        .await?;
    let handle = running.handle();
    let addr = handle.local_addr();
    let admin = handle.admin_addr().unwrap_or(addr);
    let services: Vec<String> = handle
        .registry()
        .list()
        .iter()
        .map(|status| status.descriptor.to_string())
        .collect();
    announce(&format!(
        "room619 is serving {services}\n  \
         gRPC + REST  http://{addr}  (try: curl -s -XPOST http://{addr}/v1/echo -d '{{\"message\":\"hi\"}}' -H 'content-type: application/json')\n  \
         health       http://{admin}/health/ready\n  \
         Ctrl-C stops it gracefully.",
        services = services.join(", ")
    ));
    tokio::spawn(async move {
        room619::node::shutdown_signal().await;
        handle.shutdown();
    });
    running.wait().await
}

/// The CLI's intended output, on standard output.
fn announce(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if the terminal is gone.
    if writeln!(stdout, "{text}").is_err() {
        tracing::debug!("stdout is closed");
    }
}

/// An error for the person at the terminal, on standard error.
fn report(text: &str) {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "{text}").is_err() {
        tracing::debug!("stderr is closed");
    }
}
