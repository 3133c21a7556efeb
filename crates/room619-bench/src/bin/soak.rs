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
    /// Seconds of steady load after calibration.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Requests per second; default: half the rate measured in calibration.
    #[arg(long)]
    rate: Option<u64>,
    /// Concurrent callers (each paced to its share of the rate).
    #[arg(long, default_value_t = 32)]
    callers: u64,
}

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
    let rate = if let Some(rate) = cli.rate {
        rate
    } else {
        let spec = LoadSpec {
            duration: Duration::from_secs(5),
            concurrency: 32,
            connections: 2,
            message: "calibrate".to_owned(),
            authorization: None,
        };
        let max = client_rt.block_on(grpc_unary(addr, &spec))?.throughput();
        say(&format!(
            "calibration: {max:.0} req/s at 32 callers; soaking at half"
        ));
        float_to_u64(max / 2.0).max(1)
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
    let per_caller = Duration::from_secs_f64(as_f64(cli.callers) / as_f64(rate));
    let mut callers = Vec::new();
    for _ in 0..cli.callers {
        let client = EchoClient::new(channel.clone());
        let (done, errors, stop) = (Arc::clone(&done), Arc::clone(&errors), Arc::clone(&stop));
        callers.push(client_rt.spawn(caller(client, per_caller, done, errors, stop)));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let server_metrics = server_rt.handle().metrics();
    while started.elapsed() < Duration::from_secs(cli.duration) {
        let pause = Duration::from_secs(cli.sample);
        client_rt.block_on(async { tokio::time::sleep(pause).await });
        // A fresh connection each sample: connection churn beside the steady
        // load, so a per-connection leak shows in the fds and tasks.
        client_rt.block_on(churn(addr, &errors));
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
    Ok(())
}

async fn caller(
    mut client: EchoClient<Channel>,
    period: Duration,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let request = EchoRequest {
            message: "soak".to_owned(),
            ..EchoRequest::default()
        };
        match client.echo(request).await {
            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

async fn churn(addr: std::net::SocketAddr, errors: &AtomicU64) {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return;
    };
    let Ok(channel) = endpoint.connect().await else {
        errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut client = EchoClient::new(channel);
    for _ in 0..10 {
        if client.echo(EchoRequest::default()).await.is_err() {
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
