//! Counts a hosted service's in-flight requests, so removing it from a
//! running node can wait for them before its stop hook runs.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering, fence},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, response::IntoResponse as _};
use http::{HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::ServiceDescriptor;
use crate::{Error, rpc::body::Hold};

/// A hosted service's requests in flight, and whether it still takes new
/// ones: it does until its removal has waited for those in flight.
#[derive(Clone, Debug, Default)]
pub(crate) struct Admission {
    tracker: TaskTracker,
    stopped: Arc<AtomicBool>,
}

impl Admission {
    /// The token of a request, which counts it in flight until dropped;
    /// `None` once the service has stopped taking requests (its removal
    /// waited for those in flight: its stop hook may be running).
    pub(crate) fn admit(&self) -> Option<TaskTrackerToken> {
        let token = self.tracker.token();
        // The tracker's count and its closed flag are one atomic: seen open
        // after the token was counted, the tracker closes after it, and the
        // drain's waits see the token. No fence on the usual path.
        if !self.tracker.is_closed() {
            return Some(token);
        }
        // With the fence in `drain`: either this request sees `stopped`, or
        // the wait after it is set sees this token.
        fence(Ordering::SeqCst);
        (!self.stopped.load(Ordering::Relaxed)).then_some(token)
    }

    /// Waits, for at most `timeout` in all, for the requests in flight
    /// (those still reaching the service on routes taken before its removal
    /// are admitted and waited for too), then stops taking new ones and waits
    /// for any admitted meanwhile. Whether they all ended in time.
    pub(crate) async fn drain(&self, timeout: Duration) -> bool {
        // An absurd timeout must not overflow the clock (and panic).
        let deadline = crate::rpc::deadline::after(timeout);
        self.tracker.close();
        let ended = tokio::time::timeout_at(deadline, self.tracker.wait()).await;
        self.stopped.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let late = tokio::time::timeout_at(deadline, self.tracker.wait()).await;
        ended.is_ok() && late.is_ok()
    }

    /// Requests in flight now.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }
}

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
    pub(crate) fn new(inner: F, token: TaskTrackerToken, service: &ServiceDescriptor) -> Self {
        Self {
            state: State::Admitted {
                inner,
                token: Some(token),
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
    admission: Admission,
    service: ServiceDescriptor,
}

impl TrackLayer {
    pub(crate) fn new(admission: Admission, service: ServiceDescriptor) -> Self {
        Self { admission, service }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            admission: self.admission.clone(),
            service: self.service.clone(),
        }
    }
}

/// See [`TrackLayer`].
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    admission: Admission,
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
        let Some(token) = self.admission.admit() else {
            return Tracked::refused(refuse_http(&self.service));
        };
        Tracked::new(self.inner.call(request), token, &self.service)
    }
}

/// The message of a request refused by a service being removed.
fn being_removed(service: &ServiceDescriptor) -> String {
    format!("{service} is being removed from this node; retry, another instance may serve it")
}

/// The answer to an HTTP request that reaches `service` after it stopped
/// taking requests: `503` with `Retry-After`.
///
/// The request was routed to the service before its removal, and reached
/// it only after the node stopped waiting for the service's requests (an
/// HTTP/2 stream runs in a task of its own, started after the request was
/// routed). The service's stop hook may be running already, so the request
/// does not reach it.
fn refuse_http(service: &ServiceDescriptor) -> Response<Body> {
    tracing::debug!(%service, "refusing a request to a service being removed");
    let mut response = Error::unavailable(being_removed(service)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// [`refuse_http`] for a gRPC call: `UNAVAILABLE`.
pub(crate) fn refuse_grpc<B: Default>(service: &ServiceDescriptor) -> Response<B> {
    tracing::debug!(%service, "refusing a call to a service being removed");
    tonic::Status::unavailable(being_removed(service)).into_http()
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
        let admission = Admission::default();
        let called = Arc::new(AtomicUsize::new(0));
        let handler = tower::service_fn({
            let called = Arc::clone(&called);
            move |_: Request<Body>| {
                called.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<_, Infallible>(Response::new(Body::from("served"))))
            }
        });
        let service = ServiceDescriptor::new("items", "1.0.0").unwrap();
        let mut track = TrackLayer::new(admission.clone(), service).layer(handler);

        let answer = track.call(Request::new(Body::empty()));
        assert_eq!(admission.len(), 1, "in flight until answered");
        assert_eq!(answer.await.unwrap().status(), 200);
        assert_eq!(admission.len(), 0);

        // `remove` drains the service once no new request can be routed to
        // it; one routed before may still arrive.
        assert!(admission.drain(Duration::from_secs(1)).await);
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
        assert_eq!(admission.len(), 0, "a refused request holds no token");
    }

    #[tokio::test]
    async fn requests_arriving_while_the_removal_waits_are_served_and_waited_for() {
        let admission = Admission::default();
        let first = admission.admit().expect("admitted");
        let draining = tokio::spawn({
            let admission = admission.clone();
            async move { admission.drain(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Routed before the removal, arriving during its wait: served.
        let late = admission.admit().expect("admitted while the removal waits");
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!draining.is_finished(), "the late request is waited for");
        drop(late);
        assert!(draining.await.unwrap());
        assert!(admission.admit().is_none(), "refused once drained");
    }

    #[tokio::test]
    async fn the_drain_gives_up_at_its_timeout() {
        let admission = Admission::default();
        let _stuck = admission.admit();
        assert!(!admission.drain(Duration::from_millis(30)).await);
        assert!(admission.admit().is_none());
    }

    #[tokio::test]
    async fn an_absurd_drain_timeout_does_not_overflow_the_clock() {
        let admission = Admission::default();
        assert!(admission.drain(Duration::MAX).await);
        assert!(admission.admit().is_none());
    }

    #[test]
    fn a_grpc_call_reaching_a_service_being_removed_is_unavailable() {
        let service = ServiceDescriptor::new("items", "1.0.0").unwrap();
        let refused = refuse_grpc::<Body>(&service);
        assert_eq!(refused.headers()["grpc-status"], "14");
        let message = refused.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("items@1.0.0"), "{message}");
    }
}
