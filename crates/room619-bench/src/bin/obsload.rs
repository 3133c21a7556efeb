//! `obsload`: what observability costs a room619 node under load.
//!
//! Starts three room619 nodes in this process, each on a server runtime of
//! its own, and an OTLP trace receiver (a tonic `TraceService` counting the
//! spans it gets) on another:
//!
//! - `off`: `telemetry.metrics = false`, no `tracing` subscriber;
//! - `on 0.1` and `on 1.0`: metrics on, and on the server threads a
//!   subscriber with the JSON log layer (`info`, to a sink) and the
//!   OpenTelemetry layer exporting over OTLP/gRPC to the receiver, sampling
//!   10 % and 100 % of new traces.
//!
//! It warms each up, then measures them in rotating order and prints the
//! medians with the throughput and p99 ratios of each `on` to `off`, and
//! the CPU time per request of the node's threads plus the SDK's export
//! thread (not the exporter's connection, which runs on the receiver's
//! runtime here), with the throughput that CPU time allows relative to
//! `off`.
//!
//! The spans of each run of an `on` node are flushed to the receiver after
//! it and counted: each run's line and the table show the spans received
//! beside the number expected (the sampling ratio times the requests
//! answered, one span each), so a run whose node dropped spans (its export
//! queue of 2 048 full) shows. It exits with an error when more than
//! `--max-errors` requests (0 by default) failed, were answered wrongly or
//! took longer than `--timeout` seconds.
//! See `docs/PERFORMANCE.md`.
//!
//! ```sh
//! cargo run --release -p room619-bench --bin obsload -- --scenario grpc --rounds 10
//! ```

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};
use room619::observability::tracing::Telemetry;
use room619_bench::{
    BoxError,
    cpu::ThreadCpu,
    load::{self, LoadSpec, Measurement},
    otlp::{self, Receiver},
    report::{SpanCount, Summary},
    servers::{self, Server},
};
use tokio::runtime::Runtime;

