//! The soak run: a room619 node under steady load at half its measured
//! maximum rate for a long time (10 minutes by default), sampling the
//! process's resident memory, open file descriptors and the server runtime's
//! live tasks, then reporting whether they drifted.
//!
//! ```sh
//! cargo run --release -p room619-bench --bin soak                    # 10 minutes
//! cargo run --release -p room619-bench --bin soak -- --duration 120  # shortened
//! ```
//!
//! Not part of CI: it measures a long time on purpose. The node runs in this
//! process (its runtime's task count is only visible from inside), beside the
//! load generator on a runtime of its own; both are steady-state, so growth in
//! the samples is a leak in one of them. Figures go in `docs/SECURITY.md`.
//!
//! Every request may take `--timeout` seconds (10); a slower one counts as
//! an error, and the run exits with an error when more than `--max-errors`
//! requests (0 by default) failed.

use std::{
    io::Write as _,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use room619_bench::{
    BoxError,
    load::{LoadSpec, grpc_unary},
    servers,
};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tokio::{runtime::Runtime, time::MissedTickBehavior};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "Steady load at half the maximum rate; samples RSS, fds and tasks for drift")]
struct Cli {
    /// Seconds of steady load after calibration (1 to 604800, a week).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    duration: u64,
    /// Seconds between samples (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample: u64,
    /// Requests per second (1 to 1000000); default: half the rate measured
    /// in calibration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_RATE))]
    rate: Option<u64>,
    /// Concurrent callers (each paced to its share of the rate), on one
    /// HTTP/2 connection: at most 256, the streams a room619 node lets a
    /// connection open (`limits.http2_max_concurrent_streams`).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=256))]
    callers: u64,
    /// Seconds one request may take (1 to 3600); a slower one counts as an
    /// error.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Requests that may fail (calibration included) before the run exits
    /// with an error.
    #[arg(long, default_value_t = 0)]
    max_errors: u64,
}

/// The highest `--rate`: a caller's period stays at least a microsecond.
const MAX_RATE: u64 = 1_000_000;

/// One sample of the process.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    tasks: u64,
    done: u64,
    errors: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say(&format!("soak: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn runtime(name: &str) -> Result<Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()?)
}

fn run(cli: &Cli) -> Result<(), BoxError> {
    let server_rt = runtime("soak-server")?;
    let client_rt = runtime("soak-load")?;
    let server = server_rt.block_on(servers::room619())?;
    let addr = server.addr();
    let timeout = Duration::from_secs(cli.timeout);
    let mut calibration_errors = 0;
    let rate = if let Some(rate) = cli.rate {
        rate
    } else {
        let spec = LoadSpec {
            timeout,
            ..LoadSpec::closed(Duration::from_secs(5), 32, 2, "calibrate")
        };
        let calibration = client_rt.block_on(grpc_unary(addr, &spec))?;
        calibration_errors = calibration.errors;
        let max = calibration.throughput();
        say(&format!(
            "calibration: {max:.0} req/s at 32 callers ({calibration_errors} errors); soaking at half"
        ));
        float_to_u64(max / 2.0).clamp(1, MAX_RATE)
    };
    say(&format!(
        "soak: {rate} req/s for {}s, sampling every {}s",
        cli.duration, cli.sample
    ));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let channel = client_rt.block_on(
        Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect(),
    )?;
    let per_caller = Duration::try_from_secs_f64(as_f64(cli.callers) / as_f64(rate))
        .ok()
        .filter(|period| !period.is_zero())
        .ok_or_else(|| {
            format!(
                "no caller period for {} callers at {rate} req/s",
                cli.callers
            )
        })?;
    let mut callers = Vec::new();
    for _ in 0..cli.callers {
        let client = EchoClient::new(channel.clone());
        let (done, errors, stop) = (Arc::clone(&done), Arc::clone(&errors), Arc::clone(&stop));
        let pace = Pace {
            period: per_caller,
            timeout,
        };
        callers.push(client_rt.spawn(caller(client, pace, done, errors, stop)));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let server_metrics = server_rt.handle().metrics();
    while started.elapsed() < Duration::from_secs(cli.duration) {
        let pause = Duration::from_secs(cli.sample);
        client_rt.block_on(async { tokio::time::sleep(pause).await });
        // A fresh connection each sample: connection churn beside the steady
        // load, so a per-connection leak shows in the fds and tasks.
        client_rt.block_on(churn(addr, timeout, &errors));
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: rss_kib()?,
            fds: open_fds()?,
            tasks: server_metrics.num_alive_tasks() as u64,
            done: done.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
        };
        say(&format!(
            "{:>6.0}s  rss {:>7} KiB  fds {:>4}  server tasks {:>4}  requests {:>10}  errors {}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.fds,
            sample.tasks,
            sample.done,
            sample.errors
        ));
        samples.push(sample);
    }
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        client_rt.block_on(caller)?;
    }
    drop(channel);
    server_rt.block_on(server.stop())?;
    report(&samples, started.elapsed());
    let errors = calibration_errors + errors.load(Ordering::Relaxed);
    room619_bench::failures::within(errors, cli.max_errors, "calibration included")?;
    Ok(())
}

