//! One request through gateway → service A (gRPC, another node) → service B
//! (HTTP, a third node) → a bus event consumed by service C makes spans of
//! one trace with the right parent links, exported over OTLP to a receiver
//! running in the test; the JSON log lines inside carry the same trace id.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Extension, Json, http::StatusCode, routing::get, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use room619::{
    ServiceBuilder, ServiceContext,
    bus::{Event, Json as BusJson},
    config::{Config, InstanceConfig},
    observability::{TelemetryConfig, logging, tracing::Telemetry},
    rpc::client::RpcChannel,
};
use serde_json::{Value as JsonValue, json};
use shop_proto::echo::v1::{EchoRequest, EchoResponse, echo_client::EchoClient};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _};

use crate::support::{
    self,
    logs::Captured,
    unary_echo::{self, UnaryEcho},
};

/// The OTLP trace receiver: keeps every span exported to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Service A: answers `Echo` by calling service B over HTTP.
struct ServiceA;

impl UnaryEcho for ServiceA {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let ctx = request
            .extensions()
            .get::<ServiceContext>()
            .cloned()
            .unwrap();
        tracing::info!(step = "a", "service A calls service B");
        let b = ctx.http_client("svc-b", "^1").unwrap();
        let answer: JsonValue = b
            .post_json("/work", &json!({ "order": 42 }))
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(EchoResponse {
            message: answer["ok"].to_string(),
            ..EchoResponse::default()
        }))
    }
}

async fn gateway(Extension(ctx): Extension<ServiceContext>) -> Result<String, StatusCode> {
    tracing::info!(step = "gateway", "the gateway calls service A");
    let mut a = ctx
        .client::<EchoClient<RpcChannel>>("svc-a", "^1")
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let reply = a
        .echo(EchoRequest::default())
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(reply.into_inner().message)
}

async fn work(
    Extension(ctx): Extension<ServiceContext>,
    Json(order): Json<JsonValue>,
) -> Result<Json<JsonValue>, StatusCode> {
    tracing::info!(step = "b", "service B publishes an event");
    ctx.bus()
        .publish("work.done", &BusJson(order))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(json!({ "ok": true })))
}

fn node_config(name: &str, instances: &[(&str, std::net::SocketAddr)]) -> Config {
    let mut config = support::config("");
    config.node.name = name.to_owned();
    config.discovery.instances = instances
        .iter()
        .map(|(service, address)| InstanceConfig {
            name: (*service).to_owned(),
            version: "1.0.0".to_owned(),
            address: address.to_string(),
        })
        .collect();
    config
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        use std::fmt::Write as _;
        write!(out, "{byte:02x}").unwrap();
        out
    })
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn one<'a>(spans: &'a [Span], name: &str, kind: SpanKind) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|span| span.name == name && span.kind == kind as i32)
        .collect();
    let names: Vec<(&str, i32, String, String, String)> = spans
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.kind,
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id),
            )
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind:?} span `{name}` in {names:?}");
    found[0]
}

