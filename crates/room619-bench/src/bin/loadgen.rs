//! `loadgen`: room619 side by side with bare tonic and bare axum.
//!
//! Starts the three targets in this process on `127.0.0.1:0`, warms each up,
//! then measures bare and room619 in alternating order (bare, room619 in odd
//! rounds; room619, bare in even ones) and prints the median per target with
//! the ratios room619 / bare. Progress goes to standard error, the table to
//! standard output. See `docs/PERFORMANCE.md`.
//!
//! With `--traced RATIO` the room619 node runs observed, on a runtime of
//! its own: a `tracing` subscriber with the JSON log layer (`info`, to a
//! sink) and the OpenTelemetry layer exporting over OTLP/gRPC to a receiver
//! in this process (on a third runtime), sampling `RATIO` of new traces.
//! The server CPU figures then count the exporter's thread as the node's
//! (the receiver's runtime stands for a collector elsewhere and is not).
//! Without it the node records no request spans (no subscriber), as the
//! bare servers.
//!
//! ```sh
//! cargo run --release -p room619-bench --bin loadgen -- --duration 2 --rounds 10
//! cargo run --release -p room619-bench --bin loadgen -- --chain hs256 --traced 0.1
//! ```

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};
use room619::observability::tracing::Telemetry;
use room619_bench::{
    BoxError,
    chain::{self, ChainAlgorithm},
    cpu::ThreadCpu,
    load::{self, LoadSpec},
    otlp::{self, Receiver},
    report::{self, Comparison, Summary},
    servers::{self, Server},
};
use tokio::runtime::Runtime;

/// Compares a room619 node with bare tonic and bare axum under the same
/// closed-loop load.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Cli {
    /// Seconds each measured run lasts.
    #[arg(long, default_value = "2", value_parser = seconds)]
    duration: Duration,
    /// Seconds of warm-up per target before the measured rounds.
    #[arg(long, default_value = "1", value_parser = seconds)]
    warmup: Duration,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// HTTP/2 connections the gRPC callers share.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// Measured runs per target; the table shows the median.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Which comparison to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Servers and load on runtimes of their own (`split`) or on one
    /// (`shared`).
    #[arg(long, value_enum, default_value_t = RuntimeMode::Split)]
    runtime: RuntimeMode,
    /// Worker threads per runtime [default: 1 each when split, all cores
    /// when shared].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    worker_threads: Option<u32>,
    /// Run room619 with the full middleware chain: JWT auth with this
    /// algorithm plus a rate limit per principal (requests carry a token).
    #[arg(long, value_enum, default_value_t = Chain::Off)]
    chain: Chain,
    /// What room619 is compared with: the bare stacks, or (with `--chain`)
    /// a room619 node without auth and rate limits, to isolate the chain.
    #[arg(long, value_enum, default_value_t = Baseline::Bare)]
    baseline: Baseline,
    /// Run room619 observed: the JSON log layer and the OpenTelemetry layer
    /// exporting to a receiver in this process, sampling this ratio of new
    /// traces (0 to 1). Needs `--runtime split`.
    #[arg(long, value_parser = ratio)]
    traced: Option<f64>,
    /// Length of the echoed message, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    message_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// gRPC unary: bare tonic vs room619.
    Grpc,
    /// REST JSON: bare axum vs room619.
    Rest,
    /// Both, gRPC first.
    All,
}