/// How one caller sends: a request every `period`, each allowed `timeout`.
#[derive(Clone, Copy)]
struct Pace {
    period: Duration,
    timeout: Duration,
}

async fn caller(
    mut client: EchoClient<Channel>,
    pace: Pace,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut ticker = tokio::time::interval(pace.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let request = EchoRequest {
            message: "soak".to_owned(),
            ..EchoRequest::default()
        };
        match tokio::time::timeout(pace.timeout, client.echo(request)).await {
            Ok(Ok(_)) => done.fetch_add(1, Ordering::Relaxed),
            Ok(Err(_)) | Err(_) => errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Ten calls on a connection of their own, each allowed `timeout`; a
/// connection that cannot be made, or a call that fails, is an error.
async fn churn(addr: std::net::SocketAddr, timeout: Duration, errors: &AtomicU64) {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Ok(Ok(channel)) = tokio::time::timeout(timeout, endpoint.connect()).await else {
        errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut client = EchoClient::new(channel);
    for _ in 0..10 {
        let answer = tokio::time::timeout(timeout, client.echo(EchoRequest::default())).await;
        if !matches!(answer, Ok(Ok(_))) {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Compares the first and last fifths of the samples (after the first, which
/// is warm-up).
fn report(samples: &[Sample], elapsed: Duration) {
    let steady = samples.get(1..).unwrap_or_default();
    let fifth = (steady.len() / 5).max(1);
    let (Some(first), Some(last)) = (
        steady.get(..fifth),
        steady.get(steady.len().saturating_sub(fifth)..),
    ) else {
        say("too few samples to judge drift");
        return;
    };
    let mean = |part: &[Sample], field: fn(&Sample) -> u64| {
        as_f64(part.iter().map(field).sum::<u64>()) / as_f64(part.len().max(1) as u64)
    };
    say("\n| metric | first fifth | last fifth | drift |\n|---|---|---|---|");
    for (name, field) in [
        ("RSS (KiB)", (|s: &Sample| s.rss_kib) as fn(&Sample) -> u64),
        ("open fds", |s: &Sample| s.fds),
        ("server tasks", |s: &Sample| s.tasks),
    ] {
        let (a, b) = (mean(first, field), mean(last, field));
        let drift = if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
        say(&format!("| {name} | {a:.0} | {b:.0} | {drift:+.1}% |"));
    }
    if let Some(end) = samples.last() {
        say(&format!(
            "\n{} requests in {:.0}s ({:.0} req/s), {} errors",
            end.done,
            elapsed.as_secs_f64(),
            as_f64(end.done) / elapsed.as_secs_f64(),
            end.errors
        ));
    }
}

fn rss_kib() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS")?
        .parse()?)
}

fn open_fds() -> Result<u64, BoxError> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// A line of the report, on standard output.
fn say(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{text}").is_err() {
        // Nothing useful can be done if the terminal is gone.
    }
}

/// A count as a float without the lossy `as` cast (exact below 2^53).
fn as_f64(value: u64) -> f64 {
    let high = u32::try_from(value >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(value & u64::from(u32::MAX)).unwrap_or(u32::MAX);
    f64::from(high).mul_add(4_294_967_296.0, f64::from(low))
}

fn float_to_u64(value: f64) -> u64 {
    format!("{value:.0}").parse().unwrap_or(0)
}
