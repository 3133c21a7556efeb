//! Counts a hosted service's in-flight requests, so removing it from a
//! running node can wait for them before its stop hook runs.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::ServiceDescriptor;

pin_project! {
    /// A response future that counts as in flight until it completes, and
    /// marks the response of a deprecated service.
    pub(crate) struct Tracked<F> {
        #[pin]
        inner: F,
        token: TaskTrackerToken,
        deprecated: Option<ServiceDescriptor>,
    }
}

impl<F> Tracked<F> {
    pub(crate) fn new(inner: F, tracker: &TaskTracker, service: &ServiceDescriptor) -> Self {
        Self {
            inner,
            token: tracker.token(),
            deprecated: service.deprecation().is_some().then(|| service.clone()),
        }
    }
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(service)) = (&mut output, this.deprecated.as_ref())
            && let Some(deprecation) = service.deprecation()
        {
            deprecation.mark(response.headers_mut(), service);
        }
        Poll::Ready(output)
    }
}

/// Counts every request to the wrapped HTTP routes of a service in its
/// in-flight tracker, and marks its responses when it is deprecated.
#[derive(Clone)]
pub(crate) struct TrackLayer {
    tracker: TaskTracker,
    service: ServiceDescriptor,
}

impl TrackLayer {
    pub(crate) fn new(tracker: TaskTracker, service: ServiceDescriptor) -> Self {
        Self { tracker, service }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            tracker: self.tracker.clone(),
            service: self.service.clone(),
        }
    }
}

/// See [`TrackLayer`].
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    tracker: TaskTracker,
    service: ServiceDescriptor,
}

impl<S, R, RB> tower::Service<R> for Track<S>
where
    S: tower::Service<R, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        Tracked::new(self.inner.call(request), &self.tracker, &self.service)
    }
}
