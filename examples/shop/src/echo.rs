//! The echo service: the smallest room619 service, over gRPC and REST.
//!
//! - gRPC `shop.echo.v1.Echo`: `Echo`, `EchoStream` (server streaming),
//!   `EchoCollect` (client streaming) and `EchoChat` (bidirectional);
//! - REST `POST /v1/echo` with an `EchoRequest` as JSON
//!   (`{"message": "...", "delay_ms": 0}`) or protobuf, answered in the format
//!   the `Accept` header asks for.
//!
//! It is the demo's hello-world and the load harness's target, public and
//! unlimited; the deployment manifests do not host it. A caller that goes
//! silent in `EchoCollect` or `EchoChat` for [`IDLE_TIMEOUT`] is answered
//! `DEADLINE_EXCEEDED`, so idle streams do not hold the node's request slots.

use std::{pin::Pin, time::Duration};

use axum::{Extension, routing::post};
use futures_util::StreamExt as _;
use room619::{
    Error, ServiceBuilder, ServiceContext,
    rpc::codec::{Accepted, Decoded, Encoded},
    service::BuiltService,
};
use shop_proto::echo::v1::{
    EchoRequest, EchoResponse,
    echo_server::{Echo, EchoServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The longest delay a caller may ask for.
const MAX_DELAY_MS: u32 = 60_000;
/// How long a client stream may go without a message.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most messages a stream may repeat.
const MAX_REPEAT: u32 = 1_000;

/// The most `EchoCollect` keeps of one call's messages, in bytes: its
/// answer must fit in one gRPC message (4 MiB, tonic's default limit).
const MAX_COLLECTED_BYTES: usize = 4 * 1024 * 1024 - 1024;

/// Builds the echo service.
///
/// # Errors
///
/// Only if the service definition itself is invalid (a bug).
pub fn service() -> room619::Result<BuiltService> {
    ServiceBuilder::new("echo", "1.0.0")?
        .description("Echoes messages back over gRPC and REST")
        .grpc(EchoServer::new(EchoService))
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .route("/v1/echo", post(echo_http))
        // The demo's hello-world stays open when `[auth]` is on.
        .public("/shop.echo.v1.Echo/{*method}")
        .public("/v1/echo")
        .build()
}

#[derive(Debug, Clone, Copy)]
struct EchoService;

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let node = node_name(request.extensions().get::<ServiceContext>());
        let request = request.into_inner();
        pause(request.delay_ms).await?;
        Ok(Response::new(EchoResponse {
            message: request.message,
            node,
            payload: request.payload,
        }))
    }

    type EchoStreamStream = EchoStream;

    async fn echo_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        let node = node_name(request.extensions().get::<ServiceContext>());
        let request = request.into_inner();
        if request.repeat > MAX_REPEAT {
            return Err(Error::invalid_argument(format!(
                "repeat must be at most {MAX_REPEAT} (got {})",
                request.repeat
            ))
            .into());
        }
        pause(request.delay_ms).await?;
        let items = (0..request.repeat).map(move |_| {
            Ok(EchoResponse {
                message: request.message.clone(),
                node: node.clone(),
                payload: request.payload.clone(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn echo_collect(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let node = node_name(request.extensions().get::<ServiceContext>());
        let mut stream = request.into_inner();
        let mut words = Vec::new();
        // The answer joins them: what it could not send (over tonic's 4 MiB
        // message limit) is refused as it arrives, not kept.
        let mut bytes = 0usize;
        while let Some(message) = tokio::time::timeout(IDLE_TIMEOUT, stream.message())
            .await
            .map_err(|_| idle())??
        {
            if words.len() == MAX_REPEAT as usize {
                return Err(Status::resource_exhausted(format!(
                    "at most {MAX_REPEAT} messages per call"
                )));
            }
            bytes = bytes.saturating_add(message.message.len() + 1);
            if bytes > MAX_COLLECTED_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "at most {MAX_COLLECTED_BYTES} bytes of messages per call"
                )));
            }
            words.push(message.message);
        }
        Ok(Response::new(EchoResponse {
            message: words.join(" "),
            node,
            payload: Vec::new(),
        }))
    }

    type EchoChatStream = EchoStream;

    async fn echo_chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::EchoChatStream>, Status> {
        let ctx = request.extensions().get::<ServiceContext>().cloned();
        let node = node_name(ctx.as_ref());
        // The first error (the caller's, or its silence) ends the stream.
        let messages = tokio_stream::StreamExt::timeout(request.into_inner(), IDLE_TIMEOUT);
        let answers = messages.map(move |message| {
            message.map_err(|_| idle())?.map(|message| EchoResponse {
                message: message.message,
                node: node.clone(),
                payload: message.payload,
            })
        });
        // The conversation ends when the caller stops or the node shuts down.
        let shutdown = async move {
            if let Some(ctx) = ctx {
                ctx.shutdown_signal().await;
            }
        };
        Ok(Response::new(Box::pin(answers.take_until(shutdown))))
    }
}

/// The end of a client stream silent for [`IDLE_TIMEOUT`].
fn idle() -> Status {
    Status::deadline_exceeded(format!(
        "no message for {}s; the stream is closed",
        IDLE_TIMEOUT.as_secs()
    ))
}

/// `POST /v1/echo`: the gRPC contract's messages over REST, JSON or protobuf.
async fn echo_http(
    Extension(ctx): Extension<ServiceContext>,
    Accepted(format): Accepted,
    Decoded(request): Decoded<EchoRequest>,
) -> Result<Encoded<EchoResponse>, Error> {
    pause(request.delay_ms).await?;
    Ok(Encoded::new(
        format,
        EchoResponse {
            message: request.message,
            node: ctx.node_name().to_owned(),
            payload: request.payload,
        },
    ))
}

async fn pause(delay_ms: u32) -> Result<(), Error> {
    if delay_ms > MAX_DELAY_MS {
        return Err(Error::invalid_argument(format!(
            "delay_ms must be at most {MAX_DELAY_MS} (got {delay_ms})"
        )));
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
    }
    Ok(())
}

fn node_name(ctx: Option<&ServiceContext>) -> String {
    ctx.map(|ctx| ctx.node_name().to_owned())
        .unwrap_or_default()
}
