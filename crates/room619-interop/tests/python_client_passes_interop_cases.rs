#![cfg(test)]
//! The gRPC interop cases, driven by the Python client (`grpcio`) against a
//! real room619 node on `127.0.0.1:0` hosting [`room619_interop::service`].
//!
//! The client is `python/interop_client.py`, run with the interpreter named by
//! `INTEROP_PYTHON` (set by `scripts/test`, which installs grpcio in
//! `target/interop-venv`); without it the tests fail, they never skip.
//!
//! Once the client reports its case passed, it holds its channel open until
//! its stdin closes; meanwhile each test checks the server side through a
//! [`CallLog`]: no call is left in flight, and the calls that ended cancelled
//! are the ones the case cancels. A server that noticed a cancellation only
//! when the connection closed would fail that check.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use room619::{RunningNode, config::ConfigLoader};
use room619_interop::CallLog;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};

/// How long one case may take, client start-up (compiling the protos) included.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the server may take to end its calls once the case has passed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the client may take to exit once its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The method the cancel cases cancel after a response, and the one
/// `timeout_on_sleeping_server` lets time out.
const FULL_DUPLEX_CALL: &str = "/grpc.testing.TestService/FullDuplexCall";

/// The method `cancel_after_begin` cancels.
const STREAMING_INPUT_CALL: &str = "/grpc.testing.TestService/StreamingInputCall";

/// How the server must have seen a case's calls end.
#[derive(Debug, Clone, Copy)]
struct ServerSees {
    /// Methods whose calls must have ended cancelled.
    cancelled: &'static [&'static str],
    /// Methods whose calls may have ended cancelled, or not (or never
    /// reached the server).
    maybe_cancelled: &'static [&'static str],
}

/// Every call was answered with its status; none was cancelled.
const ALL_ANSWERED: ServerSees = ServerSees {
    cancelled: &[],
    maybe_cancelled: &[],
};

