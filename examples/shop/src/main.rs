//! `room619`: the demo shop's binary.
//!
//! `cargo run --release` starts every demo service in one process and prints
//! where it listens; `room619 serve --services a,b` runs only some of them
//! (one process per service across machines, see `docs/MULTI_PROCESS.md`).
//! `room619 health`, `room619 call` and `room619 registry list` check, call
//! and inspect running nodes. Configuration comes from `--config FILE`,
//! `ROOM619_*` variables and the flags; an invalid configuration or command
//! line exits with status 2. `room619 --help` says the rest.

mod echo;

mod cli;

use std::process::ExitCode;

use room619::{config::Config, service::BuiltService};

fn main() -> ExitCode {
    cli::main(services)
}

/// Every service this binary can host, in start order; `node.services`
/// (`--services`) picks the ones that run. One line per service; `config`
/// is the node's configuration, for services that need their settings
/// (`[app.shop]`) or storage.
async fn services(_config: &Config) -> room619::Result<Vec<BuiltService>> {
    Ok(vec![
        echo::service()?, // shop.echo.v1.Echo
    ])
}
