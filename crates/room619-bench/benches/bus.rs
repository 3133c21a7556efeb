//! Criterion benchmarks of room619's message bus, in messages per second:
//!
//! - `bus_memory/publish_and_receive`: messages published on the in-memory
//!   bus and taken by one subscriber (bounded queue, back-pressure on).
//! - `bus_nats_core/{bus,bus_typed,raw}`: publishing to a `nats-server` on
//!   loopback through the bus (a raw payload; a typed JSON message) and
//!   through a bare `async-nats` client (its default connection queue of
//!   2048), each batch flushed. Target: the bus at least 0.9× raw.
//! - `bus_nats_core/raw_same_queue`: the bare client with the bus's
//!   connection queue (`bus.publish_queue`), to tell the queue's share of
//!   the bus's throughput from the rest.
//! - `bus_nats_core/{bus,raw}_4_tasks`: the same batch published by four
//!   tasks at once (as a service's handlers publish), not flushed.
//! - `bus_jetstream/{sequential,concurrent_32}`: publishes confirmed by the
//!   JetStream server (file storage) before `publish` returns, one at a time
//!   and 32 at once.
//!
//! A publish or flush that fails, or a subscription that ends, is counted;
//! the bench then exits with an error naming the benchmark, since its
//! iterations did not do the batch their throughput assumes.
//!
//! Needs `nats-server` (`$NATS_SERVER`, the `PATH` or `/usr/sbin`); it is
//! started on a free port with a temporary store and killed at the end.
//!
//! Run: `cargo bench -p room619-bench --bench bus`.

use std::{hint::black_box, io::Write as _, process::ExitCode, sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use futures_util::{StreamExt as _, TryStreamExt as _};
use room619::bus::{BusBackend, BusConfig, Json, MessageBus, OutgoingMessage, StreamConfig};
use room619_bench::{BoxError, failures::Failures, nats::NatsServer};
use tokio::{runtime::Runtime, sync::Mutex};

/// Messages per iteration of the memory and NATS core benchmarks.
const BATCH: u64 = 10_000;
/// Messages per iteration of the JetStream benchmarks.
const CONFIRMED_BATCH: u64 = 500;
const PAYLOAD: &[u8] = b"{\"order\":42,\"status\":\"shipped\"}";
/// The longest an iteration of the memory benchmark may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

struct Setup {
    memory: MessageBus,
    received: Arc<Mutex<room619::bus::Subscription>>,
    nats: MessageBus,
    raw: async_nats::Client,
    /// A raw client with the bus's connection queue (`bus.publish_queue`).
    raw_same_queue: async_nats::Client,
    jetstream: MessageBus,
    _server: NatsServer,
}

impl Setup {
    async fn start() -> Result<Self, BoxError> {
        let server = NatsServer::start()?;
        let raw = server.client().await?;
        let raw_same_queue = async_nats::ConnectOptions::new()
            .client_capacity(BusConfig::default().publish_queue)
            .connect(server.url())
            .await?;
        let memory = MessageBus::in_memory();
        let received = Arc::new(Mutex::new(memory.subscribe("bench.memory").await?));
        let mut config = BusConfig {
            backend: BusBackend::Nats,
            url: server.url().to_owned(),
            ..BusConfig::default()
        };
        let nats = MessageBus::connect(&config).await?;
        config.backend = BusBackend::JetStream;
        config.streams.insert(
            "BENCH".to_owned(),
            StreamConfig {
                subjects: vec!["bench.confirmed".to_owned()],
                ..StreamConfig::default()
            },
        );
        let jetstream = MessageBus::connect(&config).await?;
        Ok(Self {
            memory,
            received,
            nats,
            raw,
            raw_same_queue,
            jetstream,
            _server: server,
        })
    }
}

fn bench_memory(c: &mut Criterion, runtime: &Runtime, setup: &Setup, failures: &Failures) {
    const BENCH: &str = "bus_memory/publish_and_receive";
    let mut group = c.benchmark_group("bus_memory");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("publish_and_receive", |b| {
        b.to_async(runtime).iter(|| async {
            let mut received = setup.received.lock().await;
            let publish = async {
                for _ in 0..BATCH {
                    let message = OutgoingMessage::new("bench.memory", Bytes::from_static(PAYLOAD));
                    setup.memory.publish_message(message).await?;
                }
                Ok::<_, room619::Error>(())
            };
            let receive = async {
                for _ in 0..BATCH {
                    if black_box(received.next().await).is_none() {
                        return Err("the subscription ended");
                    }
                }
                Ok(())
            };
            // One timer for the batch: a publish that failed leaves the
            // receiver waiting for a message that never comes.
            let both = async { tokio::join!(publish, receive) };
            match tokio::time::timeout(BATCH_TIMEOUT, both).await {
                Ok((published, received)) => {
                    failures.check(BENCH, published);
                    failures.check(BENCH, received);
                }
                Err(elapsed) => failures.fail(BENCH, &elapsed),
            }
        });
    });
    group.finish();
}

fn bench_nats_core(c: &mut Criterion, runtime: &Runtime, setup: &Setup, failures: &Failures) {
    let mut group = c.benchmark_group("bus_nats_core");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("bus", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = async {
                for _ in 0..BATCH {
                    let message = OutgoingMessage::new("bench.core", Bytes::from_static(PAYLOAD));
                    setup.nats.publish_message(message).await?;
                }
                setup.nats.flush().await
            };
            failures.check("bus_nats_core/bus", batch.await);
        });
    });
    group.bench_function("bus_typed", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = async {
                for n in 0..BATCH {
                    setup.nats.publish("bench.core", &Json(n)).await?;
                }
                setup.nats.flush().await
            };
            failures.check("bus_nats_core/bus_typed", batch.await);
        });
    });
    group.bench_function("raw_owned_subject", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = async {
                for _ in 0..BATCH {
                    setup
                        .raw
                        .publish(String::from("bench.core"), Bytes::from_static(PAYLOAD))
                        .await?;
                }
                setup.raw.flush().await.map_err(BoxError::from)
            };
            failures.check("bus_nats_core/raw_owned_subject", batch.await);
        });
    });
    group.bench_function("raw_same_queue", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = async {
                for _ in 0..BATCH {
                    setup
                        .raw_same_queue
                        .publish("bench.core", Bytes::from_static(PAYLOAD))
                        .await?;
                }
                setup.raw_same_queue.flush().await.map_err(BoxError::from)
            };
            failures.check("bus_nats_core/raw_same_queue", batch.await);
        });
    });
    group.bench_function("raw", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = async {
                for _ in 0..BATCH {
                    setup
                        .raw
                        .publish("bench.core", Bytes::from_static(PAYLOAD))
                        .await?;
                }
                setup.raw.flush().await.map_err(BoxError::from)
            };
            failures.check("bus_nats_core/raw", batch.await);
        });
    });
    group.bench_function("bus_4_tasks", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = in_tasks(|| {
                let bus = setup.nats.clone();
                async move {
                    for _ in 0..BATCH / TASKS {
                        let message =
                            OutgoingMessage::new("bench.core", Bytes::from_static(PAYLOAD));
                        bus.publish_message(message).await?;
                    }
                    Ok(())
                }
            });
            failures.check("bus_nats_core/bus_4_tasks", batch.await);
        });
    });
    group.bench_function("raw_4_tasks", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = in_tasks(|| {
                let raw = setup.raw.clone();
                async move {
                    for _ in 0..BATCH / TASKS {
                        raw.publish("bench.core", Bytes::from_static(PAYLOAD))
                            .await?;
                    }
                    Ok(())
                }
            });
            failures.check("bus_nats_core/raw_4_tasks", batch.await);
        });
    });
    group.finish();
}

