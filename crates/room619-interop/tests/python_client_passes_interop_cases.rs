#![cfg(test)]
//! The gRPC interop cases, driven by the Python client (`grpcio`) against a
//! real room619 node on `127.0.0.1:0` hosting [`room619_interop::service`].
//!
//! The client is `python/interop_client.py`, run with the interpreter named by
//! `INTEROP_PYTHON` (set by `scripts/test`, which installs grpcio in
//! `target/interop-venv`); without it the tests fail, they never skip.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use room619::config::ConfigLoader;

/// How long one case may take, client start-up (compiling the protos) included.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn empty_unary_passes() {
    passes("empty_unary").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_unary_passes() {
    passes("large_unary").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_streaming_passes() {
    passes("client_streaming").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_streaming_passes() {
    passes("server_streaming").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_pong_passes() {
    passes("ping_pong").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_code_and_message_passes() {
    passes("status_code_and_message").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn special_status_message_passes() {
    passes("special_status_message").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_metadata_passes() {
    passes("custom_metadata").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_on_sleeping_server_passes() {
    passes("timeout_on_sleeping_server").await;
}

/// Starts a node hosting the interop service, runs the Python client for
/// `case` against it, stops the node, and asserts the client passed.
async fn passes(case: &str) {
    let python = python();
    let config = ConfigLoader::new()
        .toml_str(
            "[node]\nlisten = \"127.0.0.1:0\"\nname = \"interop-node\"\ndrain_timeout = \"5s\"\n",
        )
        .without_env()
        .load()
        .unwrap();
    let node = room619::Node::builder()
        .config(config)
        .service(room619_interop::service().unwrap())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let port = node.local_addr().port();

    // tokio's Command: the client runs while this runtime keeps serving it.
    let client = tokio::process::Command::new(&python)
        .arg(client_script())
        .arg("--server_host=127.0.0.1")
        .arg(format!("--server_port={port}"))
        .arg(format!("--test_case={case}"))
        .arg(format!(
            "--proto_path={}",
            room619_interop::proto::PROTO_DIR
        ))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CASE_TIMEOUT, client).await;
    node.shutdown().await.unwrap();

    let output = output
        .unwrap_or_else(|_| panic!("the interop client ran {case} for over {CASE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("could not run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop case {case} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status,
    );
    assert!(
        stdout.lines().any(|line| line == format!("PASS {case}")),
        "interop client exited 0 without reporting {case}:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
    );
    print!("{stdout}"); // the client's case lines, for `--nocapture`
}

/// The Python interpreter with grpcio: `INTEROP_PYTHON`, else the
/// virtualenv `scripts/test` creates. Missing is a failure, not a skip.
fn python() -> PathBuf {
    let python = std::env::var_os("INTEROP_PYTHON").map_or_else(
        || workspace_root().join("target/interop-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "the interop tests need Python with grpcio, and {} does not exist: run `scripts/test` \
         (it installs them in target/interop-venv and sets INTEROP_PYTHON)",
        python.display(),
    );
    python
}

/// `python/interop_client.py` of this crate.
fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/interop_client.py")
}

/// The workspace root: two levels above this crate.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
