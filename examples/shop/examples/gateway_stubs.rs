//! The gateway in front of in-memory stand-ins of the auth, users and
//! products services (the test fakes of `tests/support/fakes.rs`), for
//! `scripts/schemathesis` and manual poking; not the shop itself.
//!
//! `cargo run -p shop --example gateway_stubs [ADDR]` (default
//! `127.0.0.1:0`) signs up `tester@example.com` through the gateway, prints
//! `base=http://ADDR`, `user=ID` and `token=JWT` (that user's access
//! token), then serves until Ctrl-C or SIGTERM.

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
    let base = format!("http://{}", running.local_addr());
    let (user, token) = sign_up(&base).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "base={base}\nuser={user}\ntoken={token}")?;
    stdout.flush()?;
    drop(stdout);
    running.stop_on_signal().await
}

/// Signs the tester up through the gateway; their id and access token.
async fn sign_up(base: &str) -> room619::Result<(String, String)> {
    let failed =
        |err: reqwest::Error| room619::Error::unavailable("sign-up failed").with_source(err);
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/auth/signup"))
        .json(&serde_json::json!({
            "email": "tester@example.com",
            "password": "a long password",
            "name": "Tester",
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?
        .json()
        .await
        .map_err(failed)?;
    match (
        reply["user_id"].as_str(),
        reply["tokens"]["access_token"].as_str(),
    ) {
        (Some(user), Some(token)) => Ok((user.to_owned(), token.to_owned())),
        _ => Err(room619::Error::internal("the sign-up answer has no token")),
    }
}
