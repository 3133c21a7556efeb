//! Dynamic registration: services added to and removed from a running node
//! serve and stop without a restart; readiness and discovery follow, and no
//! request in flight fails. Two major versions of a service run side by side.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Extension, routing::get};
use futures_util::StreamExt as _;
use room619::{ErrorKind, ServiceBuilder, ServiceContext, service::BuiltService};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};

use crate::support;

/// `users` at `version`, answering `GET /v<major>/users` with its version and
/// `GET /v<major>/slow` after 300 ms; its stop hook sets `stopped`.
fn users(version: &str, stopped: Arc<AtomicBool>) -> BuiltService {
    let major = version.split('.').next().unwrap().to_owned();
    let answer = version.to_owned();
    ServiceBuilder::new("users", version)
        .unwrap()
        .route(
            format!("/v{major}/users"),
            get(move || {
                let answer = answer.clone();
                async move { answer }
            }),
        )
        .route(
            format!("/v{major}/slow"),
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        )
        .on_stop(move |_| {
            let stopped = Arc::clone(&stopped);
            async move {
                stopped.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_service_added_at_run_time_serves_and_a_removed_one_stops() {
    let node = support::start(support::config("[discovery.metadata]\nzone = \"z1\"")).await;
    let handle = node.handle();
    let base = format!("http://{}", node.local_addr());
    let http = support::http1();

    // Traffic to the service already hosted goes on throughout.
    let keep_going = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let background = tokio::spawn({
        let (keep_going, failures) = (Arc::clone(&keep_going), Arc::clone(&failures));
        let (http, url) = (http.clone(), format!("{base}/echo"));
        async move {
            let mut sent = 0;
            while keep_going.load(Ordering::SeqCst) {
                let ok = http
                    .post(&url)
                    .body("hi")
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent += 1;
            }
            sent
        }
    });

    assert_eq!(
        http.get(format!("{base}/v1/users"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let stopped = Arc::new(AtomicBool::new(false));
    handle
        .add_service(users("1.4.0", Arc::clone(&stopped)))
        .await
        .unwrap();
    let reply = http.get(format!("{base}/v1/users")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().await.unwrap(), "1.4.0");
    let ready: serde_json::Value = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "users" && s["state"] == "running"),
        "{ready}"
    );
    let found = handle.discovery().resolve("users", &"^1".parse().unwrap());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].address(), node.local_addr().to_string());
    assert_eq!(found[0].metadata()["zone"], "z1");
    assert_eq!(found[0].metadata()["node"], "test-node");

    // A request in flight when the service is removed still finishes.
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/v1/slow"));
        async move { http.get(&url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.remove_service("users", "1.4.0").await.unwrap();
    assert!(stopped.load(Ordering::SeqCst), "the stop hook ran");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "slow");

    assert_eq!(
        http.get(format!("{base}/v1/users"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(
        handle
            .discovery()
            .resolve("users", &"*".parse().unwrap())
            .is_empty()
    );
    assert!(
        handle
            .registry()
            .list()
            .iter()
            .all(|s| s.descriptor.name() != "users")
    );

    keep_going.store(false, Ordering::SeqCst);
    let sent = background.await.unwrap();
    assert!(sent > 0);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {sent} requests");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_major_versions_run_side_by_side_and_resolve_by_requirement() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let base = format!("http://{}", node.local_addr());
    let http = support::http1();
    let never = Arc::new(AtomicBool::new(false));
    handle
        .add_service(users("1.4.0", Arc::clone(&never)))
        .await
        .unwrap();
    handle
        .add_service(users("2.0.0", Arc::clone(&never)))
        .await
        .unwrap();
    for (path, version) in [("/v1/users", "1.4.0"), ("/v2/users", "2.0.0")] {
        let reply = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(reply.text().await.unwrap(), version);
    }
    let discovery = handle.discovery();
    let v1 = discovery.resolve("users", &"^1".parse().unwrap());
    assert_eq!(v1.len(), 1);
    assert_eq!(v1[0].version().to_string(), "1.4.0");
    let v2 = discovery.resolve("users", &"^2".parse().unwrap());
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].version().to_string(), "2.0.0");
    let found = handle
        .registry()
        .find("users", &"^1".parse().unwrap())
        .unwrap();
    assert_eq!(found.descriptor.version().to_string(), "1.4.0");

    // Conflicts change nothing.
    let again = handle
        .add_service(users("1.9.0", Arc::clone(&never)))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    let clash = ServiceBuilder::new("other", "1.0.0")
        .unwrap()
        .route("/v1/users", get(|| async { "other" }))
        .build()
        .unwrap();
    let clash = handle.add_service(clash).await.unwrap_err();
    assert_eq!(clash.kind(), ErrorKind::InvalidArgument, "{clash}");
    assert!(
        handle
            .registry()
            .list()
            .iter()
            .all(|s| s.descriptor.name() != "other")
    );
    let unknown = handle.remove_service("users", "3.0.0").await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);

    handle.remove_service("users", "2.0.0").await.unwrap();
    assert_eq!(
        http.get(format!("{base}/v2/users"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let reply = http.get(format!("{base}/v1/users")).send().await.unwrap();
    assert_eq!(reply.text().await.unwrap(), "1.4.0");
    node.shutdown().await.unwrap();
}

/// A removal that waited for a shutdown under way finds the service
/// stopped already: it is refused, and the stop hook runs once.
#[tokio::test]
async fn a_removal_racing_shutdown_is_refused_and_stops_nothing_twice() {
    let node = support::start(support::config("shutdown_delay = \"500ms\"\n")).await;
    let handle = node.handle().clone();
    let stops = Arc::new(AtomicUsize::new(0));
    let counted = ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .on_stop({
            let stops = Arc::clone(&stops);
            move |_| {
                let stops = Arc::clone(&stops);
                async move {
                    stops.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    handle.add_service(counted).await.unwrap();
    let shutdown = tokio::spawn(node.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = handle.remove_service("users", "1.0.0").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    shutdown.await.unwrap().unwrap();
    assert_eq!(stops.load(Ordering::SeqCst), 1);
}

/// While a removed service drains, the node's routers no longer route it: a
/// client made then goes to another instance of the service, not in process
/// to a route that is gone (which answered 404).
#[tokio::test]
async fn clients_made_while_a_removed_service_drains_go_to_another_instance() {
    let elsewhere = support::start_named("elsewhere", &[], None).await;
    elsewhere
        .handle()
        .add_service(users("1.5.0", Arc::new(AtomicBool::new(false))))
        .await
        .unwrap();
    let node = support::start_named(
        "here",
        &[("users", "1.5.0", elsewhere.local_addr())],
        Some(users("1.4.0", Arc::new(AtomicBool::new(false)))),
    )
    .await;
    let handle = node.handle().clone();
    let colocated = handle.http_client("users", "^1").unwrap();
    assert!(colocated.is_colocated());
    assert_eq!(users_answer(&colocated).await, "1.4.0");

    // A request in flight holds the drain for 300 ms.
    let http = support::http1();
    let slow = tokio::spawn({
        let url = format!("http://{}/v1/slow", node.local_addr());
        async move { http.get(&url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let removing = tokio::spawn({
        let handle = handle.clone();
        async move { handle.remove_service("users", "1.4.0").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!removing.is_finished(), "the drain is under way");
    let during = handle.http_client("users", "^1").unwrap();
    assert!(!during.is_colocated(), "a client made during the drain");
    assert_eq!(users_answer(&during).await, "1.5.0", "the other instance");

    removing.await.unwrap().unwrap();
    assert_eq!(slow.await.unwrap(), 200);
    node.shutdown().await.unwrap();
    elsewhere.shutdown().await.unwrap();
}

/// `GET /v1/users` through `client`: the version that answered.
async fn users_answer(client: &room619::rpc::client::HttpClient) -> String {
    let request = http::Request::get("/v1/users")
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = client.send(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = axum::body::to_bytes(answer.into_body(), 1024)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// `users` 1.0.0 whose start hook waits for `go`, answering `GET /v1/users`.
fn waiting_to_start(go: Arc<tokio::sync::Notify>) -> BuiltService {
    ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .route("/v1/users", get(|| async { "1.0.0" }))
        .on_start(move |_| {
            let go = Arc::clone(&go);
            async move {
                go.notified().await;
                Ok(())
            }
        })
        .build()
        .unwrap()
}

/// An addition whose caller stops waiting (a timeout, an admin request cut
/// short) still runs to its end; while its start hook runs the node stays
/// ready, its other services serving; after it the service serves and can
/// be removed.
#[tokio::test]
async fn an_addition_its_caller_gave_up_on_completes_and_the_node_stays_ready() {
    let node = support::start(support::config("")).await;
    let handle = node.handle().clone();
    let base = format!("http://{}", node.local_addr());
    let http = support::http1();
    let go = Arc::new(tokio::sync::Notify::new());
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        handle.add_service(waiting_to_start(Arc::clone(&go))),
    )
    .await;
    assert!(gave_up.is_err(), "the start hook had not run yet");
    let ready = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    go.notify_one();
    let serving = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = http.get(format!("{base}/v1/users")).send().await.unwrap();
            if reply.status() == 200 {
                return reply.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the addition given up on never completed");
    assert_eq!(serving, "1.0.0");
    let ready = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    handle.remove_service("users", "1.0.0").await.unwrap();
    node.shutdown().await.unwrap();
}

/// Every stop hook of a service runs, the failing ones included (each
/// releases what it holds), the last added first; the removal answers the
/// first failure.
#[tokio::test]
async fn every_stop_hook_runs_when_one_fails() {
    let node = support::start(support::config("")).await;
    let handle = node.handle().clone();
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = |n: u32, fails: bool| {
        let ran = Arc::clone(&ran);
        move |_| {
            let ran = Arc::clone(&ran);
            async move {
                ran.lock().unwrap().push(n);
                if fails {
                    Err(room619::Error::internal(format!("hook {n} failed")))
                } else {
                    Ok(())
                }
            }
        }
    };
    let service = ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .on_stop(hook(1, false))
        .on_stop(hook(2, true))
        .on_stop(hook(3, true))
        .build()
        .unwrap();
    handle.add_service(service).await.unwrap();
    let err = handle.remove_service("users", "1.0.0").await.unwrap_err();
    assert_eq!(err.message(), "hook 3 failed");
    assert_eq!(*ran.lock().unwrap(), [3, 2, 1]);
    node.shutdown().await.unwrap();
}

/// A start hook that panics, or overruns `node.start_timeout`, fails the
/// addition like one that errs: the service is not left `starting` (which
/// readiness would ignore for good), and it can be added again.
#[tokio::test]
async fn a_start_hook_that_panics_fails_the_addition_and_leaves_nothing_behind() {
    let node = support::start(support::config("start_timeout = \"300ms\"")).await;
    let handle = node.handle().clone();
    let panicking = ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .on_start(|_| async { panic!("the start hook's own bug") })
        .build()
        .unwrap();
    let err = handle.add_service(panicking).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.message().contains("panicked"), "{err}");
    let hung = ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .on_start(|_| std::future::pending())
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), handle.add_service(hung))
        .await
        .expect("the addition did not hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    handle
        .add_service(users("1.0.0", Arc::new(AtomicBool::new(false))))
        .await
        .unwrap();
    let ready = support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    node.shutdown().await.unwrap();
}

/// Counts down when dropped: one open stream.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /ticks`: a tick every 10 ms until the service stops; `open` counts
/// the streams still running.
async fn ticks(
    Extension(ctx): Extension<ServiceContext>,
    Extension(open): Extension<Arc<AtomicUsize>>,
) -> axum::body::Body {
    open.fetch_add(1, Ordering::SeqCst);
    let stopping = async move { ctx.shutdown_signal().await };
    let ticks = futures_util::stream::unfold(Open(open), |open| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let tick = bytes::Bytes::from_static(b"tick\n");
        Some((Ok::<_, std::io::Error>(tick), open))
    });
    axum::body::Body::from_stream(ticks.take_until(stopping))
}

/// Streams open when their service is removed end (its shutdown signal
/// fires), and its stop hook runs only once they have ended: a response
/// counts as in flight until its body has been sent.
#[tokio::test]
async fn streams_open_at_a_removal_end_before_the_stop_hook_runs() {
    let node = support::start_all(support::config(""), []).await;
    let handle = node.handle().clone();
    let fixture = support::EchoFixture::default();
    let open = Arc::new(AtomicUsize::new(0));
    // What the stop hook saw: messages produced, streams still open.
    let produced_at_stop = Arc::new(AtomicU64::new(u64::MAX));
    let open_at_stop = Arc::new(AtomicUsize::new(usize::MAX));
    let echo = fixture
        .builder()
        .route("/ticks", get(ticks).layer(Extension(Arc::clone(&open))))
        .on_stop({
            let (produced, open) = (Arc::clone(&fixture.produced), Arc::clone(&open));
            let (produced_at_stop, open_at_stop) =
                (Arc::clone(&produced_at_stop), Arc::clone(&open_at_stop));
            move |_| {
                produced_at_stop.store(produced.load(Ordering::SeqCst), Ordering::SeqCst);
                open_at_stop.store(open.load(Ordering::SeqCst), Ordering::SeqCst);
                async { Ok(()) }
            }
        })
        .build()
        .unwrap();
    handle.add_service(echo).await.unwrap();

    // An endless gRPC server stream and an endless HTTP body, read as they come.
    let mut client = EchoClient::new(support::channel(node.local_addr()).await);
    let mut grpc = client
        .echo_stream(EchoRequest {
            message: "on".into(),
            repeat: u32::MAX,
            ..EchoRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(grpc.message().await.unwrap().is_some());
    let grpc = tokio::spawn(async move {
        while grpc.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    });
    let mut http = support::http1()
        .get(format!("http://{}/ticks", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 200);
    assert!(http.chunk().await.unwrap().is_some());
    let http = tokio::spawn(async move {
        while http.chunk().await?.is_some() {}
        Ok::<_, reqwest::Error>(())
    });

    tokio::time::timeout(
        Duration::from_secs(4),
        handle.remove_service("echo", "1.0.0"),
    )
    .await
    .expect("the removal waits for the streams to end, not for the 5 s drain timeout")
    .unwrap();
    let ended = Duration::from_secs(1);
    tokio::time::timeout(ended, grpc)
        .await
        .expect("the gRPC stream ended")
        .unwrap()
        .expect("cleanly, with status OK");
    tokio::time::timeout(ended, http)
        .await
        .expect("the HTTP body ended")
        .unwrap()
        .expect("cleanly");
    assert_eq!(
        open_at_stop.load(Ordering::SeqCst),
        0,
        "no stream open at the stop hook"
    );
    assert_eq!(
        produced_at_stop.load(Ordering::SeqCst),
        fixture.produced.load(Ordering::SeqCst),
        "nothing streamed after the stop hook"
    );
    node.shutdown().await.unwrap();
}

/// The node's concurrency limit holds across a change of its services: a
/// request in flight on the routes before the change still counts against
/// the limit after it.
#[tokio::test]
async fn the_load_shedding_limit_holds_across_an_addition() {
    let node = support::start(support::config("[limits]\nmax_concurrent_requests = 1")).await;
    let base = format!("http://{}", node.local_addr());
    let http = support::http1();
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/slow?ms=3000"));
        async move { http.get(&url).send().await.unwrap().status() }
    });
    // Until the slow request holds the one slot.
    tokio::time::timeout(Duration::from_secs(2), async {
        while http
            .post(format!("{base}/echo"))
            .send()
            .await
            .unwrap()
            .status()
            != 503
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow request was admitted");
    node.handle()
        .add_service(users("1.0.0", Arc::new(AtomicBool::new(false))))
        .await
        .unwrap();

    let during = http.get(format!("{base}/v1/users")).send().await.unwrap();
    assert_eq!(
        during.status(),
        503,
        "the slow request still holds the one slot"
    );
    assert_eq!(slow.await.unwrap(), 200);
    let after = http.get(format!("{base}/v1/users")).send().await.unwrap();
    assert_eq!(after.status(), 200);
    node.shutdown().await.unwrap();
}

/// A service of the application's own, not built (so no builder checks its
/// routes): named `users`, with `routes`, and a `start` or `stop` that
/// panics while making its future when told to.
struct Custom {
    descriptor: room619::service::ServiceDescriptor,
    routes: room619::service::ServiceRoutes,
    start_panics: bool,
    stop_panics: bool,
}

impl Custom {
    fn new(version: &str) -> Self {
        Self {
            descriptor: room619::service::ServiceDescriptor::new("users", version).unwrap(),
            routes: room619::service::ServiceRoutes::default(),
            start_panics: false,
            stop_panics: false,
        }
    }
}

impl room619::service::Service for Custom {
    fn descriptor(&self) -> &room619::service::ServiceDescriptor {
        &self.descriptor
    }

    fn routes(&self) -> room619::service::ServiceRoutes {
        self.routes.clone()
    }

    fn start(
        &self,
        _ctx: ServiceContext,
    ) -> futures_util::future::BoxFuture<'static, room619::Result<()>> {
        assert!(!self.start_panics, "a bug in start, before its future");
        Box::pin(async { Ok(()) })
    }

    fn stop(
        &self,
        _ctx: ServiceContext,
    ) -> futures_util::future::BoxFuture<'static, room619::Result<()>> {
        assert!(!self.stop_panics, "a bug in stop, before its future");
        Box::pin(async { Ok(()) })
    }
}

/// Whether the node behind `handle` has a `users` service in its registry.
fn hosts_users(handle: &room619::NodeHandle) -> bool {
    handle
        .registry()
        .list()
        .iter()
        .any(|status| status.descriptor.name() == "users")
}

/// A `start` or `stop` of the application's own that panics (even while
/// making its future) fails the addition or the removal with `Internal`,
/// as one that errs does, and leaves nothing behind: the service is not
/// left in the registry, and can be added again.
#[tokio::test]
async fn a_start_or_stop_that_panics_leaves_the_service_addable_again() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let panics_starting = Custom {
        start_panics: true,
        ..Custom::new("1.0.0")
    };
    let err = handle.add_service(panics_starting).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        err.message().contains("start hook of users@1.0.0 panicked"),
        "{err}"
    );
    assert!(!hosts_users(&handle), "left in the registry");

    let panics_stopping = Custom {
        stop_panics: true,
        ..Custom::new("1.0.0")
    };
    handle.add_service(panics_stopping).await.unwrap();
    let err = handle.remove_service("users", "1.0.0").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        err.message().contains("stop hook of users@1.0.0 panicked"),
        "{err}"
    );
    assert!(!hosts_users(&handle), "left in the registry");

    handle.add_service(Custom::new("1.0.0")).await.unwrap();
    handle.remove_service("users", "1.0.0").await.unwrap();
    node.shutdown().await.unwrap();
}

/// Paths in axum 0.7's syntax (`:id`, `*rest`, a nest prefix `/:tenant`),
/// which axum 0.8 refuses by panicking, are refused with an error saying
/// how to write them; the node goes on, and the service is left out of the
/// registry.
#[tokio::test]
async fn routes_in_axum_0_7_syntax_are_refused_not_a_panic() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let with_routes = |http: &[&str], nested: &[&str]| Custom {
        routes: room619::service::ServiceRoutes {
            http: http
                .iter()
                .map(|path| ((*path).to_owned(), get(|| async { "found" })))
                .collect(),
            nested: nested
                .iter()
                .map(|prefix| {
                    let router = axum::Router::new().route("/x", get(|| async { "x" }));
                    ((*prefix).to_owned(), router)
                })
                .collect(),
            ..room619::service::ServiceRoutes::default()
        },
        ..Custom::new("1.0.0")
    };
    for (service, suggested) in [
        (with_routes(&["/v1/users/:id"], &[]), "`{id}`"),
        (with_routes(&["/files/*rest"], &[]), "`{*rest}`"),
        (with_routes(&[], &["/:tenant"]), "`{tenant}`"),
    ] {
        let err = handle.add_service(service).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(suggested), "{err}");
        assert!(!hosts_users(&handle), "left in the registry");
    }
    handle
        .add_service(with_routes(&["/v1/users/{id}"], &[]))
        .await
        .unwrap();
    assert_eq!(
        support::get_text(node.local_addr(), "/v1/users/7").await,
        "found"
    );
    node.shutdown().await.unwrap();
}

/// An addition whose start hook fails leaves gRPC health as it was: the
/// name it shares with the running version (`users`) keeps answering for
/// that one, also after a round of checks.
#[tokio::test]
async fn a_failed_addition_leaves_grpc_health_of_the_running_version_alone() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

    let node = support::start(support::config("")).await;
    let handle = node.handle();
    handle
        .add_service(users("1.4.0", Arc::new(AtomicBool::new(false))))
        .await
        .unwrap();
    let mut health = HealthClient::new(support::channel(node.local_addr()).await);
    assert_eq!(users_status(&mut health).await, ServingStatus::Serving);

    let failing = ServiceBuilder::new("users", "2.0.0")
        .unwrap()
        .route("/v2/users", get(|| async { "2.0.0" }))
        .on_start(|_| async { Err(room619::Error::unavailable("the database is down")) })
        .build()
        .unwrap();
    let err = handle.add_service(failing).await.unwrap_err();
    assert_eq!(err.message(), "the database is down");

    // A readiness call runs a round of checks and publishes its verdict.
    let ready = support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(users_status(&mut health).await, ServingStatus::Serving);
    node.shutdown().await.unwrap();
}

/// What gRPC health answers for `users`.
async fn users_status(
    health: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
) -> tonic_health::pb::health_check_response::ServingStatus {
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "users".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}
