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
//! bare servers. After every run of the traced node its spans are flushed
//! to the receiver and counted: each round's line and the summary show the
//! spans received beside the number expected (the ratio times the requests
//! answered), so a run whose node dropped spans (its export queue full)
//! shows.
//!
//! The load is closed-loop by default (`--concurrency` callers, each
//! sending as soon as its previous answer is in). With `--rate N` it is
//! open-loop: `N` requests a second in total, on a fixed schedule shared by
//! the callers, each timed from its slot in the schedule, with p99.9 and
//! the late requests in the table (see `room619_bench::load`).
//!
//! It exits with an error when more than `--max-errors` requests (0 by
//! default) failed, were answered wrongly or took longer than `--timeout`.
//!
//! ```sh
//! cargo run --release -p room619-bench --bin loadgen -- --duration 2 --rounds 10
//! cargo run --release -p room619-bench --bin loadgen -- --chain hs256 --traced 0.1
//! cargo run --release -p room619-bench --bin loadgen -- --scenario grpc --rate 10000
//! ```

mod cli;
mod observed;
mod runtimes;

use std::{io::Write as _, process::ExitCode};

use clap::Parser;
use room619_bench::{
    BoxError, chain,
    cpu::ThreadCpu,
    load::{self, LoadSpec},
    report::{self, Comparison, Summary},
    servers::{self, Server},
};

use self::{
    cli::{Baseline, Cli, RuntimeMode, Scenario},
    observed::Observed,
    runtimes::{Runtimes, TRACED_NEEDS_SPLIT},
};

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
    if cli.rate.is_some() && cli.runtime == RuntimeMode::Shared {
        return Err(RATE_NEEDS_SPLIT.into());
    }
    check_streams(cli)?;
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
        rate: cli.rate,
        timeout: cli.timeout,
    };
    let extra = cli.chain.algorithm().map(chain::config).unwrap_or_default();
    let mut comparisons = Vec::new();
    let mut warmup_errors = 0;
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
        let targets = Targets {
            bare: &bare,
            room619: &room619,
            traced: observed.as_ref(),
        };
        let measured = compare(&runtimes, scenario, &targets, &spec, cli);
        let stopped = runtimes
            .room619()
            .block_on(room619.stop())
            .and(runtimes.server().block_on(bare.stop()));
        let (comparison, errors) = measured?;
        comparisons.push(comparison);
        warmup_errors += errors;
        stopped?;
    }
    write_report(cli, &runtimes, observed.as_ref(), &comparisons)?;
    // The node's runtime goes before the collector it exports to.
    drop(runtimes);
    drop(observed);
    let errors = warmup_errors
        + comparisons
            .iter()
            .flat_map(|c| c.bare.iter().chain(&c.room619))
            .map(|s| s.errors)
            .sum::<u64>();
    room619_bench::failures::within(errors, cli.max_errors, "warm-up included")?;
    Ok(())
}

/// The run's settings and its table, on standard output.
fn write_report(
    cli: &Cli,
    runtimes: &Runtimes,
    observed: Option<&Observed>,
    comparisons: &[Comparison],
) -> Result<(), BoxError> {
    let traced = match observed {
        Some(observed) => format!(
            "sampling {} (spans counted per run, below the table)",
            observed.ratio
        ),
        None => "no (no subscriber)".to_owned(),
    };
    let load = match cli.rate {
        Some(rate) => format!(
            "open loop, {rate} req/s offered over {} callers",
            cli.concurrency
        ),
        None => format!("closed loop, concurrency {}", cli.concurrency),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "loadgen: runtime {}; {} s x {} rounds per target after {} s warm-up; \
         {load}; gRPC over {} h2 connection(s); REST over {} HTTP/1.1 connections; \
         {}-byte message; {} s timeout; middleware chain {:?}; room619 traced: {traced}\n",
        runtimes.describe(),
        cli.duration.as_secs_f64(),
        cli.rounds,
        cli.warmup.as_secs_f64(),
        cli.connections,
        cli.concurrency,
        cli.message_bytes,
        cli.timeout.as_secs_f64(),
        cli.chain,
    )?;
    match cli.rate {
        Some(rate) => report::write_open_table(&mut stdout, rate, comparisons)?,
        None => report::write_table(&mut stdout, comparisons)?,
    }
    Ok(())
}

/// Why `--rate` refuses a shared runtime.
const RATE_NEEDS_SPLIT: &str = "--rate needs --runtime split (the pacing keeps the load \
     runtime's thread busy; on a shared runtime it would take the servers' CPU)";

/// Refuses gRPC runs with more callers on one HTTP/2 connection than a
/// room619 node lets a client open streams (`limits.http2_max_concurrent_streams`,
/// which bare tonic is given too): the excess would wait in the client, out
/// of sight of both servers.
fn check_streams(cli: &Cli) -> Result<(), BoxError> {
    let limit = servers::max_concurrent_streams();
    let per_connection = cli.concurrency.div_ceil(cli.connections);
    let grpc = cli.scenario.runs().contains(&Scenario::Grpc);
    if grpc && per_connection > limit {
        return Err(format!(
            "--concurrency {} over --connections {} puts {per_connection} callers on one \
             HTTP/2 connection, more than the {limit} streams a connection may have open \
             (room619's limits.http2_max_concurrent_streams, set on bare tonic too); \
             use at least {} connections",
            cli.concurrency,
            cli.connections,
            cli.concurrency.div_ceil(limit)
        )
        .into());
    }
    Ok(())
}