/// Measures room619 with observability off and fully on.
#[derive(Debug, Parser)]
#[command(name = "obsload", about)]
struct Cli {
    /// Seconds each measured run lasts (1 to 3600).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds of warm-up per node before the measured rounds (0 to 3600).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3600))]
    warmup: u64,
    /// Requests in flight at once (gRPC: at most 256 per HTTP/2
    /// connection, room619's `limits.http2_max_concurrent_streams`).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// HTTP/2 connections the gRPC callers share.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// Measured runs per node; the table shows the median.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// gRPC unary or REST JSON.
    #[arg(long, value_enum, default_value_t = Scenario::Grpc)]
    scenario: Scenario,
    /// What the `on` nodes run, to see where the cost is.
    #[arg(long, value_enum, default_value_t = Layers::All)]
    layers: Layers,
    /// The OTLP receiver decodes every span, not just the request's
    /// envelope (see `room619_bench::otlp`).
    #[arg(long)]
    decoding_receiver: bool,
    /// Seconds one request may take (1 to 3600); a slower one counts as an
    /// error.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Requests that may fail (errors, wrong answers, timeouts; warm-up
    /// included) before `obsload` exits with an error.
    #[arg(long, default_value_t = 0)]
    max_errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Layers {
    /// Metrics, the JSON log layer and the OpenTelemetry layer.
    All,
    /// Metrics only (no subscriber).
    Metrics,
    /// Metrics and the JSON log layer.
    Logs,
    /// Metrics and the OpenTelemetry layer.
    Otel,
}

impl From<Layers> for otlp::Layers {
    fn from(layers: Layers) -> Self {
        let (logs, otel) = match layers {
            Layers::All => (true, true),
            Layers::Metrics => (false, false),
            Layers::Logs => (true, false),
            Layers::Otel => (false, true),
        };
        Self { logs, otel }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// gRPC unary echo.
    Grpc,
    /// REST JSON echo.
    Rest,
}

/// One node under test and what keeps its observability alive.
struct Target {
    name: &'static str,
    runtime: Runtime,
    /// The node's runtime threads.
    cpu: ThreadCpu,
    server: Server,
    telemetry: Option<Telemetry>,
    /// The spans each request is expected to make: the sampling ratio when
    /// the OpenTelemetry layer runs, else 0.
    spans_per_request: f64,
    rounds: Vec<Summary>,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            progress(&format!("obsload: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), BoxError> {
    check_streams(cli)?;
    let collector = runtime("bench-collector", None)?;
    let receiver = if cli.decoding_receiver {
        Receiver::decoding()
    } else {
        Receiver::default()
    };
    let endpoint = collector.block_on(receiver.clone().serve())?;
    let load = runtime("bench-load", None)?;
    let mut targets = start_targets(cli, &collector, &endpoint)?;
    let spec = LoadSpec {
        timeout: Duration::from_secs(cli.timeout),
        ..LoadSpec::closed(
            Duration::from_secs(cli.duration),
            usize::try_from(cli.concurrency)?,
            usize::try_from(cli.connections)?,
            &"x".repeat(32),
        )
    };
    let warmup = LoadSpec {
        duration: Duration::from_secs(cli.warmup),
        ..spec.clone()
    };
    // room619's span processor exports from a thread of its own per
    // provider (`Telemetry::new`); only the node under load gives it work.
    let exporters = ThreadCpu::named("room619-otlp-export");
    let mut warmup_errors = 0;
    for target in &targets {
        warmup_errors += measure(&load, cli.scenario, target, &receiver, None, &warmup)?.errors;
    }
    for round in 0..cli.rounds {
        let count = targets.len();
        for offset in 0..count {
            let index = (usize::try_from(round)? + offset) % count;
            let target = &targets[index];
            let summary = measure(
                &load,
                cli.scenario,
                target,
                &receiver,
                Some(&exporters),
                &spec,
            )?;
            let spans = summary
                .spans
                .map(|spans| format!(", {spans}"))
                .unwrap_or_default();
            progress(&format!(
                "round {}/{}: {} {:.0} req/s p99 {:.0} us, {} errors{spans}",
                round + 1,
                cli.rounds,
                target.name,
                summary.throughput,
                summary.p99_us,
                summary.errors,
            ));
            targets[index].rounds.push(summary);
        }
    }
    report(cli, &targets, receiver.spans())?;
    let errors = warmup_errors
        + targets
            .iter()
            .flat_map(|target| &target.rounds)
            .map(|summary| summary.errors)
            .sum::<u64>();
    for target in targets {
        if let Some(telemetry) = &target.telemetry
            && let Err(err) = telemetry.flush()
        {
            progress(&format!("{}: {err}", target.name));
        }
        target.runtime.block_on(target.server.stop())?;
    }
    room619_bench::failures::within(errors, cli.max_errors, "warm-up included")?;
    Ok(())
}

/// The three nodes, `off`, `on 0.1` and `on 1.0`, each on a runtime of its
/// own; the `on` ones export to the receiver at `endpoint`.
fn start_targets(cli: &Cli, collector: &Runtime, endpoint: &str) -> Result<Vec<Target>, BoxError> {
    let mut targets = Vec::new();
    for (name, sampling) in [("off", None), ("on 0.1", Some(0.1)), ("on 1.0", Some(1.0))] {
        let telemetry = match sampling {
            None => None,
            Some(ratio) => Some(collector.block_on(async { otlp::telemetry(endpoint, ratio) })?),
        };
        let dispatch = telemetry
            .as_ref()
            .and_then(|telemetry| otlp::subscriber(cli.layers.into(), telemetry));
        let thread_name = format!("server {name}");
        let runtime = runtime(&thread_name, dispatch)?;
        let extra = if sampling.is_some() {
            ""
        } else {
            "[telemetry]\nmetrics = false\n"
        };
        let server = runtime.block_on(servers::room619_with(extra))?;
        let otel = otlp::Layers::from(cli.layers).otel;
        targets.push(Target {
            name,
            runtime,
            cpu: ThreadCpu::named(&thread_name),
            server,
            telemetry,
            spans_per_request: sampling.filter(|_| otel).unwrap_or(0.0),
            rounds: Vec::new(),
        });
    }
    Ok(targets)
}

/// Refuses gRPC runs with more callers on one HTTP/2 connection than a
/// room619 node lets a client open streams: the excess would wait in the
/// client, out of sight of the node.
fn check_streams(cli: &Cli) -> Result<(), BoxError> {
    let limit = servers::max_concurrent_streams();
    let per_connection = cli.concurrency.div_ceil(cli.connections);
    if cli.scenario == Scenario::Grpc && per_connection > limit {
        return Err(format!(
            "--concurrency {} over --connections {} puts {per_connection} callers on one \
             HTTP/2 connection, more than the {limit} streams a connection may have open \
             (room619's limits.http2_max_concurrent_streams); use at least {} connections",
            cli.concurrency,
            cli.connections,
            cli.concurrency.div_ceil(limit)
        )
        .into());
    }
    Ok(())
}

/// A one-worker runtime whose threads log and trace into `dispatch`.
fn runtime(name: &str, dispatch: Option<tracing::Dispatch>) -> Result<Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .on_thread_start(move || {
            if let Some(dispatch) = &dispatch {
                // The runtime's threads keep it for their whole life.
                std::mem::forget(tracing::dispatcher::set_default(dispatch));
            }
        })
        .enable_all()
        .build()?)
}

/// One run against `target`: its throughput and latencies, the CPU time of
/// its threads (and of the `exporters`, when given) per request and, for a
/// node with telemetry, the spans `receiver` got from the run (those ended
/// before it are flushed first; those of the run after it, before the CPU
/// time is read: their export is part of the run's cost).
fn measure(
    load: &Runtime,
    scenario: Scenario,
    target: &Target,
    receiver: &Receiver,
    exporters: Option<&ThreadCpu>,
    spec: &LoadSpec,
) -> Result<Summary, BoxError> {
    let addr = target.server.addr();
    let flushed = || -> Result<Option<u64>, BoxError> {
        match &target.telemetry {
            Some(telemetry) => {
                telemetry.flush()?;
                Ok(Some(receiver.spans()))
            }
            None => Ok(None),
        }
    };
    let spans_before = flushed()?;
    // `None` where the CPU time cannot be read (no `/proc`): no CPU figures.
    let cpu = || {
        let exported = match exporters {
            Some(exporters) => exporters.try_nanos()?,
            None => 0,
        };
        Some(target.cpu.try_nanos()? + exported)
    };
    let before = cpu();
    let measurement = load.block_on(async {
        match scenario {
            Scenario::Grpc => load::grpc_unary(addr, spec).await,
            Scenario::Rest => load::rest_json(addr, spec).await,
        }
    })?;
    let mut summary = Summary::from(&measurement);
    if let (Some(before), Some(after)) = (spans_before, flushed()?) {
        summary = summary.with_spans(span_count(target, before, after, &measurement));
    }
    Ok(match (before, cpu()) {
        (Some(before), Some(after)) => {
            summary.with_server_cpu(after.saturating_sub(before), measurement.latencies.len())
        }
        _ => summary,
    })
}

/// The spans of a run of `target`: the receiver's count went from `before`
/// to `after`; one span a request answered is expected, sampled.
fn span_count(target: &Target, before: u64, after: u64, measurement: &Measurement) -> SpanCount {
    SpanCount {
        received: after.saturating_sub(before),
        requests: measurement.answered(),
        ratio: target.spans_per_request,
    }
}

fn report(cli: &Cli, targets: &[Target], spans: u64) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "obsload: {:?}; {} s x {} rounds per node; concurrency {}; {spans} spans exported \
         (warm-up included)\n",
        cli.scenario, cli.duration, cli.rounds, cli.concurrency
    )?;
    writeln!(
        out,
        "| observability | req/s | p50 µs | p99 µs | errors | server CPU µs/req | throughput vs off | p99 vs off | req/s at equal CPU vs off | spans received / expected ± sampling spread, all rounds |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let medians: Vec<Summary> = targets
        .iter()
        .map(|target| Summary::median_of(&target.rounds).ok_or("no rounds measured"))
        .collect::<Result<_, _>>()?;
    let off = medians[0];
    for (target, median) in targets.iter().zip(&medians) {
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.3} | {:.3} | {:.3} | {} |",
            target.name,
            median.throughput,
            median.p50_us,
            median.p99_us,
            median.errors,
            median.server_cpu_us.unwrap_or(f64::NAN),
            median.throughput / off.throughput,
            median.p99_us / off.p99_us,
            median.cpu_throughput_ratio(&off).unwrap_or(f64::NAN),
            median
                .spans
                .map(|spans| {
                    format!(
                        "{} / {:.0} ± {:.0}",
                        spans.received,
                        spans.expected(),
                        spans.spread()
                    )
                })
                .unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// A line for the person at the terminal, on standard error.
fn progress(text: &str) {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "{text}").is_err() {
        // Nothing useful can be done if the terminal is gone.
    }
}
