use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;

use super::{Metrics, labels::RpcRouteLabels};

#[test]
fn counters_are_named_with_total_in_prometheus_text() {
    let metrics = Metrics::new("n");
    let counter: Counter = Counter::default();
    metrics.register("app_things", "Things", counter.clone());
    counter.inc_by(3);
    let text = metrics.render();
    assert!(text.contains("# HELP app_things_total Things.\n"), "{text}");
    assert!(text.contains("# TYPE app_things_total counter\n"), "{text}");
    assert!(text.contains("app_things_total 3\n"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(metrics.render_openmetrics().ends_with("# EOF\n"));
}

#[test]
fn server_calls_are_counted_by_code_and_timed() {
    let metrics = Metrics::new("n");
    let route = RpcRouteLabels {
        system: "grpc",
        service: Arc::from("pkg.Svc"),
        method: Arc::from("Get"),
    };
    metrics.server().grpc_started(&route);
    metrics
        .server()
        .grpc_finished(&route, 5, Duration::from_millis(3));
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
