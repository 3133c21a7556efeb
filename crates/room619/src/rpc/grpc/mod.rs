//! gRPC message size limits, as a tower layer for any gRPC server.
//!
//! [`MessageLimitLayer`] reads the 5-byte length prefix of every gRPC message
//! as it streams by, without buffering. A request message longer than the
//! decode limit fails the call with `RESOURCE_EXHAUSTED` before its body is
//! read; a response message longer than the encode limit is not sent and the
//! call ends with `RESOURCE_EXHAUSTED` trailers instead. A request message
//! that does not decode fails with `INVALID_ARGUMENT` (tonic says `INTERNAL`).
//!
//! ```
//! use room619::rpc::grpc::MessageLimitLayer;
//!
//! let layer = MessageLimitLayer::new(4 << 20, 4 << 20);
//! let router: axum::Router = axum::Router::new().layer(layer);
//! ```

mod body;
mod frame;
mod mount;
mod status;

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

pub(crate) use body::status_trailers;
pub use body::{Direction, LimitedMessages};
use http::{Request, Response};
pub(crate) use mount::GrpcLayers;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The header (or trailer) of a gRPC answer's status code.
pub(crate) const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
/// The `grpc-message` header (trailer).
pub(crate) const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// `UNKNOWN`: the status of an answer that ended without one.
pub(crate) const GRPC_UNKNOWN: i32 = 2;

/// The status code in `headers` (a trailers-only head, or trailers), if
/// they carry one that reads.
pub(crate) fn status_of(headers: &http::HeaderMap) -> Option<i32> {
    crate::rpc::find_header(headers, &GRPC_STATUS).and_then(|value| parse_code(value.as_bytes()))
}

/// A `grpc-status` value as a code: one to three decimal digits, nothing else.
pub(crate) fn parse_code(value: &[u8]) -> Option<i32> {
    if value.is_empty() || value.len() > 3 {
        return None;
    }
    value.iter().try_fold(0, |code, &digit| {
        digit
            .is_ascii_digit()
            .then(|| code * 10 + i32::from(digit - b'0'))
    })
}

/// Scans `chunks` as one gRPC body with `limit`; the declared length of the
/// first oversized message, if any (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn scan_frames<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> Option<u64> {
    let mut cursor = frame::FrameCursor::default();
    chunks
        .into_iter()
        .find_map(|chunk| cursor.scan(chunk, limit).map(|oversized| oversized.length))
}

/// Limits gRPC message sizes in both directions; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct MessageLimitLayer {
    decode: usize,
    encode: usize,
}

impl MessageLimitLayer {
    /// Limits request messages to `decode` bytes and response messages to
    /// `encode` bytes (each as declared by its length prefix).
    #[must_use]
    pub fn new(decode: usize, encode: usize) -> Self {
        Self { decode, encode }
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit {
            inner,
            decode: self.decode,
            encode: self.encode,
        }
    }
}

/// The service made by [`MessageLimitLayer`].
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
    decode: usize,
    encode: usize,
}

impl<S, B, ResB> Service<Request<B>> for MessageLimit<S>
where
    S: Service<Request<LimitedMessages<B>>, Response = Response<ResB>>,
{
    type Response = Response<LimitedMessages<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let decode = self.decode;
        let request = request.map(|body| LimitedMessages::new(body, decode, Direction::Request));
        ResponseFuture {
            inner: self.inner.call(request),
            encode: self.encode,
        }
    }
}

pin_project! {
    /// The response future of [`MessageLimit`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        encode: usize,
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<LimitedMessages<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let encode = *this.encode;
        let mut response = response;
        status::decode_failure_is_invalid_argument(response.headers_mut());
        Poll::Ready(Ok(response.map(|body| {
            LimitedMessages::new(body, encode, Direction::Response)
        })))
    }
}
