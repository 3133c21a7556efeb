//! `loadgen`'s command line.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use room619_bench::chain::ChainAlgorithm;

/// Compares a room619 node with bare tonic and bare axum under the same
/// load: closed-loop, or open-loop at a fixed rate (`--rate`).
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
pub(crate) struct Cli {
    /// Seconds each measured run lasts.
    #[arg(long, default_value = "2", value_parser = seconds)]
    pub(crate) duration: Duration,
    /// Seconds of warm-up per target before the measured rounds.
    #[arg(long, default_value = "1", value_parser = seconds)]
    pub(crate) warmup: Duration,
    /// Callers, so requests in flight at most (gRPC: at most 256 per
    /// HTTP/2 connection, room619's `limits.http2_max_concurrent_streams`).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) concurrency: u32,
    /// HTTP/2 connections the gRPC callers share.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) connections: u32,
    /// Open loop: send this many requests per second in total, on a fixed
    /// schedule the callers share, each timed from its slot in it (a
    /// request whose caller is still busy at its slot is late: sent at
    /// once, timed from the slot). Needs `--runtime split`. [default:
    /// closed loop]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) rate: Option<u32>,
    /// Seconds one request may take; a slower one counts as an error.
    #[arg(long, default_value = "10", value_parser = timeout)]
    pub(crate) timeout: Duration,
    /// Requests that may fail (errors, wrong answers, timeouts; warm-up
    /// included) before `loadgen` exits with an error.
    #[arg(long, default_value_t = 0)]
    pub(crate) max_errors: u64,
    /// Measured runs per target; the table shows the median.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) rounds: u32,
    /// Which comparison to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub(crate) scenario: Scenario,
    /// Servers and load on runtimes of their own (`split`) or on one
    /// (`shared`).
    #[arg(long, value_enum, default_value_t = RuntimeMode::Split)]
    pub(crate) runtime: RuntimeMode,
    /// Worker threads per runtime [default: 1 each when split, all cores
    /// when shared].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) worker_threads: Option<u32>,
    /// Run room619 with the full middleware chain: JWT auth with this
    /// algorithm plus a rate limit per principal (requests carry a token).
    #[arg(long, value_enum, default_value_t = Chain::Off)]
    pub(crate) chain: Chain,
    /// What room619 is compared with: the bare stacks, or (with `--chain`)
    /// a room619 node without auth and rate limits, to isolate the chain.
    #[arg(long, value_enum, default_value_t = Baseline::Bare)]
    pub(crate) baseline: Baseline,
    /// Run room619 observed: the JSON log layer and the OpenTelemetry layer
    /// exporting to a receiver in this process, sampling this ratio of new
    /// traces (0 to 1). Needs `--runtime split`.
    #[arg(long, value_parser = ratio)]
    pub(crate) traced: Option<f64>,
    /// Length of the echoed message, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub(crate) message_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// gRPC unary: bare tonic vs room619.
    Grpc,
    /// REST JSON: bare axum vs room619.
    Rest,
    /// Both, gRPC first.
    All,
}

impl Scenario {
    pub(crate) fn runs(self) -> &'static [Scenario] {
        match self {
            Scenario::Grpc => &[Scenario::Grpc],
            Scenario::Rest => &[Scenario::Rest],
            Scenario::All => &[Scenario::Grpc, Scenario::Rest],
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Grpc => "grpc",
            Scenario::Rest => "rest",
            Scenario::All => "all",
        }
    }

    pub(crate) fn bare_name(self) -> &'static str {
        match self {
            Scenario::Rest => "axum",
            Scenario::Grpc | Scenario::All => "tonic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Baseline {
    /// Bare tonic (gRPC) and bare axum (REST).
    Bare,
    /// A room619 node without `[auth]` and `[rate_limit]`.
    Room619,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Chain {
    /// No auth or rate limit configured (request ids only).
    Off,
    /// JWT HS256 + rate limit.
    Hs256,
    /// JWT RS256 (2048-bit) + rate limit.
    Rs256,
}

impl Chain {
    pub(crate) fn algorithm(self) -> Option<ChainAlgorithm> {
        match self {
            Chain::Off => None,
            Chain::Hs256 => Some(ChainAlgorithm::Hs256),
            Chain::Rs256 => Some(ChainAlgorithm::Rs256),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RuntimeMode {
    /// Servers on one runtime, the load generator on another: the server
    /// side gets its own worker thread(s) whichever target runs, and the
    /// load generator's work never lands on them.
    Split,
    /// Servers and load generator share one multi-threaded runtime.
    Shared,
}

/// Parses a number of seconds (fractions allowed, at most an hour).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|err| format!("`{text}` is not a number of seconds: {err}"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("`{text}` must be between 0 and 3600 seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|err| err.to_string())
}

/// Parses a request timeout in seconds (more than 0, at most an hour).
fn timeout(text: &str) -> Result<Duration, String> {
    let timeout = seconds(text)?;
    if timeout.is_zero() {
        return Err("the timeout must be more than 0 seconds".to_owned());
    }
    Ok(timeout)
}

/// Parses a sampling ratio (0 to 1).
fn ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .parse()
        .map_err(|err| format!("`{text}` is not a number: {err}"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("`{text}` must be between 0 and 1"));
    }
    Ok(ratio)
}
