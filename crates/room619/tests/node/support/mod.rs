#![cfg(test)]
//! Shared helpers for the integration tests: a real node on 127.0.0.1:0 with a
//! test echo service, and real clients.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use axum::{
    body::Bytes,
    extract::Query,
    routing::{get, post},
};
use room619::{
    RunningNode, ServiceBuilder,
    config::{Config, ConfigLoader},
    service::BuiltService,
};
use shop_proto::echo::v1::{
    EchoRequest, EchoResponse,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, transport::Channel};

/// A configuration for tests: port 0, short timeouts, plus `extra` TOML.
pub fn config(extra: &str) -> Config {
    let toml = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\nname = \"test-node\"\ndrain_timeout = \"5s\"\n{extra}"
    );
    ConfigLoader::new()
        .toml_str(toml)
        .without_env()
        .load()
        .unwrap()
}

/// Starts a node with the test echo service and `config`.
pub async fn start(config: Config) -> RunningNode {
    start_with(config, echo_service()).await
}

/// Starts a node hosting `service`.
pub async fn start_with(config: Config, service: BuiltService) -> RunningNode {
    room619::Node::builder()
        .config(config)
        .service(service)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// The test echo service: gRPC `shop.echo.v1.Echo`, `POST /echo` (returns the
/// body), `GET /slow?ms=N` (answers after N ms).
pub fn echo_service() -> BuiltService {
    echo_builder().build().unwrap()
}

/// The builder of [`echo_service`], to add hooks or checks to.
pub fn echo_builder() -> ServiceBuilder {
    ServiceBuilder::new("echo", "1.0.0")
        .unwrap()
        .grpc(EchoServer::new(TestEcho))
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/slow", get(slow))
}

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(Query(query): Query<SlowQuery>) -> String {
    tokio::time::sleep(Duration::from_millis(query.ms)).await;
    format!("slept {} ms", query.ms)
}

#[derive(Clone, Copy)]
struct TestEcho;

#[tonic::async_trait]
impl Echo for TestEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let node = request
            .extensions()
            .get::<room619::ServiceContext>()
            .map(|ctx| ctx.node_name().to_owned())
            .unwrap_or_default();
        let request = request.into_inner();
        tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        Ok(Response::new(EchoResponse {
            message: request.message,
            node,
            payload: request.payload,
        }))
    }

    type EchoStreamStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

    async fn echo_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        let request = request.into_inner();
        let items = (0..request.repeat).map(move |_| {
            Ok(EchoResponse {
                message: request.message.clone(),
                node: String::new(),
                payload: request.payload.clone(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// A gRPC channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An echo client with no message size limits of its own.
pub async fn echo_client(addr: SocketAddr) -> EchoClient<Channel> {
    EchoClient::new(channel(addr).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// An HTTP/1.1 client.
pub fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

/// An HTTP/2 cleartext (h2c, prior knowledge) client.
pub fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// Reads a problem+json answer, checking its content type and status field.
pub async fn problem(response: reqwest::Response) -> serde_json::Value {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    body
}
