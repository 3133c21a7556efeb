#![cfg(test)]
//! Shared helpers for the integration tests: a real node on 127.0.0.1:0 with a
//! test echo service, and real clients.

pub mod abuse;
pub mod fault_proxy;
pub mod jwt;
pub mod logs;
#[cfg(feature = "nats")]
pub mod nats;
pub mod raw;
pub mod unary_echo;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::Query,
    routing::{get, post},
};
use futures_util::StreamExt as _;
use room619::{
    RunningNode, ServiceBuilder,
    config::{Config, ConfigLoader},
    rpc::client::{Colocated, PeerAddr},
    service::BuiltService,
};
use shop_proto::echo::v1::{
    EchoRequest, EchoResponse,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming, transport::Channel};

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
pub fn start(config: Config) -> impl Future<Output = RunningNode> {
    start_with(config, echo_service())
}

/// Starts a node hosting `service`.
pub fn start_with(config: Config, service: BuiltService) -> impl Future<Output = RunningNode> {
    start_all(config, [service])
}

/// Starts a node hosting `services` (none: a caller).
pub fn start_all(
    config: Config,
    services: impl IntoIterator<Item = BuiltService>,
) -> impl Future<Output = RunningNode> {
    // Built before the future, which then holds only the node.
    let node = builder(config, services).build().unwrap();
    async move { node.start().await.unwrap() }
}

/// Starts a node hosting `services` with `config`, which must fail; the error.
pub fn start_fails(
    config: Config,
    services: impl IntoIterator<Item = BuiltService>,
) -> impl Future<Output = room619::Error> {
    let node = builder(config, services).build().unwrap();
    async move { node.start().await.unwrap_err() }
}

fn builder(
    config: Config,
    services: impl IntoIterator<Item = BuiltService>,
) -> room619::NodeBuilder {
    services.into_iter().fold(
        room619::Node::builder().config(config),
        room619::NodeBuilder::service,
    )
}

/// The test echo service: gRPC `shop.echo.v1.Echo`, `POST /echo` (returns the
/// body), `GET /slow?ms=N` (answers after N ms), `GET /whoami` (how the
/// request arrived).
pub fn echo_service() -> BuiltService {
    echo_builder().build().unwrap()
}

/// The builder of [`echo_service`], to add hooks or checks to.
pub fn echo_builder() -> ServiceBuilder {
    EchoFixture::default().builder()
}

/// What the test echo service counts, shared with the test.
#[derive(Clone, Default)]
pub struct EchoFixture {
    /// Unary `Echo` calls that reached the handler.
    pub calls: Arc<AtomicU64>,
    /// Messages the server-streaming handler has produced.
    pub produced: Arc<AtomicU64>,
}

impl EchoFixture {
    /// The echo service's builder, counting into this fixture.
    pub fn builder(&self) -> ServiceBuilder {
        ServiceBuilder::new("echo", "1.0.0")
            .unwrap()
            .grpc(EchoServer::new(TestEcho {
                fixture: self.clone(),
            }))
            .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
            .route("/echo", post(|body: Bytes| async move { body }))
            .route("/slow", get(slow))
            .route("/whoami", get(whoami))
            .route("/me", get(me))
            .route("/panic", get(panics))
            .route("/nothing", post(|| async { http::StatusCode::NO_CONTENT }))
    }
}

/// `GET /panic`: panics.
async fn panics() -> &'static str {
    panic!("the /panic route panics")
}

/// `GET /me`: the principal's subject (`401` without one).
async fn me(principal: room619::middleware::auth::Principal) -> String {
    principal.subject().to_owned()
}

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(Query(query): Query<SlowQuery>) -> String {
    tokio::time::sleep(Duration::from_millis(query.ms)).await;
    format!("slept {} ms", query.ms)
}

async fn whoami(request: axum::extract::Request) -> axum::Json<serde_json::Value> {
    let extensions = request.extensions();
    let node = extensions
        .get::<room619::ServiceContext>()
        .map(|ctx| ctx.node_name().to_owned());
    let timeout = request
        .headers()
        .get("x-request-timeout")
        .map(|v| v.to_str().unwrap().to_owned());
    axum::Json(serde_json::json!({
        "transport": transport(extensions),
        "node": node,
        "timeout": timeout,
    }))
}

