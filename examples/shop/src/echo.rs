//! The echo service: the smallest room619 service, over gRPC and REST.
//!
//! - gRPC `shop.echo.v1.Echo/Echo` and `EchoStream`;
//! - REST `POST /v1/echo` with `{"message": "...", "delay_ms": 0}`.

use std::{pin::Pin, time::Duration};

use axum::{Extension, Json, routing::post};
use room619::{Error, ServiceBuilder, ServiceContext, service::BuiltService};
use serde::{Deserialize, Serialize};
use shop_proto::echo::v1::{
    EchoRequest, EchoResponse,
    echo_server::{Echo, EchoServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The longest delay a caller may ask for.
const MAX_DELAY_MS: u32 = 60_000;
/// The most messages a stream may repeat.
const MAX_REPEAT: u32 = 1_000;

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
}

/// The REST request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoBody {
    message: String,
    #[serde(default)]
    delay_ms: u32,
}

/// The REST answer.
#[derive(Debug, Serialize)]
struct EchoAnswer {
    message: String,
    node: String,
}

async fn echo_http(
    Extension(ctx): Extension<ServiceContext>,
    Json(body): Json<EchoBody>,
) -> Result<Json<EchoAnswer>, Error> {
    pause(body.delay_ms).await?;
    Ok(Json(EchoAnswer {
        message: body.message,
        node: ctx.node_name().to_owned(),
    }))
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
