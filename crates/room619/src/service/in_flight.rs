//! Counts a hosted service's in-flight requests, so removing it from a
//! running node can wait for them before its stop hook runs.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, response::IntoResponse as _};
use http::{HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::ServiceDescriptor;
use crate::{Error, rpc::body::Hold};

pin_project! {
    /// A response future that counts as in flight until its response body
    /// has been sent (a stream for as long as it runs), and marks the
    /// response of a deprecated service.
    pub(crate) struct Tracked<F, R> {
        #[pin]
        state: State<F, R>,
        deprecated: Option<ServiceDescriptor>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Admitted {
            #[pin]
            inner: F,
            // Moves into the response body.
            token: Option<TaskTrackerToken>,
        },
        // The service was being removed when the request reached it.
        Refused {
            response: Option<R>,
        },
    }
}

impl<F, R> Tracked<F, R> {
    pub(crate) fn new(inner: F, tracker: &TaskTracker, service: &ServiceDescriptor) -> Self {
        Self {
            state: State::Admitted {
                inner,
                token: Some(tracker.token()),
            },
            deprecated: service.deprecation().is_some().then(|| service.clone()),
        }
    }

    /// The answer `response`, without calling the service (being removed).
    pub(crate) fn refused(response: R) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
            deprecated: None,
        }
    }
}

impl<F, B, E> Future for Tracked<F, Response<B>>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Hold,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut output = match this.state.project() {
            StateProj::Admitted { inner, token } => {
                let output = std::task::ready!(inner.poll(cx));
                match token.take() {
                    Some(token) => output.map(|response| response.hold(token)),
                    None => output,
                }
            }
            StateProj::Refused { response } => {
                return match response.take() {
                    Some(response) => Poll::Ready(Ok(response)),
                    // Never: a future is not polled after it is ready.
                    None => Poll::Pending,
                };
            }
        };
        if let (Ok(response), Some(service)) = (&mut output, this.deprecated.as_ref())
            && let Some(deprecation) = service.deprecation()
        {
            deprecation.mark(response.headers_mut(), service);
        }
        Poll::Ready(output)
    }
}

/// Counts every request to the wrapped HTTP routes of a service in its
/// in-flight tracker until its response body has been sent, and marks its
/// responses when it is deprecated.
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

impl<S> tower::Service<Request<Body>> for Track<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future, Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(refused) = refuse_http(&self.tracker, &self.service) {
            return Tracked::refused(refused);
        }
        Tracked::new(self.inner.call(request), &self.tracker, &self.service)
    }
}

/// The message of a request refused by a service being removed.
fn being_removed(service: &ServiceDescriptor) -> String {
    format!("{service} is being removed from this node; retry, another instance may serve it")
}

/// The answer to an HTTP request that reaches `service` while it is being
/// removed (its `tracker` closed), if it is: `503` with `Retry-After`.
///
/// The request was routed to the service before its removal, and reached
/// it only after the node stopped waiting for the service's requests (an
/// HTTP/2 stream runs in a task of its own, started after the request was
/// routed). The service's stop hook may be running already, so the request
/// does not reach it.
fn refuse_http(tracker: &TaskTracker, service: &ServiceDescriptor) -> Option<Response<Body>> {
    if !tracker.is_closed() {
        return None;
    }
    tracing::debug!(%service, "refusing a request to a service being removed");
    let mut response = Error::unavailable(being_removed(service)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Some(response)
}

/// [`refuse_http`] for a gRPC call: `UNAVAILABLE`.
pub(crate) fn refuse_grpc<B: Default>(
    tracker: &TaskTracker,
    service: &ServiceDescriptor,
) -> Option<Response<B>> {
    if !tracker.is_closed() {
        return None;
    }
    tracing::debug!(%service, "refusing a call to a service being removed");
    Some(tonic::Status::unavailable(being_removed(service)).into_http())
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use tower::{Layer as _, Service as _};

    use super::*;

    #[tokio::test]
    async fn a_request_reaching_a_service_being_removed_is_refused_untouched() {
        let tracker = TaskTracker::new();
        let called = Arc::new(AtomicUsize::new(0));
        let handler = tower::service_fn({
            let called = Arc::clone(&called);
            move |_: Request<Body>| {
                called.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<_, Infallible>(Response::new(Body::from("served"))))
            }
        });
        let service = ServiceDescriptor::new("items", "1.0.0").unwrap();
        let mut track = TrackLayer::new(tracker.clone(), service).layer(handler);

        let answer = track.call(Request::new(Body::empty()));
        assert_eq!(tracker.len(), 1, "in flight until answered");
        assert_eq!(answer.await.unwrap().status(), 200);
        assert_eq!(tracker.len(), 0);

        // `remove` closes the tracker once no new request can be routed to
        // the service; one routed before may still arrive.
        tracker.close();
        let answer = track.call(Request::new(Body::empty())).await.unwrap();
        assert_eq!(answer.status(), 503);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("items@1.0.0 is being removed"), "{body}");
        assert_eq!(called.load(Ordering::Relaxed), 1, "the handler never ran");
        assert_eq!(tracker.len(), 0, "a refused request holds no token");
    }

    #[test]
    fn a_grpc_call_reaching_a_service_being_removed_is_unavailable() {
        let tracker = TaskTracker::new();
        let service = ServiceDescriptor::new("items", "1.0.0").unwrap();
        assert!(refuse_grpc::<Body>(&tracker, &service).is_none());
        tracker.close();
        let refused = refuse_grpc::<Body>(&tracker, &service).unwrap();
        assert_eq!(refused.headers()["grpc-status"], "14");
        let message = refused.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("items@1.0.0"), "{message}");
    }
}
