use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::routing::get;
use room619::ServiceBuilder;
use shop_proto::echo::v1::EchoRequest;
use tokio::{net::TcpStream, sync::Notify};

use crate::support;

/// A service whose `/wait` route tells `entered` when it starts, then answers
/// after `ms` milliseconds.
fn notifying_service(entered: Arc<Notify>, ms: u64) -> room619::service::BuiltService {
    support::echo_builder()
        .route(
            "/wait",
            get(move || {
                let entered = Arc::clone(&entered);
                async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "finished"
                }
            }),
        )
        .build()
        .unwrap()
}

async fn connection_refused(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn in_flight_requests_finish_after_shutdown_starts_while_new_connections_are_refused() {
    let entered = Arc::new(Notify::new());
    let node = support::start_with(
        support::config(""),
        notifying_service(Arc::clone(&entered), 700),
    )
    .await;
    let addr = node.local_addr();

    let http = tokio::spawn(async move {
        let response = support::http1()
            .get(format!("http://{addr}/wait"))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    });
    let mut echo = support::echo_client(addr).await;
    let grpc = tokio::spawn(async move {
        echo.echo(EchoRequest {
            message: "late".into(),
            delay_ms: 700,
            ..EchoRequest::default()
        })
        .await
    });
    entered.notified().await;

    let handle = node.handle();
    handle.shutdown();
    assert!(
        connection_refused(addr).await,
        "new connections are still accepted"
    );

    let (status, body) = http.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "finished");
    let reply = grpc.await.unwrap().unwrap().into_inner();
    assert_eq!(reply.message, "late");
    node.wait().await.unwrap();
    assert_eq!(handle.phase(), room619::node::Phase::Stopped);
}

#[tokio::test]
async fn the_drain_timeout_bounds_how_long_shutdown_waits() {
    let entered = Arc::new(Notify::new());
    let mut config = support::config("");
    config.node.drain_timeout = Duration::from_millis(300);
    let node = support::start_with(config, notifying_service(Arc::clone(&entered), 30_000)).await;
    let addr = node.local_addr();
    let request = tokio::spawn(async move {
        support::http1()
            .get(format!("http://{addr}/wait"))
            .send()
            .await
    });
    entered.notified().await;
    let started = Instant::now();
    node.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(
        request.await.unwrap().is_err(),
        "the cut request fails on the client"
    );
}

#[tokio::test]
async fn stop_hooks_run_in_reverse_start_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = |name: &'static str| {
        let on_start = Arc::clone(&log);
        let on_stop = Arc::clone(&log);
        ServiceBuilder::new(name, "1.0.0")
            .unwrap()
            .on_start(move |_| {
                on_start.lock().unwrap().push(format!("start {name}"));
                async { Ok(()) }
            })
            .on_stop(move |ctx| {
                assert!(ctx.is_shutting_down());
                on_stop.lock().unwrap().push(format!("stop {name}"));
                async { Ok(()) }
            })
            .build()
            .unwrap()
    };
    let node = support::start_all(support::config(""), [service("first"), service("second")]).await;
    node.shutdown().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["start first", "start second", "stop second", "stop first"]
    );
}

/// A service of the application's own whose `stop` panics, while making
/// its future.
struct PanicsOnStop(room619::service::ServiceDescriptor);

impl room619::service::Service for PanicsOnStop {
    fn descriptor(&self) -> &room619::service::ServiceDescriptor {
        &self.0
    }

    fn routes(&self) -> room619::service::ServiceRoutes {
        room619::service::ServiceRoutes::default()
    }

    fn stop(
        &self,
        _ctx: room619::ServiceContext,
    ) -> futures_util::future::BoxFuture<'static, room619::Result<()>> {
        panic!("a bug in stop, before its future is made")
    }
}

