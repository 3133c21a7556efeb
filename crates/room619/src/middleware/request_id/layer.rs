//! [`RequestIdLayer`] and its service.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{REQUEST_ID, RequestId};

/// Adds a [`RequestId`] to every request and its response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer {
    _private: (),
}

impl RequestIdLayer {
    /// The layer; it has no settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestIdService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let id = RequestId::assign(&mut request);
        ResponseFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project! {
    /// The response future of [`RequestIdService`]: adds the id header.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<RequestId>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(REQUEST_ID, id.into_answer());
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt as _;

    use super::*;

    fn echo_id()
    -> impl Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone {
        RequestIdLayer::new().layer(tower::service_fn(|request: Request<()>| async move {
            let id = request.extensions().get::<RequestId>().unwrap().to_string();
            Ok::<_, Infallible>(Response::new(id))
        }))
    }

    #[tokio::test]
    async fn a_sane_caller_id_is_kept_and_returned() {
        let request = Request::builder()
            .header("x-request-id", "abc-1")
            .body(())
            .unwrap();
        let response = echo_id().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "abc-1");
        assert_eq!(response.body(), "abc-1");
    }

    #[tokio::test]
    async fn a_missing_or_hostile_id_is_replaced() {
        let request = Request::builder()
            .header("x-request-id", "a b")
            .body(())
            .unwrap();
        let response = echo_id().oneshot(request).await.unwrap();
        let returned = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(returned.len(), 32);
        assert_eq!(response.body(), returned);
    }
}
