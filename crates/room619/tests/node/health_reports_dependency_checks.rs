//! Readiness lists each service's named dependency checks: a degraded
//! dependency is reported and keeps the node ready, a failing one makes it
//! not ready, over HTTP and gRPC health alike.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use room619::{ServiceBuilder, service::Health};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support;

/// How long a `/health/ready` answer is given again (the node's
/// `READY_CACHE_AGE`), and a little more.
const READY_CACHE_AGE: Duration = Duration::from_millis(1100);

#[tokio::test]
async fn degraded_dependencies_keep_readiness_and_failing_ones_take_it_away() {
    let database_up = Arc::new(AtomicBool::new(true));
    let up = Arc::clone(&database_up);
    let service = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .dependency("cache", || async {
            Health::Degraded("replica lagging".into())
        })
        .dependency("postgres", move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Health::Healthy
                } else {
                    Health::Unhealthy("connection refused".into())
                }
            }
        })
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let url = format!("http://{}/health/ready", node.local_addr());
    let http = support::http1();

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["status"], "ready");
    assert_eq!(report["degraded"], true);
    assert_eq!(
        report["services"][0]["dependencies"],
        serde_json::json!([
            { "name": "cache", "status": "degraded", "detail": "replica lagging" },
            { "name": "postgres", "status": "healthy" },
        ])
    );

    // The answer is given again for a second; a dependency that fails is
    // seen once it has passed.
    database_up.store(false, Ordering::SeqCst);
    tokio::time::sleep(READY_CACHE_AGE).await;
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["status"], "not_ready");
    assert_eq!(
        report["services"][0]["dependencies"][1],
        serde_json::json!({ "name": "postgres", "status": "unhealthy", "detail": "connection refused" })
    );
    node.shutdown().await.unwrap();
}

/// A service of the application's own whose dependency checks never
/// answer: readiness still answers, in about six seconds, not ready.
#[tokio::test]
async fn dependency_checks_that_never_answer_fail_readiness_in_bounded_time() {
    struct Stuck(room619::service::ServiceDescriptor);

    impl room619::service::Service for Stuck {
        fn descriptor(&self) -> &room619::service::ServiceDescriptor {
            &self.0
        }

        fn routes(&self) -> room619::service::ServiceRoutes {
            room619::service::ServiceRoutes::default()
        }

        fn dependencies(
            &self,
        ) -> futures_util::future::BoxFuture<'static, Vec<room619::service::DependencyHealth>>
        {
            Box::pin(std::future::pending())
        }
    }

    let descriptor = room619::service::ServiceDescriptor::new("stuck", "1.0.0").unwrap();
    let node = room619::Node::builder()
        .config(support::config(""))
        .service(Stuck(descriptor))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let url = format!("http://{}/health/ready", node.local_addr());
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        support::http1().get(&url).send(),
    )
    .await
    .expect("readiness hung on a dependency check")
    .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(response.status(), 503);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        report["services"][0]["dependencies"][0]["status"], "unhealthy",
        "{report}"
    );
    node.shutdown().await.unwrap();
}

