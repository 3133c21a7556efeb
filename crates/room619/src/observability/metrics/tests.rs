use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;

use super::{Metrics, labels::RpcRouteLabels};

#[test]
fn counters_are_named_with_total_in_prometheus_text() {
    let metrics = Metrics::new("n");
    let counter: Counter = Counter::default();
    metrics
        .register("app_things", "Things", counter.clone())
        .unwrap();
    counter.inc_by(3);
    let text = metrics.render();
    assert!(text.contains("# HELP app_things_total Things.\n"), "{text}");
    assert!(text.contains("# TYPE app_things_total counter\n"), "{text}");
    assert!(text.contains("app_things_total 3\n"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(metrics.render_openmetrics().ends_with("# EOF\n"));
}

/// An application's counter with exemplars: OpenMetrics shows them,
/// Prometheus text 0.0.4 (which has no room for them) does not.
#[test]
fn exemplars_stay_out_of_prometheus_text() {
    use prometheus_client::metrics::exemplar::CounterWithExemplar;

    let metrics = Metrics::new("n");
    let counter: CounterWithExemplar<Vec<(String, String)>> = CounterWithExemplar::default();
    metrics
        .register("app_orders", "Orders", counter.clone())
        .unwrap();
    counter.inc_by(
        2,
        Some(vec![("trace_id".to_owned(), "abc".to_owned())]),
        None,
    );
    let openmetrics = metrics.render_openmetrics();
    assert!(
        openmetrics.contains(r#"app_orders_total 2 # {trace_id="abc"}"#),
        "{openmetrics}"
    );
    let text = metrics.render();
    assert!(text.contains("app_orders_total 2\n"), "{text}");
    assert!(!text.contains(" # {"), "{text}");
}

/// A second family under one name, a name Prometheus cannot read or one
/// of room619's own would make the whole scrape invalid: refused.
#[test]
fn duplicate_and_unreadable_names_are_refused() {
    let metrics = Metrics::new("n");
    let first: Counter = Counter::default();
    metrics.register("app_x", "X", first.clone()).unwrap();
    let err = metrics
        .register("app_x", "X again", Counter::<u64>::default())
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::AlreadyExists, "{err}");
    for bad in [
        "",
        "9lives",
        "app-x",
        "app x",
        "app_\u{e9}",
        "room619_requests",
    ] {
        let err = metrics
            .register(bad, "Bad", Counter::<u64>::default())
            .unwrap_err();
        assert_eq!(
            err.kind(),
            crate::ErrorKind::InvalidArgument,
            "{bad}: {err}"
        );
    }
    first.inc();
    let text = metrics.render();
    assert_eq!(
        text.matches("# TYPE app_x_total counter").count(),
        1,
        "{text}"
    );
    assert!(text.contains("app_x_total 1\n"), "{text}");
}

#[test]
fn server_calls_are_counted_by_code_and_timed() {
    let metrics = Metrics::new("n");
    let route = RpcRouteLabels {
        system: "grpc",
        service: Arc::from("pkg.Svc"),
        method: Arc::from("Get"),
    };
    let kept = super::kept::KeptMetrics::default();
    metrics.server().grpc_started(&route, &kept);
    metrics
        .server()
        .grpc_finished(&route, &kept, 5, Duration::from_millis(3));
    let text = metrics.render();
    assert!(
        text.contains(
            "rpc_server_requests_total{rpc_system=\"grpc\",rpc_service=\"pkg.Svc\",rpc_method=\"Get\",rpc_grpc_status_code=\"5\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("rpc_server_call_duration_seconds_count{"),
        "{text}"
    );
    assert!(
        text.contains("rpc_server_active_requests{rpc_system=\"grpc\",rpc_service=\"pkg.Svc\",rpc_method=\"Get\"} 0"),
        "{text}"
    );
}

#[test]
fn reloads_and_rate_limits_are_counted() {
    let metrics = Metrics::new("n");
    metrics.record_config_reload(true);
    metrics.record_config_reload(false);
    metrics.record_rate_limited("orders");
    let text = metrics.render();
    assert!(
        text.contains("room619_config_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("room619_config_reloads_total{result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("room619_rate_limited_requests_total{limiter=\"orders\"} 1"),
        "{text}"
    );
    assert!(text.contains("room619_build_info{version=\""), "{text}");
}

#[tokio::test]
async fn bulkhead_rejections_are_counted() {
    use tower::{Layer as _, Service as _, ServiceExt as _};

    use crate::resilience::bulkhead::{BulkheadLayer, BulkheadPolicy};

    let metrics = Metrics::new("n");
    let policy = BulkheadPolicy {
        max_concurrent: 1,
        max_queued: 0,
        ..BulkheadPolicy::default()
    };
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let held = Arc::new(tokio::sync::Mutex::new(Some(held)));
    let backend = tower::service_fn(move |(): ()| {
        let held = Arc::clone(&held);
        async move {
            if let Some(held) = held.lock().await.take() {
                held.await.unwrap();
            }
            Ok::<_, crate::error::BoxError>(())
        }
    });
    let mut bulkhead = BulkheadLayer::new("users", policy)
        .observed(Some(&metrics))
        .layer(backend);
    let first = bulkhead.ready().await.unwrap().call(());
    let first = tokio::spawn(first);
    tokio::task::yield_now().await;
    let second = bulkhead.ready().await.unwrap().call(()).await;
    assert!(second.is_err(), "the full bulkhead refuses at once");
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    let text = metrics.render();
    assert!(
        text.contains("room619_bulkhead_rejected_total{peer_service=\"users\"} 1"),
        "{text}"
    );
}
