//! [`Pending`]: a request not yet measured, finished exactly once (at the
//! answer, at the end of a gRPC body, or when dropped); [`GrpcBody`]: the
//! body that finishes a gRPC call at its trailers; [`InSpan`]: an HTTP
//! answer's body made as it is sent, polled inside its request's span.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tracing::Span;

use super::{
    Shared,
    routes::{GrpcRoute, HttpRoute},
};
use crate::{
    observability::trace_context,
    rpc::grpc::{GRPC_UNKNOWN, status_of},
};

/// `CANCELLED`: the caller went away before the answer ended.
const GRPC_CANCELLED: i32 = 1;
/// `UNKNOWN`: the body failed or ended without a status.
/// What a dropped HTTP request is counted as (the caller closed first).
const HTTP_CLIENT_CLOSED: u16 = 499;
/// What a request whose handler panicked is counted as.
const HTTP_INTERNAL_ERROR: u16 = 500;
/// gRPC `INTERNAL`, the code of a call whose handler panicked.
const GRPC_INTERNAL: i32 = 13;

/// A request in flight, with its server span (the one handle of it: the
/// span ends when the request is finished); dropping it unfinished counts
/// it as abandoned.
pub(super) struct Pending {
    started: Option<Started>,
    span: Span,
    /// Set while the request's own handler (its future, or its answer's
    /// body) is polled: a panic that drops the request then is its
    /// handler's, not one elsewhere in the task (a colocated caller's).
    polling: bool,
}

struct Started {
    /// The layer's metrics (one shared handle: cloning the families would
    /// cost an atomic increment each per request).
    shared: Arc<Shared>,
    route: Route,
    since: Instant,
    /// Whether the span is exported (its status is worth recording).
    sampled: bool,
}

enum Route {
    Grpc(Arc<GrpcRoute>),
    Http(Arc<HttpRoute>),
}

impl Pending {
    pub(super) fn grpc(shared: Arc<Shared>, route: Arc<GrpcRoute>, started: Instant) -> Self {
        Self::new(shared, Route::Grpc(route), started)
    }

    pub(super) fn http(shared: Arc<Shared>, route: Arc<HttpRoute>, started: Instant) -> Self {
        Self::new(shared, Route::Http(route), started)
    }

    fn new(shared: Arc<Shared>, route: Route, since: Instant) -> Self {
        Self {
            started: Some(Started {
                shared,
                route,
                since,
                sampled: false,
            }),
            span: Span::none(),
            polling: false,
        }
    }