#[tokio::test]
async fn one_request_makes_one_trace_with_parent_links_and_logs_carry_its_id() {
    // The OTLP receiver, in this test.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Spans of this test's (single-threaded) runtime go to it; logs are JSON.
    let telemetry = Telemetry::new(
        &TelemetryConfig {
            otlp_endpoint: Some(format!("http://{collector}")),
            ..TelemetryConfig::default()
        },
        "trace-test",
    )
    .unwrap()
    .unwrap();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(telemetry.layer())
        .with(logging::json_layer(move || writer.clone()));
    // With a single scoped dispatcher registered, tracing computes a
    // callsite's interest with the default of whichever thread hits it first
    // (a parallel test's: none, so "never"). A second registered dispatcher
    // makes it ask every dispatcher instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _default = tracing::subscriber::set_default(subscriber);

    let (nodes, mut events) = start_chain().await;
    let response = support::http1()
        .get(format!("http://{}/checkout", nodes[0].local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.unwrap(), "true");
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("service C consumes within 5 s")
        .unwrap();
    assert_eq!(event, json!({ "order": 42 }));

    let spans = exported(&telemetry, &receiver).await;
    let trace_id = assert_one_trace(&spans);
    assert_logs_carry(&logs, &trace_id);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Starts the gateway's node, A's, and the node of B and C (sharing its
/// in-memory bus); the gateway's node first.
async fn start_chain() -> (
    [room619::RunningNode; 3],
    mpsc::UnboundedReceiver<JsonValue>,
) {
    let (done, events) = mpsc::unbounded_channel();
    let b = ServiceBuilder::new("svc-b", "1.0.0")
        .unwrap()
        .route("/work", post(work))
        .build()
        .unwrap();
    let c = ServiceBuilder::new("svc-c", "1.0.0")
        .unwrap()
        .subscribe(
            "work.done",
            move |_ctx, event: Event<BusJson<JsonValue>>| {
                let done = done.clone();
                async move {
                    tracing::info!(step = "c", "service C consumed the event");
                    done.send(event.into_body().0).unwrap();
                    Ok(())
                }
            },
        )
        .build()
        .unwrap();
    let node_bc = support::start_all(node_config("node-bc", &[]), [b, c]).await;
    let a = ServiceBuilder::new("svc-a", "1.0.0")
        .unwrap()
        .grpc(unary_echo::server(ServiceA))
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .build()
        .unwrap();
    let node_a =
        support::start_with(node_config("node-a", &[("svc-b", node_bc.local_addr())]), a).await;
    let gateway_service = ServiceBuilder::new("gateway", "1.0.0")
        .unwrap()
        .route("/checkout", get(gateway))
        .build()
        .unwrap();
    let node_gateway = support::start_with(
        node_config("node-gateway", &[("svc-a", node_a.local_addr())]),
        gateway_service,
    )
    .await;
    ([node_gateway, node_a, node_bc], events)
}

/// The spans of one request, each the parent of the next.
const CHAIN: [(&str, SpanKind); 6] = [
    ("GET /checkout", SpanKind::Server),
    ("shop.echo.v1.Echo/Echo", SpanKind::Client),
    ("shop.echo.v1.Echo/Echo", SpanKind::Server),
    ("POST", SpanKind::Client),
    ("POST /work", SpanKind::Server),
    ("process work.done", SpanKind::Consumer),
];

/// Exports until all six spans arrived (some close after the answer).
async fn exported(telemetry: &Telemetry, receiver: &Receiver) -> Vec<Span> {
    let mut spans = Vec::new();
    for _ in 0..50 {
        let flushing = telemetry.clone();
        tokio::task::spawn_blocking(move || flushing.flush())
            .await
            .unwrap()
            .unwrap();
        spans = receiver.spans.lock().unwrap().clone();
        let arrived = CHAIN.iter().all(|(name, kind)| {
            spans
                .iter()
                .any(|span| span.name == *name && span.kind == *kind as i32)
        });
        if arrived {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spans
}

/// Checks the chain of spans and returns the trace id (hex).
fn assert_one_trace(spans: &[Span]) -> String {
    let root = one(spans, "GET /checkout", SpanKind::Server);
    let rpc_client = one(spans, "shop.echo.v1.Echo/Echo", SpanKind::Client);
    let rpc_server = one(spans, "shop.echo.v1.Echo/Echo", SpanKind::Server);
    let http_client = one(spans, "POST", SpanKind::Client);
    let http_server = one(spans, "POST /work", SpanKind::Server);
    let consumer = one(spans, "process work.done", SpanKind::Consumer);
    assert!(
        root.parent_span_id.is_empty(),
        "the gateway's span is the root"
    );
    let chain = [
        root,
        rpc_client,
        rpc_server,
        http_client,
        http_server,
        consumer,
    ];
    for span in chain {
        assert_eq!(span.trace_id, root.trace_id, "one trace id: {span:#?}");
    }
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent_span_id, pair[0].span_id,
            "`{}` is a child of `{}`",
            pair[1].name, pair[0].name
        );
    }
    assert_eq!(
        attribute(rpc_server, "rpc.system"),
        Some(&Value::StringValue("grpc".into()))
    );
    assert_eq!(
        attribute(rpc_server, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );
    assert_eq!(
        attribute(http_server, "http.route"),
        Some(&Value::StringValue("/work".into()))
    );
    assert_eq!(
        attribute(http_server, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(
        attribute(http_server, "url.scheme"),
        Some(&Value::StringValue("http".into()))
    );
    for span in chain {
        assert_eq!(attribute(span, "error.type"), None, "{span:#?}");
    }

    hex(&root.trace_id)
}

/// Every log line is JSON; those inside the request carry its trace id.
fn assert_logs_carry(logs: &Captured, trace_id: &str) {
    let text = logs.text();
    let lines: Vec<JsonValue> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let mut steps: Vec<&str> = Vec::new();
    for line in &lines {
        let Some(step) = line["step"].as_str() else {
            continue;
        };
        steps.push(step);
        assert_eq!(line["trace_id"], trace_id, "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
        assert!(
            line["service"].is_string() && line["method"].is_string(),
            "{line}"
        );
        // A bus message has no request id.
        assert_eq!(line["request_id"].is_string(), step != "c", "{line}");
    }
    steps.sort_unstable();
    assert_eq!(steps, ["a", "b", "c", "gateway"]);
}
