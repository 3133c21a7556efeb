//! [`IdleTimeoutBody`]: a request body that fails when its sender goes quiet;
//! [`IdleRequests`]: a tonic service whose request streams do.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::BoxError;

pin_project! {
    /// A body that fails with [`BodyIdle`] when no data arrives for the idle
    /// timeout, so a client trickling (or never sending) a body it announced
    /// cannot hold a request open forever (slowloris on the body).
    ///
    /// The timer exists only while the body waits: a body whose data is
    /// already there (the common case) costs no timer at all.
    pub(crate) struct IdleTimeoutBody<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        // Whether the timer is armed for the current wait.
        waiting: bool,
        timeout: Duration,
    }
}

impl<B> IdleTimeoutBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            sleep: None,
            waiting: false,
            timeout,
        }
    }
}

/// A tonic service whose request streams fail when the client sends nothing
/// for `timeout`. For the node's own reflection service, which anyone may
/// call: gRPC streams are otherwise exempt from the idle timeout (a pause
/// in a user's stream is legitimate), and a reflection stream opened and
/// never asked anything would hold a request permit for as long as its
/// client keeps it open.
#[derive(Debug, Clone)]
pub(crate) struct IdleRequests<S> {
    inner: S,
    timeout: Duration,
}

impl<S> IdleRequests<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for IdleRequests<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for IdleRequests<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = self.timeout;
        self.inner
            .call(request.map(|body| tonic::body::Body::new(IdleTimeoutBody::new(body, timeout))))
    }
}

/// A request body that sent nothing for the idle timeout.
#[derive(Debug)]
pub(super) struct BodyIdle(Duration);

impl fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body sent no data for {:?}", self.0)
    }
}

impl std::error::Error for BodyIdle {}

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !*this.waiting {
                    // The first wait since data last came: (re)arm the timer.
                    *this.waiting = true;
                    let deadline = crate::rpc::deadline::after(*this.timeout);
                    match this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                match this.sleep.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Some(Err(Box::new(BodyIdle(*this.timeout)))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