    /// Marks the request's handler as being polled (or no longer).
    pub(super) fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
    }

    /// Keeps `span` open until the request is finished; a `sampled` span
    /// gets the status as an attribute.
    pub(super) fn with_span(mut self, span: Span, sampled: bool) -> Self {
        if let Some(started) = &mut self.started {
            started.sampled = sampled;
        }
        self.span = span;
        self
    }

    /// The request's server span (none once finished).
    pub(super) fn span(&self) -> &Span {
        &self.span
    }

    pub(super) fn is_grpc(&self) -> bool {
        matches!(
            &self.started,
            Some(Started {
                route: Route::Grpc(_),
                ..
            })
        )
    }

    /// Whether the request is a gRPC call answered with a stream, whose
    /// handler runs as the answer's body is polled.
    pub(super) fn streams(&self) -> bool {
        matches!(
            &self.started,
            Some(Started {
                route: Route::Grpc(route),
                ..
            }) if route.streams
        )
    }

    /// Finishes with an HTTP status, or a gRPC code.
    pub(super) fn finish(&mut self, status: u16, grpc_code: i32) {
        // The span closes here, with its status on it.
        drop(self.finish_keeping_span(status, grpc_code));
    }

    /// Finishes as [`finish`](Self::finish) does, and hands the span over
    /// (open, none when the request was finished already): an answer's
    /// body made as it is sent is polled inside it.
    pub(super) fn finish_keeping_span(&mut self, status: u16, grpc_code: i32) -> Span {
        let Some(Started {
            shared,
            route,
            since,
            sampled,
        }) = self.started.take()
        else {
            return Span::none();
        };
        // The span ends here, once the status is on it (a sampled one;
        // an unsampled one has nothing to end). Its `tracing` side closes
        // when the last handle of it is dropped.
        let span = std::mem::replace(&mut self.span, Span::none());
        let elapsed = since.elapsed();
        match route {
            Route::Grpc(route) => {
                if sampled {
                    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
                    // UNAVAILABLE, DATA_LOSS: the server failed (the RPC
                    // semantic conventions); the others are the caller's.
                    let failed = matches!(grpc_code, 2 | 4 | 12 | 13 | 14 | 15);
                    trace_context::finish_server(
                        &span,
                        "rpc.grpc.status_code",
                        grpc_code.into(),
                        failed,
                    );
                }
                if let Some(metrics) = &shared.metrics {
                    metrics.grpc_finished(&route.labels, &route.metrics, grpc_code, elapsed);
                }
            }
            Route::Http(route) => {
                if sampled {
                    trace_context::finish_server(
                        &span,
                        "http.response.status_code",
                        status.into(),
                        status >= 500,
                    );
                }
                if let Some(metrics) = &shared.metrics {
                    metrics.http_finished(&route.labels, &route.metrics, status, elapsed);
                }
            }
        }
        span
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.polling && std::thread::panicking() {
            // The handler panicked while its answer was being made or sent:
            // the server failed, the caller did not go away.
            self.finish(HTTP_INTERNAL_ERROR, GRPC_INTERNAL);
        } else {
            self.finish(HTTP_CLIENT_CLOSED, GRPC_CANCELLED);
        }
    }
}

pin_project! {
    /// A gRPC answer's body: the call is finished with the trailers'
    /// status, when the body ends, or when it is dropped. The body of a
    /// streamed answer is polled inside the call's span: the handler's
    /// stream runs then, and its log lines and the calls it makes belong to
    /// the call.
    pub(super) struct GrpcBody {
        #[pin]
        inner: Body,
        pending: Pending,
        // Whether the span is entered around each poll: a unary answer's
        // body runs none of the handler's code, and a span nothing records
        // is not worth entering.
        in_span: bool,
    }
}

impl GrpcBody {
    pub(super) fn new(inner: Body, pending: Pending) -> Self {
        let in_span = pending.streams() && !pending.span().is_disabled();
        Self {
            inner,
            pending,
            in_span,
        }
    }
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        this.pending.set_polling(true);
        let polled = if *this.in_span {
            let _entered = this.pending.span().enter();
            this.inner.poll_frame(cx)
        } else {
            this.inner.poll_frame(cx)
        };
        this.pending.set_polling(false);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.pending.finish(0, code);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => this.pending.finish(0, GRPC_UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `body` is made as it is sent (a stream, its length unknown), and
/// so may run the handler's code when polled; a body already made (a
/// buffer: empty, or of a known length) runs none.
pub(super) fn made_as_sent<B: http_body::Body>(body: &B) -> bool {
    !body.is_end_stream() && body.size_hint().exact().is_none()
}

pin_project! {
    /// An HTTP answer's body made as it is sent (`Body::from_stream`,
    /// server-sent events), polled inside its request's span: the request
    /// is finished (measured, its span's status set) at the answer's head,
    /// but what the handler's stream logs or calls as it runs belongs to
    /// the request. The span closes when the body is dropped.
    pub(super) struct InSpan<B> {
        #[pin]
        inner: B,
        span: Span,
    }
}

impl<B> InSpan<B> {
    pub(super) fn new(inner: B, span: Span) -> Self {
        Self { inner, span }
    }
}

impl<B: http_body::Body> http_body::Body for InSpan<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
