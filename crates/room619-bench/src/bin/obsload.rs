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
//! medians with the throughput and p99 ratios of each `on` to `off`.
//! See `docs/PERFORMANCE.md`.
//!
//! ```sh
//! cargo run --release -p room619-bench --bin obsload -- --scenario grpc --rounds 10
//! ```

use std::{
    io::Write as _,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use room619::observability::{TelemetryConfig, logging, tracing::Telemetry};
use room619_bench::{
    BoxError,
    load::{self, LoadSpec},
    report::Summary,
    servers::{self, Server},
};
use tokio::runtime::Runtime;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _};

/// Measures room619 with observability off and fully on.
#[derive(Debug, Parser)]
#[command(name = "obsload", about)]
struct Cli {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 2)]
    duration: u64,
    /// Seconds of warm-up per node before the measured rounds.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Requests in flight at once.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// gRPC unary echo.
    Grpc,
    /// REST JSON echo.
    Rest,
}

/// The OTLP receiver: counts the spans exported to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.spans
            .fetch_add(u64::try_from(spans).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One node under test and what keeps its observability alive.
struct Target {
    name: &'static str,
    runtime: Runtime,
    server: Server,
    telemetry: Option<Telemetry>,
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
    let collector = runtime("bench-collector", None)?;
    let receiver = Receiver::default();
    let endpoint = collector.block_on(serve_receiver(receiver.clone()))?;
    let load = runtime("bench-load", None)?;
    let mut targets = Vec::new();
    for (name, sampling) in [("off", None), ("on 0.1", Some(0.1)), ("on 1.0", Some(1.0))] {
        let telemetry = match sampling {
            None => None,
            Some(ratio) => collector.block_on(async { telemetry(&endpoint, ratio) })?,
        };
        let dispatch = telemetry
            .as_ref()
            .and_then(|telemetry| subscriber(cli.layers, telemetry));
        let runtime = runtime("bench-server", dispatch)?;
        let extra = if sampling.is_some() {
            ""
        } else {
            "[telemetry]\nmetrics = false\n"
        };
        let server = runtime.block_on(servers::room619_with(extra))?;
        targets.push(Target {
            name,
            runtime,
            server,
            telemetry,
            rounds: Vec::new(),
        });
    }
    let spec = LoadSpec {
        authorization: None,
        duration: Duration::from_secs(cli.duration),
        concurrency: usize::try_from(cli.concurrency)?,
        connections: usize::try_from(cli.connections)?,
        message: "x".repeat(32),
    };
    let warmup = LoadSpec {
        duration: Duration::from_secs(cli.warmup),
        ..spec.clone()
    };
    for target in &targets {
        measure(&load, cli.scenario, &target.server, &warmup)?;
    }
    for round in 0..cli.rounds {
        let count = targets.len();
        for offset in 0..count {
            let index = (usize::try_from(round)? + offset) % count;
            let summary = measure(&load, cli.scenario, &targets[index].server, &spec)?;
            targets[index].rounds.push(summary);
        }
        progress(&format!("round {}/{} done", round + 1, cli.rounds));
    }
    report(cli, &targets, receiver.spans.load(Ordering::Relaxed))?;
    for target in targets {
        if let Some(telemetry) = &target.telemetry
            && let Err(err) = telemetry.flush()
        {
            progress(&format!("{}: {err}", target.name));
        }
        target.runtime.block_on(target.server.stop())?;
    }
    Ok(())
}

/// The subscriber of the `on` nodes' threads.
fn subscriber(layers: Layers, telemetry: &Telemetry) -> Option<tracing::Dispatch> {
    let (logs, otel) = match layers {
        Layers::All => (true, true),
        Layers::Metrics => return None,
        Layers::Logs => (true, false),
        Layers::Otel => (false, true),
    };
    Some(tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(otel.then(|| telemetry.layer()))
            .with(logs.then(|| logging::json_layer(std::io::sink))),
    ))
}

/// Serves the receiver on `127.0.0.1:0`; returns its URL.
async fn serve_receiver(receiver: Receiver) -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(incoming),
    );
    Ok(format!("http://{addr}"))
}

fn telemetry(endpoint: &str, ratio: f64) -> Result<Option<Telemetry>, BoxError> {
    let config = TelemetryConfig {
        otlp_endpoint: Some(endpoint.to_owned()),
        sampling_ratio: ratio,
        ..TelemetryConfig::default()
    };
    Ok(Telemetry::new(&config, "bench")?)
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

fn measure(
    load: &Runtime,
    scenario: Scenario,
    server: &Server,
    spec: &LoadSpec,
) -> Result<Summary, BoxError> {
    let addr = server.addr();
    let measurement = load.block_on(async {
        match scenario {
            Scenario::Grpc => load::grpc_unary(addr, spec).await,
            Scenario::Rest => load::rest_json(addr, spec).await,
        }
    })?;
    Ok(Summary::from(&measurement))
}

fn report(cli: &Cli, targets: &[Target], spans: u64) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "obsload: {:?}; {} s x {} rounds per node; concurrency {}; {spans} spans exported\n",
        cli.scenario, cli.duration, cli.rounds, cli.concurrency
    )?;
    writeln!(
        out,
        "| observability | req/s | p50 µs | p99 µs | errors | throughput vs off | p99 vs off |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    let medians: Vec<Summary> = targets
        .iter()
        .map(|target| Summary::median_of(&target.rounds).ok_or("no rounds measured"))
        .collect::<Result<_, _>>()?;
    let off = medians[0];
    for (target, median) in targets.iter().zip(&medians) {
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {} | {:.3} | {:.3} |",
            target.name,
            median.throughput,
            median.p50_us,
            median.p99_us,
            median.errors,
            median.throughput / off.throughput,
            median.p99_us / off.p99_us,
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
