use std::time::Duration;

use room619::service::Health;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support;

#[tokio::test]
async fn live_and_ready_answer_json_with_each_service() {
    let node = support::start(support::config("")).await;
    let addr = node.local_addr();
    let live = support::http1()
        .get(format!("http://{addr}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = support::http1()
        .get(format!("http://{addr}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.headers()["content-type"], "application/json");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["services"][0]["name"], "echo");
    assert_eq!(body["services"][0]["version"], "1.0.0");
    assert_eq!(body["services"][0]["state"], "running");
    assert_eq!(body["services"][0]["health"]["status"], "healthy");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unhealthy_service_makes_the_node_not_ready() {
    let service = support::echo_builder()
        .health_check(|| async { Health::Unhealthy("database unreachable".into()) })
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let ready = support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(
        body["services"][0]["health"]["detail"],
        "database unreachable"
    );
    // gRPC health says the same, for the node and for each of the
    // service's names.
    let mut health = HealthClient::new(support::channel(node.local_addr()).await);
    for service in ["", "echo", "shop.echo.v1.Echo"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::NotServing, "{service:?}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_health_answers_per_service() {
    let node = support::start(support::config("")).await;
    let mut health = HealthClient::new(support::channel(node.local_addr()).await);
    for service in ["", "echo", "shop.echo.v1.Echo"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_turns_readiness_and_grpc_health_off_before_it_stops_accepting() {
    let config = support::config("shutdown_delay = \"600ms\"");
    let node = support::start(config).await;
    let addr = node.local_addr();
    let mut health = HealthClient::new(support::channel(addr).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "shop.echo.v1.Echo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let handle = node.handle();
    handle.shutdown();
    let changed = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the watch saw no change")
        .unwrap()
        .unwrap();
    assert_eq!(changed.status(), ServingStatus::NotServing);

    // Still accepting during the shutdown delay, but not ready.
    let ready = support::http1()
        .get(format!("http://{addr}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["phase"], "draining");
    drop(watch);
    node.wait().await.unwrap();
}

/// A `Watch` left open (a load balancer's, a client-side health check)
/// sees `NOT_SERVING`, then ends once the node drains: it does not hold its
/// connection, and the shutdown, for the whole drain timeout.
#[tokio::test]
async fn an_open_health_watch_ends_when_the_node_drains_and_does_not_hold_up_shutdown() {
    let mut config = support::config("");
    config.node.drain_timeout = Duration::from_secs(30);
    let node = support::start(config).await;
    let mut health = HealthClient::new(support::channel(node.local_addr()).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let started = std::time::Instant::now();
    node.handle().shutdown();
    let changed = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the watch saw no change")
        .unwrap()
        .unwrap();
    assert_eq!(changed.status(), ServingStatus::NotServing);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch stayed open while the node drained");
    let status = end.expect_err("the watch ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    tokio::time::timeout(Duration::from_secs(10), node.wait())
        .await
        .expect("the shutdown waited for the drain timeout")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The watch is still held here: it did not have to be dropped.
    drop(watch);
}

#[tokio::test]
async fn a_separate_admin_listener_serves_health_and_the_main_one_does_not() {
    let config = support::config("admin_listen = \"127.0.0.1:0\"");
    let node = support::start(config).await;
    let handle = node.handle();
    let admin = handle.admin_addr().unwrap();
    assert_ne!(admin, handle.local_addr());
    let ready = support::http1()
        .get(format!("http://{admin}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let main = support::http1()
        .get(format!("http://{}/health/ready", handle.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
    node.shutdown().await.unwrap();
}

/// During `node.shutdown_delay` the node still serves as usual, so its
/// services are not told to stop yet (a stream begun then would end at
/// once); they are when it drains.
#[tokio::test]
async fn services_are_told_to_stop_when_the_node_drains_not_before() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use axum::{Extension, routing::get};
    use room619::{ServiceBuilder, ServiceContext};

    let stopping_at_stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&stopping_at_stop);
    let service = ServiceBuilder::new("stopper", "1.0.0")
        .unwrap()
        .route(
            "/stopping",
            get(|Extension(ctx): Extension<ServiceContext>| async move {
                ctx.is_shutting_down().to_string()
            }),
        )
        .on_stop(move |ctx: ServiceContext| {
            seen.store(ctx.is_shutting_down(), Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let node = support::start_with(support::config("shutdown_delay = \"600ms\""), service).await;
    let addr = node.local_addr();
    let stopping = || support::get_text(addr, "/stopping");
    assert_eq!(stopping().await, "false");
    node.handle().shutdown();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(stopping().await, "false", "told to stop during the delay");
    node.wait().await.unwrap();
    assert!(
        stopping_at_stop.load(Ordering::SeqCst),
        "not told by the stop hook"
    );
}
