//! [`ResponseFuture`]: the answer of an observed request.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::body::Body;
use http::{Request, Response};
use pin_project_lite::pin_project;

use super::{
    REQUEST_ID,
    body::{GrpcBody, InSpan, Pending, made_as_sent},
};
use crate::middleware::{RequestId, sensitive::mark_sensitive};

/// `INTERNAL`, for a gRPC service that failed without an answer.
const GRPC_INTERNAL: i32 = 13;

pin_project! {
    /// Resolves to the inner answer with `x-request-id` set and the
    /// credential headers marked sensitive; the request is finished here
    /// (HTTP, or gRPC with the status in the headers) or by the body (gRPC).
    /// An answer's body made as it is sent (a gRPC stream, an HTTP stream)
    /// is polled inside the request's span as this future is.
    pub(crate) struct ResponseFuture<S, F> {
        #[pin]
        state: State<S, F>,
        // Holds the server span, entered while the inner future is polled.
        pending: Option<Pending>,
        // Taken when answered.
        request_id: Option<RequestId>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        // A request whose span something records: the inner service is
        // called at the first poll, inside the span, so that the span is
        // entered once for both (entering and leaving a span costs every
        // layer of the subscriber a call each).
        Deferred {
            service: S,
            request: Option<Request<Body>>,
        },
        Called {
            #[pin]
            future: F,
        },
    }
}

impl<S, F> ResponseFuture<S, F> {
    /// The answer of a request whose inner service was called already.
    pub(super) fn called(future: F, pending: Pending, request_id: RequestId) -> Self {
        Self {
            state: State::Called { future },
            pending: Some(pending),
            request_id: Some(request_id),
        }
    }

    /// The answer of `request`, which `service` (ready) is called with at
    /// the first poll, inside the request's span.
    pub(super) fn deferred(
        service: S,
        request: Request<Body>,
        pending: Pending,
        request_id: RequestId,
    ) -> Self {
        Self {
            state: State::Deferred {
                service,
                request: Some(request),
            },
            pending: Some(pending),
            request_id: Some(request_id),
        }
    }
}

impl<S, F, B, E> Future for ResponseFuture<S, F>
where
    S: tower::Service<Request<Body>, Future = F>,
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(pending) = this.pending.as_mut() {
            pending.set_polling(true);
        }
        let polled = {
            let _entered = this.pending.as_ref().map(|pending| pending.span().enter());
            if let StateProj::Deferred { service, request } = this.state.as_mut().project() {
                // `request` is taken only here, and the state changes at once.
                let future = request.take().map(|request| service.call(request));
                if let Some(future) = future {
                    this.state.set(State::Called { future });
                }
            }
            match this.state.project() {
                StateProj::Called { future } => future.poll(cx),
                // Never: the state is `Called` once the request is taken.
                StateProj::Deferred { .. } => Poll::Pending,
            }
        };
        if let Some(pending) = this.pending.as_mut() {
            pending.set_polling(false);
        }
        let result = ready!(polled);
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
            let span = pending.finish_keeping_span(response.status().as_u16(), 0);
            if span.is_disabled() || !made_as_sent(response.body()) {
                // The span closes here, with the request.
                return Poll::Ready(Ok(response.map(Body::new)));
            }
            // A stream: the handler's code runs as it is sent, in the span.
            return Poll::Ready(Ok(response.map(|body| Body::new(InSpan::new(body, span)))));
        }
        if let Some(code) = crate::rpc::grpc::status_of(response.headers()) {
            // Trailers-only answer: the status is already known.
            pending.finish(0, code);
            return Poll::Ready(Ok(response.map(Body::new)));
        }
        Poll::Ready(Ok(
            response.map(|body| Body::new(GrpcBody::new(Body::new(body), pending)))
        ))
    }
}