/// gRPC health gives the verdict of `/health/ready`, without anyone asking
/// it: a failing dependency takes the node (`""`) and the failing service's
/// names out of `SERVING` within one round of the background checks, and
/// leaves a healthy service's name alone; once the dependency recovers, a
/// `/health/ready` call and gRPC health agree at once.
#[tokio::test]
async fn grpc_health_follows_a_failing_dependency_and_its_recovery() {
    let database_up = Arc::new(AtomicBool::new(true));
    let up = Arc::clone(&database_up);
    let echo = support::echo_builder()
        .dependency("postgres", move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Health::Healthy
                } else {
                    Health::Unhealthy("connection refused".into())
                }
            }
        })
        .build()
        .unwrap();
    let orders = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .build()
        .unwrap();
    let node = support::start_all(support::config(""), [echo, orders]).await;
    let mut health = HealthClient::new(support::channel(node.local_addr()).await);
    for service in ["", "echo", "shop.echo.v1.Echo", "orders"] {
        assert_eq!(
            check(&mut health, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let mut watch = watch(&mut health, "echo").await;
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // Nobody asks `/health/ready`: the background checks notice (every 5 s).
    database_up.store(false, Ordering::SeqCst);
    let changed = tokio::time::timeout(Duration::from_secs(15), watch.message())
        .await
        .expect("gRPC health kept answering SERVING with a failing dependency")
        .unwrap()
        .unwrap();
    // Only changes are sent: the rounds in between repeated nothing.
    assert_eq!(changed.status(), ServingStatus::NotServing);
    for service in ["", "echo", "shop.echo.v1.Echo"] {
        assert_eq!(
            check(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    assert_eq!(
        check(&mut health, "orders").await,
        ServingStatus::Serving,
        "a healthy service's own name"
    );

    // Recovered: the readiness call publishes its verdict before answering.
    database_up.store(true, Ordering::SeqCst);
    let ready = support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    for service in ["", "echo", "shop.echo.v1.Echo", "orders"] {
        assert_eq!(
            check(&mut health, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let back = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the watch saw no recovery")
        .unwrap()
        .unwrap();
    assert_eq!(back.status(), ServingStatus::Serving);
    drop(watch);
    node.shutdown().await.unwrap();
}

/// `/health/ready` is public and may be asked very often: the calls that
/// arrive while a round of checks runs share its answer, and so do those of
/// the next second; the checks (the database's) run about once a second
/// however often readiness is asked, and a change is seen a second later.
#[tokio::test]
async fn readiness_calls_share_one_round_of_checks_a_second() {
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&checks);
    let service = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .dependency("postgres", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Health::Healthy
            }
        })
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let url = format!("http://{}/health/ready", node.local_addr());
    let http = support::http1();
    // The round run beside the start has begun, and ended.
    tokio::time::timeout(Duration::from_secs(10), async {
        while checks.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = checks.load(Ordering::SeqCst);

    let calls = (0..20).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let response = http.get(&url).send().await.unwrap();
            response.status()
        })
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status.unwrap(), 200);
    }
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    }
    // One round, or two if the calls spanned the cache's second; one more
    // if a background round (every 5 s) fell among them; never one a call.
    let during = checks.load(Ordering::SeqCst) - before;
    assert!(
        (1..=4).contains(&during),
        "{during} rounds of checks for 25 calls"
    );

    // A second later, a call checks again.
    tokio::time::sleep(READY_CACHE_AGE).await;
    let again = checks.load(Ordering::SeqCst);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert!(
        checks.load(Ordering::SeqCst) > again,
        "the answer was not checked again"
    );
    node.shutdown().await.unwrap();
}

/// A health or dependency check with a bug that panics fails, as one that
/// times out does: `/health/ready` answers `503` naming it (rather than
/// resetting the connection), and the background checks behind gRPC health
/// go on (they see the check fail, then recover).
#[tokio::test]
async fn a_check_that_panics_fails_and_the_checks_go_on() {
    let panicking = Arc::new(AtomicBool::new(false));
    let panics = Arc::clone(&panicking);
    let echo = support::echo_builder()
        .health_check(move || {
            let panics = panics.load(Ordering::SeqCst);
            async move {
                assert!(!panics, "the health check's own bug");
                Health::Healthy
            }
        })
        .build()
        .unwrap();
    let orders = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .dependency("postgres", || async { Health::Healthy })
        .dependency("cache", || -> std::future::Ready<Health> {
            panic!("the dependency check's own bug")
        })
        .build()
        .unwrap();
    let node = support::start_all(support::config(""), [echo, orders]).await;
    let mut health = HealthClient::new(support::channel(node.local_addr()).await);
    let mut watch = watch(&mut health, "echo").await;
    // The round run beside the start: `echo` passes.
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // Nobody asks `/health/ready`: the background checks see the panic...
    panicking.store(true, Ordering::SeqCst);
    let failed = tokio::time::timeout(Duration::from_secs(15), watch.message())
        .await
        .expect("the background checks did not see the check panic")
        .unwrap()
        .unwrap();
    assert_eq!(failed.status(), ServingStatus::NotServing);
    // ...and go on after it: the recovery is seen.
    panicking.store(false, Ordering::SeqCst);
    let recovered = tokio::time::timeout(Duration::from_secs(15), watch.message())
        .await
        .expect("the background checks stopped at the panic")
        .unwrap()
        .unwrap();
    assert_eq!(recovered.status(), ServingStatus::Serving);
    drop(watch);

    panicking.store(true, Ordering::SeqCst);
    let response = support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .expect("readiness answers despite the panics");
    assert_eq!(response.status(), 503);
    let report: serde_json::Value = response.json().await.unwrap();
    let service = |name: &str| {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        service("echo")["health"],
        serde_json::json!({ "status": "unhealthy", "detail": "health check panicked" })
    );
    assert_eq!(
        service("orders")["dependencies"],
        serde_json::json!([
            { "name": "postgres", "status": "healthy" },
            { "name": "cache", "status": "unhealthy", "detail": "dependency check panicked" },
        ])
    );
    node.shutdown().await.unwrap();
}

/// A gRPC health `Watch` of `service`.
async fn watch(
    health: &mut HealthClient<Channel>,
    service: &str,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    health
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn check(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}