/// The two targets of a scenario; `traced` when the room619 node's spans
/// are exported (`--traced`).
struct Targets<'a> {
    bare: &'a Server,
    room619: &'a Server,
    traced: Option<&'a Observed>,
}

/// Warms both targets up, then measures them in alternating order; returns
/// the comparison and the errors of the warm-up.
fn compare(
    runtimes: &Runtimes,
    scenario: Scenario,
    targets: &Targets<'_>,
    spec: &LoadSpec,
    cli: &Cli,
) -> Result<(Comparison, u64), BoxError> {
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
    let bare = (targets.bare, None);
    let room619 = (targets.room619, targets.traced);
    let mut warmup_errors = 0;
    if !warmup.duration.is_zero() {
        for (server, traced) in [bare, room619] {
            warmup_errors += measure(runtimes, scenario, server, traced, &warmup)?.errors;
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
        for (server, traced) in order {
            results.push(measure(runtimes, scenario, server, traced, spec)?);
        }
        let (bare_result, room_result) = if bare_first {
            (results[0], results[1])
        } else {
            (results[1], results[0])
        };
        progress(&format!(
            "{} round {}/{}: {} {} | room619 {}",
            scenario.name(),
            round + 1,
            cli.rounds,
            comparison.bare_name,
            shown(&bare_result, spec.rate.is_some()),
            shown(&room_result, spec.rate.is_some()),
        ));
        comparison.bare.push(bare_result);
        comparison.room619.push(room_result);
    }
    Ok((comparison, warmup_errors))
}

/// One run's figures on a progress line; `open` for an open-loop run.
fn shown(run: &Summary, open: bool) -> String {
    let optional =
        |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |value| format!("{value:.0}"));
    let open = if open {
        format!(
            " p99.9 {:.0} us, {} late, {} unsent, send lag p50/p99 {}/{} us",
            run.p999_us,
            run.late,
            run.unsent,
            optional(run.send_lag_p50_us),
            optional(run.send_lag_p99_us),
        )
    } else {
        String::new()
    };
    let errors = if run.errors > 0 {
        format!(", {} errors", run.errors)
    } else {
        String::new()
    };
    let pacer = run
        .pacer_cpu_us
        .map(|us| format!(" (pacer {us:.1})"))
        .unwrap_or_default();
    let load = run
        .load_cpu_us
        .map(|us| format!(", load CPU {us:.1} us/req{pacer}"))
        .unwrap_or_default();
    let spans = run
        .spans
        .map(|spans| format!(", {spans}"))
        .unwrap_or_default();
    format!(
        "{:.0} req/s p99 {:.0} us{open}{errors}{load}{spans}",
        run.throughput, run.p99_us
    )
}

/// One load run against `server`, driven from the client runtime. When
/// `traced`, the spans ended before the run are flushed first, and those
/// of the run after it (before the CPU time is read: the export is part of
/// the run's cost) and counted.
fn measure(
    runtimes: &Runtimes,
    scenario: Scenario,
    server: &Server,
    traced: Option<&Observed>,
    spec: &LoadSpec,
) -> Result<Summary, BoxError> {
    let addr = server.addr();
    let spans_before = traced.map(Observed::flushed_spans).transpose()?;
    let cpu = runtimes.server_cpu();
    let before = cpu.and_then(ThreadCpu::try_nanos);
    let load_before = runtimes.load_cpu().and_then(ThreadCpu::try_nanos);
    let measurement = runtimes.client().block_on(async {
        match scenario {
            Scenario::Rest => load::rest_json(addr, spec).await,
            Scenario::Grpc | Scenario::All => load::grpc_unary(addr, spec).await,
        }
    })?;
    let mut summary = Summary::from(&measurement);
    if let (Some(traced), Some(before)) = (traced, spans_before) {
        summary = summary.with_spans(traced.count(before, &measurement)?);
    }
    // No CPU figures where the CPU time cannot be read (no `/proc`).
    let after = cpu.and_then(ThreadCpu::try_nanos);
    let load_after = runtimes.load_cpu().and_then(ThreadCpu::try_nanos);
    if let (Some(before), Some(after)) = (load_before, load_after) {
        let pacer = measurement.pacer_cpu_nanos;
        summary = summary.with_load_cpu(
            after.saturating_sub(before) + pacer.unwrap_or(0),
            pacer,
            measurement.latencies.len(),
        );
    }
    Ok(match (before, after) {
        (Some(before), Some(after)) => {
            summary.with_server_cpu(after.saturating_sub(before), measurement.latencies.len())
        }
        _ => summary,
    })
}

/// A line for the person at the terminal, on standard error.
fn progress(text: &str) {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "{text}").is_err() {
        // Nothing useful can be done if the terminal is gone.
    }
}
