//! Counts a hosted service's in-flight requests, so removing it from a
//! running node can wait for them before its stop hook runs.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

pin_project! {
    /// A response future that counts as in flight until it completes.
    pub(crate) struct Tracked<F> {
        #[pin]
        inner: F,
        token: TaskTrackerToken,
    }
}

impl<F> Tracked<F> {
    pub(crate) fn new(inner: F, tracker: &TaskTracker) -> Self {
        Self {
            inner,
            token: tracker.token(),
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// Counts every request to the wrapped HTTP routes in `tracker`.
#[derive(Clone)]
pub(crate) struct TrackLayer {
    tracker: TaskTracker,
}

impl TrackLayer {
    pub(crate) fn new(tracker: TaskTracker) -> Self {
        Self { tracker }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            tracker: self.tracker.clone(),
        }
    }
}

/// See [`TrackLayer`].
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    tracker: TaskTracker,
}

impl<S, R> tower::Service<R> for Track<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        Tracked::new(self.inner.call(request), &self.tracker)
    }
}
