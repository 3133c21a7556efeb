//! A streamed answer is made as it is sent, after its handler returned: a
//! gRPC server stream's messages, an HTTP body made from a stream. What the
//! stream logs as it runs carries its request's id, and the calls it makes
//! continue its request's trace.

use std::pin::Pin;

use axum::{body::Body, routing::get};
use futures_util::StreamExt as _;
use room619::{
    ServiceBuilder, ServiceContext, observability::logging, rpc::client::HttpClient,
    service::BuiltService,
};
use serde_json::Value;
use shop_proto::echo::v1::{
    EchoRequest, EchoResponse,
    echo_server::{Echo, EchoServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _};

use crate::support::{self, logs::Captured};

/// JSON log lines, captured for as long as this is kept.
struct Logs {
    captured: Captured,
    _default: tracing::subscriber::DefaultGuard,
    _second: tracing::Dispatch,
}

impl Logs {
    /// Captures this thread's lines (the node runs on the test's one
    /// thread), as `logging::init` writes them.
    fn capture() -> Self {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(logging::json_layer(captured.clone()));
        // With a single scoped dispatcher registered, tracing computes a
        // callsite's interest with the default of whichever thread hits it
        // first (a parallel test's: none, so "never"). A second registered
        // dispatcher makes it ask every dispatcher instead.
        let second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        Self {
            captured,
            _default: tracing::subscriber::set_default(subscriber),
            _second: second,
        }
    }

    /// The lines whose message is `message`.
    fn saying(&self, message: &str) -> Vec<Value> {
        self.captured
            .text()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|line| line["message"] == message)
            .collect()
    }
}

/// Echo whose server stream, for each of its `repeat` messages, logs
/// `stream item` and asks the `peer` service for the `traceparent` it
/// receives, which the message carries (empty: none).
struct Streamer;

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Streamer {
    async fn echo(&self, _: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    type EchoStreamStream = EchoStream;

    async fn echo_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoStream>, Status> {
        let ctx = request
            .extensions()
            .get::<ServiceContext>()
            .cloned()
            .unwrap();
        let peer = ctx.http_client("peer", "^1").unwrap();
        let items = futures_util::stream::iter(0..request.into_inner().repeat).then(move |item| {
            let peer = peer.clone();
            async move {
                tracing::info!(item, "stream item");
                Ok(EchoResponse {
                    message: traceparent_seen_by(&peer).await,
                    ..EchoResponse::default()
                })
            }
        });
        Ok(Response::new(Box::pin(items)))
    }

    async fn echo_collect(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented("server streams only"))
    }

    type EchoChatStream = EchoStream;

    async fn echo_chat(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoStream>, Status> {
        Err(Status::unimplemented("server streams only"))
    }
}

/// The `traceparent` that `peer` received with a call (empty: none).
async fn traceparent_seen_by(peer: &HttpClient) -> String {
    peer.get_json::<Option<String>>("/traceparent")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// `streamer` (gRPC `Echo` with the stream above; `GET /stream`, a body
/// made from a stream whose items log `body item`) and `peer` (`GET
/// /traceparent`: the `traceparent` header it was called with).
fn services() -> [BuiltService; 2] {
    let streamer = ServiceBuilder::new("streamer", "1.0.0")
        .unwrap()
        .grpc(EchoServer::new(Streamer))
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .route(
            "/stream",
            get(|| async {
                Body::from_stream(futures_util::stream::iter(0..3_u32).map(|item| {
                    tracing::info!(item, "body item");
                    Ok::<_, std::io::Error>(format!("{item}\n"))
                }))
            }),
        )
        .build()
        .unwrap();
    let peer = ServiceBuilder::new("peer", "1.0.0")
        .unwrap()
        .route(
            "/traceparent",
            get(|headers: http::HeaderMap| async move {
                axum::Json(
                    headers
                        .get("traceparent")
                        .map(|value| value.to_str().unwrap().to_owned()),
                )
            }),
        )
        .build()
        .unwrap();
    [streamer, peer]
}

/// Calls `EchoStream` for three messages with `metadata`; their messages.
async fn stream_of_three(
    addr: std::net::SocketAddr,
    metadata: &[(&'static str, &str)],
) -> Vec<String> {
    let mut request = Request::new(EchoRequest {
        repeat: 3,
        ..EchoRequest::default()
    });
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    let mut client = support::echo_client(addr).await;
    let mut stream = client.echo_stream(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message.message);
    }
    messages
}

#[tokio::test(flavor = "current_thread")]
async fn lines_logged_by_a_grpc_server_stream_carry_its_request_id() {
    let logs = Logs::capture();
    let node = support::start_all(support::config(""), services()).await;

    let messages = stream_of_three(node.local_addr(), &[("x-request-id", "grpc-stream-1")]).await;
    assert_eq!(messages.len(), 3);

    let lines = logs.saying("stream item");
    assert_eq!(lines.len(), 3, "{}", logs.captured.text());
    for line in &lines {
        assert_eq!(line["request_id"], "grpc-stream-1", "{line}");
        assert_eq!(line["service"], "streamer", "{line}");
        assert_eq!(line["method"], "shop.echo.v1.Echo/EchoStream", "{line}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn lines_logged_by_a_streamed_http_body_carry_its_request_id() {
    let logs = Logs::capture();
    let node = support::start_all(support::config(""), services()).await;

    let response = support::http1()
        .get(format!("http://{}/stream", node.local_addr()))
        .header("x-request-id", "http-stream-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "0\n1\n2\n");

    let lines = logs.saying("body item");
    assert_eq!(lines.len(), 3, "{}", logs.captured.text());
    for line in &lines {
        assert_eq!(line["request_id"], "http-stream-1", "{line}");
        assert_eq!(line["service"], "streamer", "{line}");
    }
    node.shutdown().await.unwrap();
}

/// With no OpenTelemetry layer (no exporter), the caller's trace still goes
/// on through the stream: its lines and its calls carry the trace id.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "current_thread")]
async fn calls_made_by_a_grpc_server_stream_continue_its_trace() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let logs = Logs::capture();
    let node = support::start_all(support::config(""), services()).await;

    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let messages =
        stream_of_three(node.local_addr(), &[("traceparent", traceparent.as_str())]).await;
    assert_eq!(messages.len(), 3);
    for seen in &messages {
        assert!(
            seen.starts_with(&format!("00-{TRACE_ID}-")),
            "a call made by the stream continues the caller's trace: {seen:?}"
        );
    }

    let lines = logs.saying("stream item");
    assert_eq!(lines.len(), 3, "{}", logs.captured.text());
    for line in &lines {
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    }
    node.shutdown().await.unwrap();
}
