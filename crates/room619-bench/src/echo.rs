//! The echo endpoints every target serves, written once so that the bare
//! servers and the room619 node run exactly the same handler code.
//!
//! - gRPC: `shop.echo.v1.Echo/Echo` answers with the request's message and
//!   payload ([`BenchEcho`]); the streaming calls are not benchmarked and
//!   answer `UNIMPLEMENTED`.
//! - REST: `POST /v1/echo` takes and returns `{"message": "..."}`
//!   ([`echo_json`]).

use std::pin::Pin;

use axum::Json;
use serde::{Deserialize, Serialize};
use shop_proto::echo::v1::{EchoRequest, EchoResponse, echo_server::Echo};
use tonic::{Request, Response, Status, Streaming, codegen::tokio_stream::Stream};

/// The REST path of the echo endpoint.
pub const REST_PATH: &str = "/v1/echo";

/// The body of `POST /v1/echo`, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoMessage {
    /// The text echoed back.
    pub message: String,
}

/// The REST handler: returns the JSON body it was sent.
pub async fn echo_json(Json(body): Json<EchoMessage>) -> Json<EchoMessage> {
    Json(body)
}

/// The gRPC echo service: unary `Echo` returns the message and payload it was
/// sent, with an empty `node`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BenchEcho;

/// The stream type of the streaming calls (never produced: they are
/// unimplemented here).
type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for BenchEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(EchoResponse {
            message: request.message,
            node: String::new(),
            payload: request.payload,
        }))
    }

    type EchoStreamStream = EchoStream;

    async fn echo_stream(
        &self,
        _request: Request<EchoRequest>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        Err(unary_only())
    }

    async fn echo_collect(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(unary_only())
    }

    type EchoChatStream = EchoStream;

    async fn echo_chat(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::EchoChatStream>, Status> {
        Err(unary_only())
    }
}

/// The answer of every streaming call.
fn unary_only() -> Status {
    Status::unimplemented("the benchmark echo serves unary calls only")
}
