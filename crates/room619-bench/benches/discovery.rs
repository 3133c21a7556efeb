//! Discovery in a NATS JetStream key-value bucket at 1 000 instances:
//!
//! - **watch propagation**: from the start of `register` on one registry to
//!   the `Up` change on another registry's watch (a put, its JetStream
//!   acknowledgement, the watcher's delivery), one instance at a time;
//!   p50 / p99 / max. Target: p99 < 100 ms on loopback.
//! - **burst**: 1 000 registrations at once until the watcher knows all.
//! - **resolve**: `resolve(name, "^1")` over 1 000 known instances (a
//!   lookup in the in-memory catalog; no network).
//!
//! Needs `nats-server` (`$NATS_SERVER`, the `PATH` or `/usr/sbin`); it is
//! started on a free port with a temporary store and killed at the end.
//!
//! Run: `cargo bench -p room619-bench --bench discovery`.

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, future::try_join_all};
use hdrhistogram::Histogram;
use room619::discovery::{
    Change, Discovery as _, Instance, NatsDiscovery, NatsDiscoveryConfig, Watch,
};
use room619_bench::{BoxError, nats::NatsServer};
use tokio_util::sync::CancellationToken;

/// Instances registered.
const INSTANCES: usize = 1_000;
/// Resolves timed.
const RESOLVES: usize = 10_000;

/// A registry named `name` on `server`, retrying while the server starts.
async fn registry(server: &NatsServer, name: &str) -> Result<NatsDiscovery, BoxError> {
    let config = NatsDiscoveryConfig {
        url: server.url().to_owned(),
        ttl: Duration::from_secs(30),
        ..NatsDiscoveryConfig::default()
    };
    let started = Instant::now();
    loop {
        match NatsDiscovery::connect(&config, &[], name, CancellationToken::new()).await {
            Ok(registry) => return Ok(registry),
            Err(err) if started.elapsed() > Duration::from_secs(10) => return Err(err.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn instance(name: &str, n: usize) -> Result<Instance, BoxError> {
    Ok(Instance::new(
        name,
        "1.4.0".parse()?,
        format!("10.0.{}.{}:8080", n / 250, n % 250),
    )
    .with_metadata("zone", format!("z{}", n % 3)))
}

/// Waits for the `Up` of the instance with `id`.
async fn seen(watch: &mut Watch, id: &str) -> Result<(), BoxError> {
    let wait = async {
        while let Some(change) = watch.next().await {
            if let Change::Up(up) = change
                && up.id() == id
            {
                return Ok(());
            }
        }
        Err::<(), BoxError>("the watch ended".into())
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

/// One line of percentiles of `h` (recorded in nanoseconds), in `unit`:
/// seconds times `scale`.
fn line(out: &mut impl std::io::Write, what: &str, h: &Histogram<u64>, unit: &str, scale: f64) {
    let shown = |nanos: u64| Duration::from_nanos(nanos).as_secs_f64() * scale;
    if writeln!(
        out,
        "{what:<34} n={:<6} p50={:>9.3} {unit}  p99={:>9.3} {unit}  max={:>9.3} {unit}",
        h.len(),
        shown(h.value_at_quantile(0.5)),
        shown(h.value_at_quantile(0.99)),
        shown(h.max()),
    )
    .is_err()
    {
        // Standard output is gone; nothing to report to.
    }
}

async fn run() -> Result<(), BoxError> {
    let server = NatsServer::start()?;
    let publisher = registry(&server, "bench-publisher").await?;
    let watcher = registry(&server, "bench-watcher").await?;
    let mut out = std::io::stdout().lock();

    // Propagation, one at a time.
    let mut watch = watcher.watch("users");
    let mut propagation = Histogram::<u64>::new(3)?;
    for n in 0..INSTANCES {
        let instance = instance("users", n)?;
        let started = Instant::now();
        publisher.register(instance.clone()).await?;
        seen(&mut watch, instance.id()).await?;
        propagation.record(u64::try_from(started.elapsed().as_nanos())?)?;
    }
    line(
        &mut out,
        "watch propagation (sequential)",
        &propagation,
        "ms",
        1e3,
    );

    // A burst of 1 000 registrations at once.
    let burst: Vec<Instance> = (0..INSTANCES)
        .map(|n| instance("orders", n))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    try_join_all(burst.iter().cloned().map(|i| publisher.register(i))).await?;
    let registered = started.elapsed();
    while watcher.resolve("orders", &"^1".parse()?).len() < INSTANCES {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the burst did not arrive within 30 s".into());
        }
        tokio::task::yield_now().await;
    }
    let all_seen = started.elapsed();
    if writeln!(
        out,
        "burst of {INSTANCES} registrations: all acknowledged in {:.1} ms, all watched in {:.1} ms",
        registered.as_secs_f64() * 1e3,
        all_seen.as_secs_f64() * 1e3
    )
    .is_err()
    {
        return Ok(());
    }

    // Resolve over 1 000 known instances.
    let requirement = "^1".parse()?;
    let mut resolve = Histogram::<u64>::new(3)?;
    for _ in 0..RESOLVES {
        let started = Instant::now();
        let found = watcher.resolve("users", &requirement);
        let elapsed = started.elapsed();
        if found.len() != INSTANCES {
            return Err(format!("resolved {} of {INSTANCES}", found.len()).into());
        }
        resolve.record(u64::try_from(elapsed.as_nanos())?)?;
    }
    line(&mut out, "resolve of 1 000 instances", &resolve, "µs", 1e6);
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into()),
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &BoxError) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "discovery bench: {err}").is_err() {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}