#[tokio::test(flavor = "multi_thread")]
async fn empty_unary_passes() {
    passes("empty_unary", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_unary_passes() {
    passes("large_unary", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_streaming_passes() {
    passes("client_streaming", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_streaming_passes() {
    passes("server_streaming", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_pong_passes() {
    passes("ping_pong", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_stream_passes() {
    passes("empty_stream", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_code_and_message_passes() {
    passes("status_code_and_message", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn special_status_message_passes() {
    passes("special_status_message", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_metadata_passes() {
    passes("custom_metadata", ALL_ANSWERED).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unimplemented_method_passes() {
    passes("unimplemented_method", ALL_ANSWERED).await;
}

/// The node answers it: `grpc.testing.UnimplementedService` is not hosted,
/// so the interop service never sees the call.
#[tokio::test(flavor = "multi_thread")]
async fn unimplemented_service_passes() {
    passes("unimplemented_service", ALL_ANSWERED).await;
}

/// The client may cancel before the call reaches the server; if it does
/// reach it, the server must see it cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_after_begin_passes() {
    let sees = ServerSees {
        cancelled: &[],
        maybe_cancelled: &[STREAMING_INPUT_CALL],
    };
    passes("cancel_after_begin", sees).await;
}

/// The server answered once, so it had the call: it must notice the cancel
/// (the client's `RST_STREAM`; its connection is still open).
#[tokio::test(flavor = "multi_thread")]
async fn cancel_after_first_response_passes() {
    let sees = ServerSees {
        cancelled: &[FULL_DUPLEX_CALL],
        maybe_cancelled: &[],
    };
    passes("cancel_after_first_response", sees).await;
}

/// The call ends either way the deadline is enforced: the node answering
/// `DEADLINE_EXCEEDED`, or the client cancelling it.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_on_sleeping_server_passes() {
    let sees = ServerSees {
        cancelled: &[],
        maybe_cancelled: &[FULL_DUPLEX_CALL],
    };
    passes("timeout_on_sleeping_server", sees).await;
}

/// Starts a node hosting the interop service, runs the Python client for
/// `case` against it, checks the server side (`sees`) once the client has
/// reported the case passed and before it disconnects, then stops the node
/// and asserts the client passed and the server saw what it should.
async fn passes(case: &str, sees: ServerSees) {
    let python = python();
    let log = CallLog::new();
    let node = start_node(&log).await;
    let port = node.local_addr().port();

    // tokio's Command: the client runs while this runtime keeps serving it.
    let mut client = tokio::process::Command::new(&python)
        .arg(client_script())
        .arg("--server_host=127.0.0.1")
        .arg(format!("--server_port={port}"))
        .arg(format!("--test_case={case}"))
        .arg(format!(
            "--proto_path={}",
            room619_interop::proto::PROTO_DIR
        ))
        .arg("--hold_channel=true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", python.display()));
    let stderr = tokio::spawn(read_all(client.stderr.take().unwrap()));
    let mut stdout = BufReader::new(client.stdout.take().unwrap());

    let pass = format!("PASS {case}");
    let mut printed = String::new();
    let reported = tokio::time::timeout(CASE_TIMEOUT, async {
        let mut line = String::new();
        while stdout.read_line(&mut line).await.unwrap() > 0 {
            printed.push_str(&line);
            if line.trim_end() == pass {
                return true;
            }
            line.clear();
        }
        false
    })
    .await
    .unwrap_or_else(|_| panic!("the interop client ran {case} for over {CASE_TIMEOUT:?}"));

    // The server side, while the client still holds its channel open.
    let left_in_flight = if reported { settle(&log).await } else { 0 };
    let cancelled = log.cancelled();

    drop(client.stdin.take()); // the client closes its channel and exits
    let status = tokio::time::timeout(EXIT_TIMEOUT, client.wait())
        .await
        .unwrap_or_else(|_| panic!("the interop client did not exit after {case}"))
        .unwrap();
    stdout.read_to_string(&mut printed).await.unwrap();
    let stderr = stderr.await.unwrap();
    node.shutdown().await.unwrap();

    assert!(
        status.success(),
        "interop case {case} failed ({status}):\n--- stdout ---\n{printed}\n--- stderr ---\n{stderr}",
    );
    assert!(
        reported,
        "interop client exited 0 without reporting {case}:\n--- stdout ---\n{printed}\n--- stderr ---\n{stderr}",
    );
    assert_eq!(
        left_in_flight, 0,
        "{case}: the server still had calls in flight {SETTLE_TIMEOUT:?} after the client passed",
    );
    for method in sees.cancelled {
        assert!(
            cancelled.iter().any(|ended| ended == method),
            "{case}: the server did not see {method} cancelled (cancelled: {cancelled:?})",
        );
    }
    for method in &cancelled {
        assert!(
            sees.cancelled.contains(&method.as_str())
                || sees.maybe_cancelled.contains(&method.as_str()),
            "{case}: the server saw {method} cancelled, which the case does not cancel \
             (cancelled: {cancelled:?})",
        );
    }
    print!("{printed}"); // the client's case lines, for `--nocapture`
}

/// A started node hosting the interop service, keeping its calls in `log`.
async fn start_node(log: &CallLog) -> RunningNode {
    let config = ConfigLoader::new()
        .toml_str(
            "[node]\nlisten = \"127.0.0.1:0\"\nname = \"interop-node\"\ndrain_timeout = \"5s\"\n",
        )
        .without_env()
        .load()
        .unwrap();
    room619::Node::builder()
        .config(config)
        .service(room619_interop::service_with_log(log.clone()).unwrap())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// Waits until the server has no call in flight, for up to
/// [`SETTLE_TIMEOUT`]; returns how many are left.
async fn settle(log: &CallLog) -> usize {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while log.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.in_flight()
}

/// All of `reader`, as text.
async fn read_all(mut reader: impl AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await.unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
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
