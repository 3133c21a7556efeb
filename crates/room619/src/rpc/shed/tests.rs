use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::LoadShedLayer;

fn router(shed: &LoadShedLayer) -> Router {
    Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route("/fast", get(|| async { "fast" }))
        .route("/health/live", get(|| async { "ok" }))
        .layer(shed.clone())
}

fn get_request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_node_answers_503_at_once_and_health_still_passes() {
    let shed = LoadShedLayer::new(1);
    let app = router(&shed);
    let busy = tokio::spawn(app.clone().oneshot(get_request("/slow")));
    tokio::task::yield_now().await;
    assert_eq!(shed.in_flight(), 1);

    let refused = app.clone().oneshot(get_request("/fast")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let health = app
        .clone()
        .oneshot(get_request("/health/live"))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    busy.abort();
    assert!(busy.await.unwrap_err().is_cancelled());
    assert_eq!(shed.in_flight(), 0);
    let again = app.oneshot(get_request("/fast")).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_are_refused_trailers_only_with_unavailable() {
    let shed = LoadShedLayer::new(1);
    let app = router(&shed);
    let _busy = tokio::spawn(app.clone().oneshot(get_request("/slow")));
    tokio::task::yield_now().await;
    let request = Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap();
    let refused = app.oneshot(request).await.unwrap();
    assert_eq!(refused.status(), StatusCode::OK);
    assert_eq!(refused.headers()["grpc-status"], "14");
    assert_eq!(refused.headers()["content-type"], "application/grpc");
    // grpc-message is percent-encoded on the wire.
    let message = refused.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("limit%20of%201"), "{message}");
}

#[tokio::test]
async fn the_permit_is_held_until_the_body_ends() {
    let shed = LoadShedLayer::new(2);
    let app = router(&shed);
    let response = app.oneshot(get_request("/fast")).await.unwrap();
    assert_eq!(shed.in_flight(), 1);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"fast");
    assert_eq!(shed.in_flight(), 0);
}

#[test]
fn exactly_the_limit_is_admitted_however_many_threads_race_for_it() {
    use std::sync::{Arc, Barrier};

    use super::Permits;

    let permits = Arc::new(Permits::new(5));
    let start = Arc::new(Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (permits, start) = (Arc::clone(&permits), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                (0..100)
                    .filter_map(|_| permits.try_acquire())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let held: Vec<_> = racers
        .into_iter()
        .flat_map(|racer| racer.join().unwrap())
        .collect();
    assert_eq!(held.len(), 5);
    assert_eq!(permits.in_flight(), 5);
    assert!(permits.try_acquire().is_none());
    drop(held);
    assert_eq!(permits.in_flight(), 0);
    assert!(permits.try_acquire().is_some());
}
