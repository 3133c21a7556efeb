//! [`ResponseFuture`]: the answer of an observed request.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::body::Body;
use http::Response;
use pin_project_lite::pin_project;

use super::{
    REQUEST_ID,
    body::{GrpcBody, Pending, grpc_status},
};
use crate::middleware::{RequestId, sensitive::mark_sensitive};

/// `INTERNAL`, for a gRPC service that failed without an answer.
const GRPC_INTERNAL: i32 = 13;

pin_project! {
    /// Resolves to the inner answer with `x-request-id` set and the
    /// credential headers marked sensitive; the request is finished here (HTTP, or gRPC with the status in the headers) or by
    /// the body (gRPC).
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Holds the server span, entered while the inner future is polled.
        pending: Option<Pending>,
        // Taken when answered.
        request_id: Option<RequestId>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, pending: Pending, request_id: RequestId) -> Self {
        Self {
            inner,
            pending: Some(pending),
            request_id: Some(request_id),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.pending.as_ref().map(|pending| pending.span().enter());
            ready!(this.inner.poll(cx))
        };
        let Some(mut pending) = this.pending.take() else {
            return Poll::Ready(result.map(|response| response.map(Body::new)));
        };
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                pending.finish(500, GRPC_INTERNAL);
                return Poll::Ready(Err(err));
            }
        };
        if let Some(id) = this.request_id.take() {
            response.headers_mut().insert(REQUEST_ID, id.into_answer());
        }
        mark_sensitive(response.headers_mut());
        if !pending.is_grpc() {
            pending.finish(response.status().as_u16(), 0);
            return Poll::Ready(Ok(response.map(Body::new)));
        }
        if let Some(code) = grpc_status(response.headers()) {
            // Trailers-only answer: the status is already known.
            pending.finish(0, code);
            return Poll::Ready(Ok(response.map(Body::new)));
        }
        Poll::Ready(Ok(
            response.map(|body| Body::new(GrpcBody::new(Body::new(body), pending)))
        ))
    }
}
