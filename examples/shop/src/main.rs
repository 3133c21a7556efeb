//! `room619`: the demo shop's binary.
//!
//! `cargo run --release` starts every demo service in one process and prints
//! where it listens; `room619 serve --services a,b` runs only some of them
//! (one process per service across machines, see `docs/MULTI_PROCESS.md`).
//! `room619 health`, `room619 call` and `room619 registry list` check, call
//! and inspect running nodes. Configuration comes from `--config FILE`,
//! `ROOM619_*` variables and the flags; an invalid configuration or command
//! line exits with status 2. `room619 --help` says the rest.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(shop::services)
}