/// A stop hook that panics fails the shutdown as one that errs does, with
/// an error naming it; the rest of the shutdown still runs: the other
/// services' stop hooks (stopped after it), the bus's flush, the end of
/// discovery.
#[tokio::test]
async fn a_stop_hook_that_panics_fails_the_shutdown_but_the_rest_of_it_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use room619::service::{ServiceDescriptor, ServiceState};

    let stopped = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&stopped);
    let echo = support::echo_builder()
        .on_stop(move |_| {
            seen.store(true, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let panics = PanicsOnStop(ServiceDescriptor::new("panics", "1.0.0").unwrap());
    // Started after `echo`, so stopped before it.
    let node = room619::Node::builder()
        .config(support::config(""))
        .service(echo)
        .service(panics)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let handle = node.handle();
    let err = tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .expect("the shutdown ended")
        .unwrap_err();
    assert_eq!(err.kind(), room619::ErrorKind::Internal, "{err}");
    assert!(
        err.message().contains("stop hook of panics@1.0.0 panicked"),
        "{err}"
    );
    assert!(
        stopped.load(Ordering::SeqCst),
        "the other service's stop hook ran"
    );
    // The whole shutdown ran, to its last step.
    assert_eq!(handle.phase(), room619::node::Phase::Stopped);
    let states: Vec<_> = handle
        .registry()
        .list()
        .into_iter()
        .map(|status| (status.descriptor.name().to_owned(), status.state))
        .collect();
    assert_eq!(
        states,
        [
            ("echo".to_owned(), ServiceState::Stopped),
            ("panics".to_owned(), ServiceState::Failed),
        ]
    );
}

/// A node whose second service's start hook is `bad` fails to start with
/// its error, after stopping the first service: the error, and the stop
/// hooks that ran. The second service opens a "pool" before `bad` runs
/// (a start hook paired with its stop hook), which the failed start closes.
async fn start_failing_with<F>(config: &str, bad: F) -> (room619::Error, Vec<&'static str>)
where
    F: Fn(room619::ServiceContext) -> futures_util::future::BoxFuture<'static, room619::Result<()>>
        + Send
        + Sync
        + 'static,
{
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&stopped);
    let good = ServiceBuilder::new("good", "1.0.0")
        .unwrap()
        .on_stop(move |_| {
            recorder.lock().unwrap().push("good");
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let recorder = Arc::clone(&stopped);
    let never = Arc::clone(&stopped);
    let bad = ServiceBuilder::new("bad", "1.0.0")
        .unwrap()
        .lifecycle(
            |_| async { Ok(()) },
            move |_| {
                recorder.lock().unwrap().push("bad's pool");
                async { Ok(()) }
            },
        )
        .on_start(bad)
        .lifecycle(
            |_| async { Ok(()) },
            move |_| {
                never.lock().unwrap().push("a pair never started");
                async { Ok(()) }
            },
        )
        .build()
        .unwrap();
    let started = support::start_fails(support::config(config), [good, bad]);
    let err = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("the start did not hang");
    // Undone by the time the start fails (an abandoned start too, whose
    // undoing runs on a task of its own), and before the services started
    // earlier are stopped.
    let stopped = stopped.lock().unwrap().clone();
    (err, stopped)
}

#[tokio::test]
async fn a_failing_start_hook_stops_the_services_already_started() {
    let (err, stopped) = start_failing_with("", |_| {
        Box::pin(async { Err(room619::Error::unavailable("no database")) })
    })
    .await;
    assert_eq!(err.message(), "no database");
    assert_eq!(stopped, ["bad's pool", "good"]);
}

/// A start hook that never finishes fails the start at
/// `node.start_timeout`; one that panics fails it as well. Either way the
/// services already started are stopped, and so is what the failing
/// service's earlier hooks set up.
#[tokio::test]
async fn a_hung_or_panicking_start_hook_fails_the_start() {
    let (err, stopped) = start_failing_with("start_timeout = \"300ms\"", |_| {
        Box::pin(std::future::pending())
    })
    .await;
    assert_eq!(err.kind(), room619::ErrorKind::DeadlineExceeded, "{err}");
    assert!(err.message().contains("node.start_timeout"), "{err}");
    assert!(err.message().contains("bad@1.0.0"), "{err}");
    assert_eq!(stopped, ["bad's pool", "good"]);

    let (err, stopped) = start_failing_with("", |_| {
        Box::pin(async { panic!("the start hook's own bug") })
    })
    .await;
    assert_eq!(err.kind(), room619::ErrorKind::Internal, "{err}");
    assert!(err.message().contains("panicked"), "{err}");
    assert!(err.message().contains("bad@1.0.0"), "{err}");
    assert_eq!(stopped, ["bad's pool", "good"]);
}

/// With NATS gone, the bus's flush would wait for a reconnection that may
/// never come: the drain timeout bounds it, and the node stops.
#[cfg(feature = "nats")]
#[tokio::test]
async fn shutdown_ends_while_the_bus_cannot_reach_nats() {
    let mut nats = support::nats::NatsServer::start().await;
    let mut config = nats.config("nats", "");
    config.node.drain_timeout = Duration::from_millis(300);
    let node = support::start(config).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await;
    let took = started.elapsed();
    assert!(stopped.is_ok(), "shutdown still waiting after {took:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

/// A start that fails after discovery connected (here a start hook) ends the
/// background work it began: discovery's watcher and heartbeat, and with
/// them the NATS connection's tasks. Nothing is left running.
#[cfg(feature = "nats")]
#[tokio::test]
async fn a_failed_start_leaves_no_background_task_running() {
    let nats = support::nats::NatsServer::start().await;
    let config = support::config(&format!(
        "[discovery]\nbackend = \"nats\"\n[discovery.nats]\nurl = \"{}\"\n",
        nats.url()
    ));
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let bad = ServiceBuilder::new("bad", "1.0.0")
        .unwrap()
        .on_start(|_| async { Err(room619::Error::unavailable("no database")) })
        .build()
        .unwrap();
    let err = support::start_fails(config, [bad]).await;
    assert_eq!(err.message(), "no database");
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        while metrics.num_alive_tasks() > before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "{} tasks still alive after the failed start ({before} before)",
        metrics.num_alive_tasks()
    );
}
