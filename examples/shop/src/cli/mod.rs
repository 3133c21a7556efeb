//! The `room619` command line: `serve` (the default) runs a node; `health`,
//! `call` and `registry list` talk to a running one.
//!
//! Exit status, for every command: `0` success, `1` the check or call failed
//! (not serving, unreachable, a gRPC error), `2` bad arguments or
//! configuration.

mod call;
mod health;
mod registry;
mod serve;
mod target;

use std::{future::Future, io::Write as _, pin::Pin, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use room619::config::{Config, ConfigArgs};

/// Exit status for an invalid command line or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status for a failed check or call.
const EXIT_FAILED: u8 = 1;

/// The room619 demo shop: serves its services, and checks, calls and
/// inspects running nodes.
#[derive(Debug, Parser)]
#[command(
    name = "room619",
    version,
    after_help = "Without a command, `room619` serves (as `room619 serve`).\n\
                  Exit status: 0 success, 1 failed (not serving, unreachable, gRPC error), \
                  2 bad arguments or configuration."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration flags of the default `serve` command.
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the selected services until SIGTERM or Ctrl-C (the default
    /// command): `room619 serve --services users,products --config node.toml`.
    Serve(ServeArgs),
    #[command(
        about = "Checks a node's health: `/health/ready`, or the gRPC health service with \
                 `--grpc`. Prints SERVING or NOT_SERVING; exits 0 when serving, 1 when not \
                 or unreachable"
    )]
    Health(health::HealthArgs),
    /// Calls a gRPC method of a node's service with a JSON message and prints
    /// the answer as JSON; the contract comes from the node's reflection.
    Call(call::CallArgs),
    /// What a node knows of services: its own and, through its discovery,
    /// every instance of every service.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// The node could not be reached, or the call failed: exit 1.
    Failed(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        match self {
            Self::Usage(message) => {
                report(&format!("room619: {message}"));
                ExitCode::from(EXIT_USAGE)
            }
            Self::Failed(message) => {
                report(&format!("room619: {message}"));
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// What a client command does, run on a small runtime.
type Work = Pin<Box<dyn Future<Output = Result<ExitCode, Failure>>>>;

/// Runs the command line; `services` builds every service `serve` may host
/// (`node.services` picks the ones that run).
pub(crate) fn main(
    services: impl AsyncFnOnce(&mut Config) -> room619::Result<shop::Shop>,
) -> ExitCode {
    let cli = Cli::parse();
    let work: Work = match cli.command {
        None => return serve::run(&cli.config, services),
        Some(Command::Serve(args)) => {
            return serve::run(&merged(cli.config, args.config), services);
        }
        Some(Command::Health(args)) => Box::pin(health::run(args)),
        Some(Command::Call(args)) => Box::pin(call::run(args)),
        Some(Command::Registry(command)) => Box::pin(registry::run(command)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return Failure::Failed(format!("cannot start the async runtime: {err}")).exit();
        }
    };
    runtime.block_on(work).unwrap_or_else(Failure::exit)
}

/// The flags given after `serve`, falling back to those given before it.
fn merged(top: ConfigArgs, serve: ConfigArgs) -> ConfigArgs {
    ConfigArgs {
        config: serve.config.or(top.config),
        listen: serve.listen.or(top.listen),
        admin_listen: serve.admin_listen.or(top.admin_listen),
        services: serve.services.or(top.services),
        log_level: serve.log_level.or(top.log_level),
        log_format: serve.log_format.or(top.log_format),
    }
}

/// Parses a duration flag such as `5s` or `250ms`.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value)
        .map_err(|err| format!("`{value}` is not a duration such as 5s or 500ms: {err}"))?;
    if duration.is_zero() {
        return Err("the timeout must be more than 0".to_owned());
    }
    Ok(duration)
}

/// The CLI's intended output, on standard output.
pub(crate) fn announce(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if the terminal is gone.
    if writeln!(stdout, "{text}").is_err() {
        tracing::debug!("stdout is closed");
    }
}

/// An error for the person at the terminal, on standard error.
pub(crate) fn report(text: &str) {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "{text}").is_err() {
        tracing::debug!("stderr is closed");
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_after_serve_win_over_those_before_it() {
        let cli = Cli::parse_from([
            "room619",
            "--listen",
            "127.0.0.1:1",
            "--log-level",
            "debug",
            "serve",
            "--listen",
            "127.0.0.1:2",
            "--services",
            "echo",
        ]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("not serve: {:?}", cli.command);
        };
        let args = merged(cli.config, serve.config);
        assert_eq!(args.listen, Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        assert_eq!(args.services, Some(vec!["echo".to_owned()]));
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }
}