/// Publishers at once in the `*_4_tasks` benchmarks.
const TASKS: u64 = 4;

/// Runs [`TASKS`] publishers made by `publisher` as tasks of their own, as
/// the handlers of a service publish; resolves when all are done.
async fn in_tasks<F, Fut>(publisher: F) -> Result<(), BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let tasks: Vec<_> = (0..TASKS).map(|_| tokio::spawn(publisher())).collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn bench_jetstream(c: &mut Criterion, runtime: &Runtime, setup: &Setup, failures: &Failures) {
    let mut group = c.benchmark_group("bus_jetstream");
    group.throughput(Throughput::Elements(CONFIRMED_BATCH));
    group.bench_function("sequential", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = async {
                for _ in 0..CONFIRMED_BATCH {
                    let message =
                        OutgoingMessage::new("bench.confirmed", Bytes::from_static(PAYLOAD));
                    setup.jetstream.publish_message(message).await?;
                }
                Ok::<_, room619::Error>(())
            };
            failures.check("bus_jetstream/sequential", batch.await);
        });
    });
    group.bench_function("concurrent_32", |b| {
        b.to_async(runtime).iter(|| async {
            let batch = futures_util::stream::iter(0..CONFIRMED_BATCH)
                .map(|_| {
                    let message =
                        OutgoingMessage::new("bench.confirmed", Bytes::from_static(PAYLOAD));
                    setup.jetstream.publish_message(message)
                })
                .buffer_unordered(32)
                .try_collect::<Vec<()>>()
                .await;
            failures.check("bus_jetstream/concurrent_32", batch);
        });
    });
    group.finish();
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
    let setup = match runtime.block_on(Setup::start()) {
        Ok(setup) => setup,
        Err(err) => return fail(&err),
    };
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let failures = Failures::default();
    bench_memory(&mut criterion, &runtime, &setup, &failures);
    bench_nats_core(&mut criterion, &runtime, &setup, &failures);
    bench_jetstream(&mut criterion, &runtime, &setup, &failures);
    criterion.final_summary();
    drop(setup);
    match failures.verdict() {
        Ok(()) => ExitCode::SUCCESS,
        Err(verdict) => fail(&verdict.into()),
    }
}

fn fail(err: &BoxError) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "bus bench: {err}").is_err() {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}
