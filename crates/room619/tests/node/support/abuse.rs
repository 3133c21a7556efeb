//! Drives `h2_abuse.py` (raw HTTP/2 frames, Python `h2`) against a node, and
//! measures a well-behaved client beside it.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tonic::transport::Channel;

/// The Python interpreter with `h2` installed (`scripts/test` sets it).
const PYTHON_VAR: &str = "H2_ABUSE_PYTHON";

/// How the server reacted to an attack, as the script reports it.
#[derive(Debug, serde::Deserialize)]
pub struct Report {
    /// Frames sent before the end or the server stopped the attack.
    pub sent: u64,
    /// A send blocked for 2 s: the server stopped reading.
    pub throttled: bool,
    /// The server closed the connection.
    pub closed: bool,
    /// The GOAWAY error code received, if any.
    pub goaway: Option<u32>,
    /// `RST_STREAM` frames received.
    pub resets: u64,
    /// The whole report as the script printed it.
    #[serde(skip)]
    pub raw: String,
}

/// `ENHANCE_YOUR_CALM`.
pub const ENHANCE_YOUR_CALM: u32 = 11;

/// Runs `attack` with `count` against `addr` (blocking; run it on a blocking
/// thread).
pub fn run_attack(attack: &str, addr: SocketAddr, count: u32) -> Report {
    let python = std::env::var(PYTHON_VAR).unwrap_or_else(|_| {
        panic!("{PYTHON_VAR} is not set: run the tests through scripts/test, which installs h2")
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/support/h2_abuse.py"
    );
    let output = Command::new(python)
        .args([script, attack, &addr.to_string(), &count.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{attack}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut report: Report = serde_json::from_slice(&output.stdout).unwrap();
    report.raw = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    report
}

/// Attacks run one at a time: each takes a core, and memory is measured for
/// the whole process.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The 99th percentile of `samples`.
pub fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let rank = samples.len() * 99 / 100;
    samples[rank.min(samples.len() - 1)]
}

/// Latencies of `calls` sequential unary echo calls.
pub async fn echo_latencies(client: &mut EchoClient<Channel>, calls: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client
            .echo(EchoRequest {
                message: "well-behaved".into(),
                ..EchoRequest::default()
            })
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// This process's resident memory in bytes (the node runs in it).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
