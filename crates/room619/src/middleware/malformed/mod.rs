//! [`MalformedMessageLayer`]: a gRPC request whose message does not decode
//! answers `INVALID_ARGUMENT` (the caller sent bad input) instead of tonic's
//! `INTERNAL`, so clients and dashboards blame the right side. The status
//! message names the decode failure, never the bytes.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The start of tonic's message for an undecodable protobuf message, as
/// sent (percent-encoded).
const DECODE_FAILURE: &[u8] = b"failed%20to%20decode%20Protobuf%20message";

/// Rewrites tonic's `INTERNAL` decode failures to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MalformedMessageLayer {
    _private: (),
}

impl MalformedMessageLayer {
    /// The layer; it has no settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for MalformedMessageLayer {
    type Service = MalformedMessage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MalformedMessage { inner }
    }
}

/// The service of [`MalformedMessageLayer`].
#[derive(Debug, Clone)]
pub struct MalformedMessage<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MalformedMessage<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`MalformedMessage`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        let headers = response.headers_mut();
        let internal = headers.get("grpc-status").is_some_and(|s| s == "13");
        let decode_failure = headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().starts_with(DECODE_FAILURE));
        if internal && decode_failure {
            headers.insert("grpc-status", HeaderValue::from_static("3"));
        }
        Poll::Ready(Ok(response))
    }
}