/// How a request arrived: `in-process` or `remote`.
pub fn transport(extensions: &http::Extensions) -> &'static str {
    match (
        extensions.get::<Colocated>().is_some(),
        extensions.get::<PeerAddr>().is_some(),
    ) {
        (true, false) => "in-process",
        (false, true) => "remote",
        other => panic!("a request is either colocated or has a peer: {other:?}"),
    }
}

#[derive(Clone)]
struct TestEcho {
    fixture: EchoFixture,
}

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn ctx_of<T>(request: &Request<T>) -> Option<room619::ServiceContext> {
    request
        .extensions()
        .get::<room619::ServiceContext>()
        .cloned()
}

#[tonic::async_trait]
impl Echo for TestEcho {
    /// Echoes; answers with metadata `x-transport` and `x-received-timeout`
    /// (the `grpc-timeout` it was called with).
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.fixture.calls.fetch_add(1, Ordering::SeqCst);
        assert_ne!(request.get_ref().message, "panic", "asked to panic");
        let node = ctx_of(&request)
            .map(|ctx| ctx.node_name().to_owned())
            .unwrap_or_default();
        let transport = transport(request.extensions());
        let received = request.metadata().get("grpc-timeout").cloned();
        let principal = room619::middleware::auth::Principal::of(request.extensions())
            .map(|principal| principal.subject().to_owned());
        let request = request.into_inner();
        tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        let mut response = Response::new(EchoResponse {
            message: request.message,
            node,
            payload: request.payload,
        });
        response
            .metadata_mut()
            .insert("x-transport", transport.parse().unwrap());
        if let Some(principal) = principal {
            response
                .metadata_mut()
                .insert("x-principal", principal.parse().unwrap());
        }
        if let Some(received) = received {
            response
                .metadata_mut()
                .insert("x-received-timeout", received);
        }
        Ok(response)
    }

    type EchoStreamStream = EchoStream;

    /// `repeat` messages, or endless ones (until shutdown) when `repeat` is
    /// `u32::MAX`; each counted in `fixture.produced` as it is made.
    async fn echo_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        let ctx = ctx_of(&request).unwrap();
        let request = request.into_inner();
        let produced = Arc::clone(&self.fixture.produced);
        let limit = if request.repeat == u32::MAX {
            u64::MAX
        } else {
            u64::from(request.repeat)
        };
        let items = futures_util::stream::iter(0..limit).map(move |index| {
            assert!(
                index == 0 || request.message != "panic",
                "asked to panic after the first message"
            );
            produced.fetch_add(1, Ordering::SeqCst);
            Ok(EchoResponse {
                message: request.message.clone(),
                node: String::new(),
                payload: request.payload.clone(),
            })
        });
        let shutdown = async move { ctx.shutdown_signal().await };
        Ok(Response::new(Box::pin(items.take_until(shutdown))))
    }

    async fn echo_collect(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut stream = request.into_inner();
        let mut words = Vec::new();
        while let Some(message) = stream.message().await? {
            words.push(message.message);
        }
        Ok(Response::new(EchoResponse {
            message: words.join(" "),
            ..EchoResponse::default()
        }))
    }

    type EchoChatStream = EchoStream;

    async fn echo_chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::EchoChatStream>, Status> {
        let answers = request.into_inner().map(|message| {
            message.map(|message| EchoResponse {
                message: message.message.to_uppercase(),
                ..EchoResponse::default()
            })
        });
        Ok(Response::new(Box::pin(answers)))
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

/// The `/metrics` text of the node at `addr`.
pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    get_text(addr, "/metrics").await
}

/// The body of `GET path` from the node at `addr`, as text.
pub async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    http1()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

/// A node named `name` hosting `service`, whose discovery lists `instances`
/// as `(service name, version, address)`.
pub async fn start_named(
    name: &str,
    instances: &[(&str, &str, SocketAddr)],
    service: Option<BuiltService>,
) -> RunningNode {
    let mut config = config("");
    config.node.name = name.to_owned();
    config.discovery.instances = instances
        .iter()
        .map(
            |(service, version, address)| room619::config::InstanceConfig {
                name: (*service).to_owned(),
                version: (*version).to_owned(),
                address: address.to_string(),
            },
        )
        .collect();
    start_all(config, service).await
}

/// A node with `config` hosting no service (a caller).
#[cfg(feature = "nats")]
pub async fn start_named_with_config(config: Config) -> RunningNode {
    start_all(config, []).await
}