impl Scenario {
    fn runs(self) -> &'static [Scenario] {
        match self {
            Scenario::Grpc => &[Scenario::Grpc],
            Scenario::Rest => &[Scenario::Rest],
            Scenario::All => &[Scenario::Grpc, Scenario::Rest],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Grpc => "grpc",
            Scenario::Rest => "rest",
            Scenario::All => "all",
        }
    }

    fn bare_name(self) -> &'static str {
        match self {
            Scenario::Rest => "axum",
            Scenario::Grpc | Scenario::All => "tonic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    /// Bare tonic (gRPC) and bare axum (REST).
    Bare,
    /// A room619 node without `[auth]` and `[rate_limit]`.
    Room619,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Chain {
    /// No auth or rate limit configured (request ids only).
    Off,
    /// JWT HS256 + rate limit.
    Hs256,
    /// JWT RS256 (2048-bit) + rate limit.
    Rs256,
}

impl Chain {
    fn algorithm(self) -> Option<ChainAlgorithm> {
        match self {
            Chain::Off => None,
            Chain::Hs256 => Some(ChainAlgorithm::Hs256),
            Chain::Rs256 => Some(ChainAlgorithm::Rs256),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeMode {
    /// Servers on one runtime, the load generator on another: the server
    /// side gets its own worker thread(s) whichever target runs, and the
    /// load generator's work never lands on them.
    Split,
    /// Servers and load generator share one multi-threaded runtime.
    Shared,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            progress(&format!("loadgen: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), BoxError> {
    if cli.traced.is_some() && cli.runtime == RuntimeMode::Shared {
        return Err(TRACED_NEEDS_SPLIT.into());
    }
    let observed = cli.traced.map(Observed::start).transpose()?;
    let runtimes = Runtimes::new(
        cli.runtime,
        cli.worker_threads,
        observed.as_ref().map(|observed| observed.dispatch.clone()),
    )?;
    let spec = LoadSpec {
        duration: cli.duration,
        concurrency: usize::try_from(cli.concurrency)?,
        connections: usize::try_from(cli.connections)?,
        message: "x".repeat(usize::try_from(cli.message_bytes)?),
        authorization: cli
            .chain
            .algorithm()
            .map(chain::authorization)
            .transpose()?,
    };
    let extra = cli.chain.algorithm().map(chain::config).unwrap_or_default();
    let mut comparisons = Vec::new();
    for &scenario in cli.scenario.runs() {
        // Only the two targets compared run during a scenario.
        let bare = runtimes.server().block_on(async {
            match (cli.baseline, scenario) {
                (Baseline::Room619, _) => servers::room619().await,
                (Baseline::Bare, Scenario::Rest) => servers::bare_axum().await,
                (Baseline::Bare, Scenario::Grpc | Scenario::All) => servers::bare_tonic().await,
            }
        })?;
        let room619 = match runtimes.room619().block_on(servers::room619_with(&extra)) {
            Ok(room619) => room619,
            Err(err) => {
                // The start's error is the one to report; a failed stop
                // of the bare server is said beside it.
                if let Err(stop) = runtimes.server().block_on(bare.stop()) {
                    progress(&format!(
                        "loadgen: stopping {}: {stop}",
                        scenario.bare_name()
                    ));
                }
                return Err(err);
            }
        };
        let measured = compare(&runtimes, scenario, &bare, &room619, &spec, cli);
        let stopped = runtimes
            .room619()
            .block_on(room619.stop())
            .and(runtimes.server().block_on(bare.stop()));
        comparisons.push(measured?);
        stopped?;
    }
    // Every span ended is at the receiver before it is counted.
    let spans = match &observed {
        Some(observed) => {
            observed.telemetry.flush()?;
            format!(
                "sampling {}, {} spans received (all runs, warm-up included)",
                observed.ratio,
                observed.receiver.spans()
            )
        }
        None => "no (no subscriber)".to_owned(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "loadgen: runtime {}; {} s x {} rounds per target after {} s warm-up; \
         concurrency {}; gRPC over {} h2 connection(s); REST over {} HTTP/1.1 connections; \
         {}-byte message; middleware chain {:?}; room619 traced: {}\n",
        runtimes.describe(),
        cli.duration.as_secs_f64(),
        cli.rounds,
        cli.warmup.as_secs_f64(),
        spec.concurrency,
        spec.connections,
        spec.concurrency,
        cli.message_bytes,
        cli.chain,
        spans,
    )?;
    report::write_table(&mut stdout, &comparisons)?;
    // The node's runtime goes before the collector it exports to.
    drop(runtimes);
    drop(observed);
    Ok(())
}

/// What `--traced` adds: an OTLP receiver on a runtime of its own, the
/// provider exporting to it and the subscriber of the room619 node.
struct Observed {
    ratio: f64,
    receiver: Receiver,
    telemetry: Telemetry,
    dispatch: tracing::Dispatch,
    /// Serves the receiver (and the exporter's connection) until dropped.
    _collector: Runtime,
}

impl Observed {
    fn start(ratio: f64) -> Result<Self, BoxError> {
        let collector = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-collector")
            .enable_all()
            .build()?;
        let receiver = Receiver::default();
        let endpoint = collector.block_on(receiver.clone().serve())?;
        let telemetry = collector.block_on(async { otlp::telemetry(&endpoint, ratio) })?;
        let layers = otlp::Layers {
            logs: true,
            otel: true,
        };
        let dispatch = otlp::subscriber(layers, &telemetry).ok_or("no subscriber")?;
        Ok(Self {
            ratio,
            receiver,
            telemetry,
            dispatch,
            _collector: collector,
        })
    }
}

/// Warms both targets up, then measures them in alternating order.
fn compare(
    runtimes: &Runtimes,
    scenario: Scenario,
    bare: &Server,
    room619: &Server,
    spec: &LoadSpec,
    cli: &Cli,
) -> Result<Comparison, BoxError> {
    let warmup = LoadSpec {
        duration: cli.warmup,
        ..spec.clone()
    };
    let mut comparison = Comparison {
        scenario: scenario.name(),
        bare_name: match cli.baseline {
            Baseline::Bare => scenario.bare_name(),
            Baseline::Room619 => "room619 plain",
        },
        bare: Vec::new(),
        room619: Vec::new(),
    };
    if !warmup.duration.is_zero() {
        for server in [bare, room619] {
            measure(runtimes, scenario, server, &warmup)?;
        }
    }
    for round in 0..cli.rounds {
        let bare_first = round % 2 == 0;
        let order = if bare_first {
            [bare, room619]
        } else {
            [room619, bare]
        };
        let mut results = Vec::with_capacity(2);
        for server in order {
            results.push(measure(runtimes, scenario, server, spec)?);
        }
        let (bare_result, room_result) = if bare_first {
            (results[0], results[1])
        } else {
            (results[1], results[0])
        };
        progress(&format!(
            "{} round {}/{}: {} {:.0} req/s p99 {:.0} us | room619 {:.0} req/s p99 {:.0} us",
            scenario.name(),
            round + 1,
            cli.rounds,
            comparison.bare_name,
            bare_result.throughput,
            bare_result.p99_us,
            room_result.throughput,
            room_result.p99_us,
        ));
        comparison.bare.push(bare_result);
        comparison.room619.push(room_result);
    }
    Ok(comparison)
}

/// One load run against `server`, driven from the client runtime.
fn measure(
    runtimes: &Runtimes,
    scenario: Scenario,
    server: &Server,
    spec: &LoadSpec,
) -> Result<Summary, BoxError> {
    let addr = server.addr();
    let cpu = runtimes.server_cpu();
    let before = cpu.and_then(ThreadCpu::try_nanos);
    let measurement = runtimes.client().block_on(async {
        match scenario {
            Scenario::Rest => load::rest_json(addr, spec).await,
            Scenario::Grpc | Scenario::All => load::grpc_unary(addr, spec).await,
        }
    })?;
    let summary = Summary::from(&measurement);
    // No CPU figures where the CPU time cannot be read (no `/proc`).
    let after = cpu.and_then(ThreadCpu::try_nanos);
    Ok(match (before, after) {
        (Some(before), Some(after)) => {
            summary.with_server_cpu(after.saturating_sub(before), measurement.latencies.len())
        }
        _ => summary,
    })
}

/// Why `--traced` refuses a shared runtime.
const TRACED_NEEDS_SPLIT: &str = "--traced needs --runtime split (the load would be traced too)";

/// The name of the servers' runtime threads.
const SERVER_THREADS: &str = "bench-server";

/// The name of room619's span-export thread (`--traced`).
const EXPORT_THREAD: &str = "room619-otlp-export";

/// The runtime(s) the servers and the load generator run on.
struct Runtimes {
    server: Runtime,
    /// The servers' threads, whose CPU time is theirs alone in split mode.
    server_cpu: ThreadCpu,
    /// The load generator's own runtime, in split mode.
    client: Option<Runtime>,
    /// The room619 node's own runtime, its threads logging and tracing into
    /// a subscriber (`--traced`); named as the servers' threads, so that
    /// their CPU time counts as the servers'.
    observed: Option<Runtime>,
    threads: usize,
}

impl Runtimes {
    fn new(
        mode: RuntimeMode,
        threads: Option<u32>,
        dispatch: Option<tracing::Dispatch>,
    ) -> Result<Self, BoxError> {
        let threads = match (threads, mode) {
            (Some(threads), _) => usize::try_from(threads)?,
            (None, RuntimeMode::Shared) => std::thread::available_parallelism()?.get(),
            (None, RuntimeMode::Split) => 1,
        };
        let build = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
        };
        let observed = match (dispatch, mode) {
            (None, _) => None,
            (Some(_), RuntimeMode::Shared) => {
                return Err(TRACED_NEEDS_SPLIT.into());
            }
            (Some(dispatch), RuntimeMode::Split) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name(SERVER_THREADS)
                    .on_thread_start(move || {
                        // The runtime's threads keep it for their whole life.
                        std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                    })
                    .enable_all()
                    .build()?,
            ),
        };
        Ok(Self {
            server: build(SERVER_THREADS)?,
            // When traced, the exporter's thread works for the node too.
            server_cpu: if observed.is_some() {
                ThreadCpu::named(SERVER_THREADS).and_named(EXPORT_THREAD)
            } else {
                ThreadCpu::named(SERVER_THREADS)
            },
            client: match mode {
                RuntimeMode::Shared => None,
                RuntimeMode::Split => Some(build("bench-load")?),
            },
            observed,
            threads,
        })
    }

    fn server(&self) -> &Runtime {
        &self.server
    }

    /// Where the room619 node runs: on a runtime of its own when observed.
    fn room619(&self) -> &Runtime {
        self.observed.as_ref().unwrap_or(&self.server)
    }

    /// The servers' threads, when nothing else runs on them (split mode).
    fn server_cpu(&self) -> Option<&ThreadCpu> {
        self.client.as_ref().map(|_| &self.server_cpu)
    }

    fn client(&self) -> &Runtime {
        self.client.as_ref().unwrap_or(&self.server)
    }

    fn describe(&self) -> String {
        match (&self.client, &self.observed) {
            (None, _) => format!("shared ({} worker threads)", self.threads),
            (Some(_), None) => format!(
                "split ({} worker thread(s) for the servers, {} for the load)",
                self.threads, self.threads
            ),
            (Some(_), Some(_)) => format!(
                "split ({n} worker thread(s) for bare, {n} for the traced room619 node, \
                 {n} for the load, 1 for the OTLP receiver)",
                n = self.threads
            ),
        }
    }
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

/// A line for the person at the terminal, on standard error.
fn progress(text: &str) {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "{text}").is_err() {
        // Nothing useful can be done if the terminal is gone.
    }
}
