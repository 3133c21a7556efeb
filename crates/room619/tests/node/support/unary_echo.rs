//! An echo service that answers unary calls with a test's own handler and
//! refuses the streaming ones, for tests that only need `echo`.

use std::{future::Future, pin::Pin};

use shop_proto::echo::v1::{
    EchoRequest, EchoResponse,
    echo_server::{Echo, EchoServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The unary `echo` call of a test's service.
pub trait UnaryEcho: Send + Sync + 'static {
    /// Answers one `echo` call.
    fn echo(
        &self,
        request: Request<EchoRequest>,
    ) -> impl Future<Output = Result<Response<EchoResponse>, Status>> + Send;
}

/// Serves a [`UnaryEcho`] as the echo service; streaming calls are `UNIMPLEMENTED`.
pub fn server<T: UnaryEcho>(handler: T) -> EchoServer<Unary<T>> {
    EchoServer::new(Unary(handler))
}

/// The echo service around a [`UnaryEcho`].
pub struct Unary<T>(T);

type Never = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<T: UnaryEcho> Echo for Unary<T> {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.0.echo(request).await
    }

    type EchoStreamStream = Never;

    async fn echo_stream(&self, _: Request<EchoRequest>) -> Result<Response<Never>, Status> {
        Err(Status::unimplemented("unary only"))
    }

    async fn echo_collect(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented("unary only"))
    }

    type EchoChatStream = Never;

    async fn echo_chat(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Never>, Status> {
        Err(Status::unimplemented("unary only"))
    }
}
