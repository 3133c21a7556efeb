//! The gateway in front of in-memory stand-ins of the auth, users and
//! products services (the test fakes of `tests/support/fakes.rs`), for
//! `scripts/schemathesis` and manual poking; not the shop itself.
//!
//! `cargo run -p shop --example gateway_stubs [ADDR]` (default
//! `127.0.0.1:0`) prints `base=http://ADDR` and `token=JWT` (a token the
//! node accepts, for subject `tester`), then serves until Ctrl-C or SIGTERM.

#[path = "../tests/support/fakes.rs"]
mod fakes;

use std::io::Write as _;

use room619::{Node, config::ConfigLoader};

#[tokio::main]
async fn main() -> room619::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let toml = format!(
        "[node]\nlisten = \"{listen}\"\nname = \"gateway-stubs\"\ndrain_timeout = \"2s\"\n{}",
        fakes::auth_toml()
    );
    let config = ConfigLoader::new().toml_str(toml).without_env().load()?;
    let stubs = fakes::Fakes::default();
    let mut builder = Node::builder()
        .config(config)
        .service(shop::gateway::service()?);
    for service in stubs.services()? {
        builder = builder.service(service);
    }
    let running = builder.build()?.start().await?;
    let handle = running.handle();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "base=http://{}\ntoken={}",
        handle.local_addr(),
        fakes::token("tester")
    )?;
    stdout.flush()?;
    drop(stdout);
    tokio::spawn(async move {
        room619::node::shutdown_signal().await;
        handle.shutdown();
    });
    running.wait().await
}
