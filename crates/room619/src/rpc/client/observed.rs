//! [`ObservedBody`]: a gRPC client call's answer body, which records the
//! call when its status arrives in the trailers.
//!
//! An error answered at once comes as a head with `grpc-status` (a
//! "trailers-only" answer) and is recorded from the head. Every other
//! answer, a unary call's success or any streamed answer, carries its
//! status in the trailers after the messages: the call is recorded there,
//! with the time to the end of the stream (a server stream that fails
//! half-way is a failed call, not an `OK` at its first byte). An answer
//! whose body is dropped before its end was cancelled by the caller
//! (`CANCELLED`); one that ends without trailers broke the protocol
//! (`UNKNOWN`, as gRPC clients read a missing status).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body::{Frame, SizeHint};
use tonic::{Status, body::Body};

use crate::{
    observability::client::ClientObserver,
    rpc::grpc::{GRPC_UNKNOWN, status_of},
};

/// The status of a call whose caller dropped its answer before the end.
const CANCELLED: i32 = 1;

/// What is recorded once the call's status is known.
pub(super) struct Pending {
    pub(super) observer: ClientObserver,
    pub(super) path: PathAndQuery,
    pub(super) span: tracing::Span,
    pub(super) started: Instant,
}

impl Pending {
    /// Records the call as ended with `code`.
    pub(super) fn done(self, code: i32) {
        let elapsed: Duration = self.started.elapsed();
        self.observer
            .grpc_done(&self.span, self.path.path(), code, elapsed);
    }
}

/// See the [module docs](self).
pub(super) struct ObservedBody {
    inner: Body,
    /// Taken when the call is recorded.
    pending: Option<Pending>,
}

impl ObservedBody {
    pub(super) fn new(inner: Body, pending: Pending) -> Self {
        Self {
            inner,
            pending: Some(pending),
        }
    }

    fn done(&mut self, code: i32) {
        if let Some(pending) = self.pending.take() {
            pending.done(code);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.done(status_of(trailers).unwrap_or(GRPC_UNKNOWN));
                }
            }
            Poll::Ready(Some(Err(status))) => self.done(status.code() as i32),
            Poll::Ready(None) => self.done(GRPC_UNKNOWN),
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

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.done(CANCELLED);
    }
}
