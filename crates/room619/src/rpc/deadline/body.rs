//! [`DeadlineBody`]: a response body that ends at its request's deadline.
//!
//! A deadline bounds the whole call, not only the handler: a server stream
//! (or a slow HTTP body) that is still running when the deadline passes
//! ends then — a gRPC stream with `DEADLINE_EXCEEDED` trailers, an HTTP
//! body with an error (its status was sent long ago; the client sees the
//! body cut). While the body is polled, the deadline is the task's current
//! one, so calls a stream makes carry the time that is left.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::{CURRENT, Deadline, Protocol};

pin_project! {
    /// A response body bounded by `deadline`. The timer is made only when
    /// the body first waits: an answer sent whole never needs one.
    pub(super) struct DeadlineBody<B> {
        #[pin]
        inner: B,
        deadline: Deadline,
        protocol: Protocol,
        timeout: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
        // A frame was sent: from now on a passed deadline ends the body
        // before the next one is asked for.
        started: bool,
        ended: bool,
    }
}

impl<B> DeadlineBody<B> {
    pub(super) fn new(inner: B, deadline: Deadline, protocol: Protocol, timeout: Duration) -> Self {
        Self {
            inner,
            deadline,
            protocol,
            timeout,
            sleep: None,
            started: false,
            ended: false,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes, Error = axum::Error>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let deadline = *this.deadline;
        // The first frame is always asked for: an answer the handler made in
        // time is sent, even if the deadline passes before it is written.
        if !*this.started || !deadline.is_expired() {
            let inner = this.inner;
            match CURRENT.sync_scope(deadline, || inner.poll_frame(cx)) {
                Poll::Pending => {}
                ready @ Poll::Ready(_) => {
                    *this.started = true;
                    return ready;
                }
            }
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.instant())));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        *this.ended = true;
        let message = format!(
            "the request's deadline ({} ms) passed while its answer was being sent",
            this.timeout.as_millis()
        );
        Poll::Ready(Some(match this.protocol {
            Protocol::Grpc => Ok(Frame::trailers(crate::rpc::grpc::status_trailers(
                tonic::Code::DeadlineExceeded,
                &message,
            ))),
            Protocol::Http => Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                message,
            ))),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
