//! The layer that observes every request a node serves: one for the gRPC
//! router, one for the HTTP router.
//!
//! Per request it marks the credential headers sensitive, both ways (as
//! [`SensitiveHeadersLayer`] does), gives the request its [`RequestId`] (as
//! [`RequestIdLayer`] does: the caller's `x-request-id` when sane, a new one
//! otherwise, in the extensions and on the answer), continues the caller's
//! W3C trace context,
//! opens a server span whose log lines carry `service`, `method`,
//! `request_id`, `trace_id` and `span_id` (its [`RequestScope`]), gives it,
//! when it is sampled, its
//! name and the OpenTelemetry semantic attributes (`rpc.system`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`;
//! `http.request.method`, `http.route`, `http.response.status_code`, and
//! `request_id`), and
//! counts, times and gauges the request. A gRPC call ends with
//! its last body frame (the status is in the trailers); an HTTP request
//! with its response head. Header values are never recorded.
//!
//! The span is entered while the answer is made and, for an answer made as
//! it is sent (a gRPC server stream, an HTTP stream or server-sent events),
//! while its body is polled: the handler's stream runs then, and its log
//! lines and the calls it makes belong to the request. A unary gRPC answer
//! or an HTTP body already made runs no handler code and is not entered.
//!
//! The request id and the sensitive headers are done here rather than by
//! their own layers outside: each layer is one more call and one more future
//! that the request and its answer are moved through.
//!
//! [`SensitiveHeadersLayer`]: crate::middleware::SensitiveHeadersLayer
//! [`RequestIdLayer`]: crate::middleware::RequestIdLayer

mod body;
mod future;
mod layer;
mod routes;

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, extract::MatchedPath};
use http::{HeaderMap, Request, Response};
use tracing::Span;

pub(crate) use layer::ObserveLayer;
pub(crate) use routes::{GrpcRoutes, HttpOwners};

use self::{
    body::Pending,
    future::ResponseFuture,
    routes::{BoundRoute, GrpcRoute, HttpRoute},
};
use super::{
    metrics::ServerMetrics,
    request_scope::RequestScope,
    trace_context::{self, AttributeValue},
};
use crate::middleware::{RequestId, sensitive::mark_sensitive};

/// The request id header, taken from the caller or made, and answered.
pub(crate) use crate::middleware::request_id::REQUEST_ID;

/// What the layer knows: the protocol's routes and the metrics.
pub(crate) struct Shared {
    pub(crate) protocol: Protocol,
    pub(crate) metrics: Option<ServerMetrics>,
}

pub(crate) enum Protocol {
    Grpc(GrpcRoutes),
    Http(HttpOwners),
}

/// The service made by [`ObserveLayer`].
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
    route: Option<Arc<BoundRoute>>,
}

impl<S, B> tower::Service<Request<Body>> for Observe<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>> + Clone,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let (pending, request_id) = self.begin(&mut request);
        if pending.span().is_disabled() {
            let future = self.inner.call(request);
            return ResponseFuture::called(future, pending, request_id);
        }
        // The ready service goes with the request; a clone takes its place.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::deferred(ready, request, pending, request_id)
    }
}

impl<S> Observe<S> {
    /// As [`Service::call`](tower::Service::call) on a service of one's
    /// own (ready, and not called again): its inner service goes with the
    /// request rather than a clone of it.
    pub(crate) fn call_once(mut self, mut request: Request<Body>) -> ResponseFuture<S, S::Future>
    where
        S: tower::Service<Request<Body>>,
    {
        let (pending, request_id) = self.begin(&mut request);
        if pending.span().is_disabled() {
            let future = self.inner.call(request);
            return ResponseFuture::called(future, pending, request_id);
        }
        ResponseFuture::deferred(self.inner, request, pending, request_id)
    }

    /// What every request starts with: its credential headers marked
    /// sensitive, its id, its route, its counters and its server span.
    fn begin(&self, request: &mut Request<Body>) -> (Pending, RequestId) {
        let started = Instant::now();
        mark_sensitive(request.headers_mut());
        let request_id = RequestId::assign(request);
        let (span, sampled, pending) = match &self.shared.protocol {
            Protocol::Grpc(routes) => {
                let route = routes.resolve(request.uri().path());
                let (span, sampled) = grpc_span(&route, &request_id, request.headers());
                (span, sampled, self.grpc(route, started))
            }
            Protocol::Http(owners) => {
                let route = match &self.route {
                    Some(bound) => bound.resolve(owners, request.method()),
                    None => owners.resolve(
                        request.method(),
                        request
                            .extensions()
                            .get::<MatchedPath>()
                            .map(MatchedPath::as_str),
                    ),
                };
                let (span, sampled) = http_span(&route, &request_id, request.headers());
                (span, sampled, self.http(route, started))
            }
        };
        (pending.with_span(span, sampled), request_id)
    }

    fn grpc(&self, route: Arc<GrpcRoute>, started: Instant) -> Pending {
        if let Some(metrics) = &self.shared.metrics {
            metrics.grpc_started(&route.labels, &route.metrics);
        }
        Pending::grpc(Arc::clone(&self.shared), route, started)
    }

    fn http(&self, route: Arc<HttpRoute>, started: Instant) -> Pending {
        if let Some(metrics) = &self.shared.metrics {
            metrics.http_started(&route.labels, &route.metrics);
        }
        Pending::http(Arc::clone(&self.shared), route, started)
    }
}

/// The server span of a gRPC call, continuing the caller's trace, and
/// whether it is sampled. The service, method and request id that log lines
/// carry are kept with the span as its [`RequestScope`]; the OpenTelemetry
/// name and semantic attributes are set on sampled spans only.
fn grpc_span(route: &GrpcRoute, request_id: &RequestId, headers: &HeaderMap) -> (Span, bool) {
    let span = tracing::info_span!("rpc.server");
    if span.is_disabled() {
        // Nothing records it: no scope is built for it.
        return (span, false);
    }
    let sampled = start(
        &span,
        headers,
        &route.name,
        &[
            ("rpc.system", AttributeValue::Static(route.labels.system)),
            ("rpc.service", AttributeValue::Shared(&route.labels.service)),
            ("rpc.method", AttributeValue::Shared(&route.labels.method)),
            (
                REQUEST_ID_ATTRIBUTE,
                AttributeValue::Borrowed(request_id.as_str()),
            ),
        ],
        RequestScope::new(&route.owner, &route.name, Some(request_id.clone())),
    );
    (span, sampled)
}

/// The server span of an HTTP request, as [`grpc_span`].
fn http_span(route: &HttpRoute, request_id: &RequestId, headers: &HeaderMap) -> (Span, bool) {
    let span = tracing::info_span!("http.server");
    if span.is_disabled() {
        // Nothing records it: no scope is built for it.
        return (span, false);
    }
    let sampled = start(
        &span,
        headers,
        &route.name,
        &[
            (
                "http.request.method",
                AttributeValue::Static(route.labels.http_request_method),
            ),
            (
                "http.route",
                AttributeValue::Shared(&route.labels.http_route),
            ),
            // The node speaks plain HTTP (TLS ends before it).
            ("url.scheme", AttributeValue::Static("http")),
            (
                REQUEST_ID_ATTRIBUTE,
                AttributeValue::Borrowed(request_id.as_str()),
            ),
        ],
        RequestScope::new(&route.owner, &route.name, Some(request_id.clone())),
    );
    (span, sampled)
}

/// The attribute of a sampled server span that holds the request id (the
/// id a caller quotes when reporting a failure).
const REQUEST_ID_ATTRIBUTE: &str = "request_id";

/// Continues the caller's trace named in `headers`, starts the span's
/// OpenTelemetry span, named `name` with `attributes` when it is sampled,
/// and keeps `scope` with the span; returns whether it is sampled.
fn start(
    span: &Span,
    headers: &HeaderMap,
    name: &str,
    attributes: &[(&'static str, AttributeValue<'_>)],
    scope: RequestScope,
) -> bool {
    trace_context::continue_from_http(span, headers);
    trace_context::start_server(span, name, attributes, scope)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer as _, Service as _, ServiceExt as _};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::observability::{logging, metrics::labels::Interner, test_lines::Lines};

    /// A service whose `call` logs, the way a layer refusing a request
    /// does, before its future is polled.
    fn logs_when_called() -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(|_: Request<Body>| {
            tracing::info!("called");
            std::future::ready(Ok(Response::new(Body::empty())))
        })
    }

    fn request(id: &str) -> Request<Body> {
        Request::builder()
            .uri("/items")
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_inner_service_is_called_inside_the_request_span() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(logging::json_layer(lines.make_writer()));
        let _default = tracing::subscriber::set_default(subscriber);
        let layer =
            ObserveLayer::http(HttpOwners::new("node", Arc::new(Interner::default())), None)
                .for_route("/items");

        // Through `Service::call`: the ready service goes with the request.
        let mut observed = layer.layer(logs_when_called());
        let future = observed.ready().await.unwrap().call(request("first"));
        assert!(lines.text().is_empty(), "called at the first poll");
        let answer = future.await.unwrap();
        assert_eq!(answer.headers()["x-request-id"], "first");

        // Through `call_once`, as the fast path calls a route's stack.
        let answer = layer
            .layer(logs_when_called())
            .call_once(request("second"))
            .await
            .unwrap();
        assert_eq!(answer.headers()["x-request-id"], "second");

        let text = lines.text();
        let called: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("called"))
            .collect();
        assert_eq!(called.len(), 2, "{text}");
        assert!(called[0].contains(r#""request_id":"first""#), "{text}");
        assert!(called[1].contains(r#""request_id":"second""#), "{text}");
    }

    /// A log level above `info` picks the lines logged; it does not take
    /// the request context (and the trace) off the `warn` lines of a
    /// handler.
    #[tokio::test]
    async fn a_warn_level_log_filter_keeps_the_request_context() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(logging::log_filter(tracing_subscriber::EnvFilter::new(
                "warn",
            )))
            .with(logging::json_layer(lines.make_writer()));
        let _default = tracing::subscriber::set_default(subscriber);
        let warns = tower::service_fn(|_: Request<Body>| {
            tracing::info!("not logged");
            tracing::warn!("careful");
            std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
        });
        let layer =
            ObserveLayer::http(HttpOwners::new("node", Arc::new(Interner::default())), None)
                .for_route("/items");
        let answer = layer
            .layer(warns)
            .call_once(request("fourth"))
            .await
            .unwrap();
        assert_eq!(answer.headers()["x-request-id"], "fourth");
        let text = lines.text();
        assert!(!text.contains("not logged"), "{text}");
        let careful: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("careful"))
            .collect();
        assert_eq!(careful.len(), 1, "{text}");
        assert!(careful[0].contains(r#""request_id":"fourth""#), "{text}");
    }

    /// A service answering with a body made from a stream whose two items
    /// log `streamed` as they are made.
    fn streams() -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(|_: Request<Body>| {
            use futures_util::StreamExt as _;
            let items = futures_util::stream::iter(0..2).map(|item| {
                tracing::info!(item, "streamed");
                Ok::<_, Infallible>(bytes::Bytes::from_static(b"item"))
            });
            std::future::ready(Ok::<_, Infallible>(Response::new(Body::from_stream(items))))
        })
    }

    /// Reads `answer`'s body to its end; the `streamed` lines of `lines`.
    async fn streamed_lines(answer: Response<Body>, lines: &Lines) -> Vec<String> {
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[..], b"itemitem");
        lines
            .text()
            .lines()
            .filter(|line| line.contains("streamed"))
            .map(str::to_owned)
            .collect()
    }

    /// A body made as it is sent runs the handler's code after the answer's
    /// head: its polls are inside the request's span too.
    #[tokio::test]
    async fn a_streamed_body_is_polled_inside_the_request_span() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(logging::json_layer(lines.make_writer()));
        let _default = tracing::subscriber::set_default(subscriber);
        // A second dispatcher: a callsite a parallel test (with no
        // subscriber) hits first is then not cached as never enabled.
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

        let http = ObserveLayer::http(HttpOwners::new("node", Arc::new(Interner::default())), None)
            .for_route("/items");
        let answer = http
            .layer(streams())
            .call_once(request("http-stream"))
            .await
            .unwrap();
        let streamed = streamed_lines(answer, &lines).await;
        assert_eq!(streamed.len(), 2, "{streamed:?}");
        for line in &streamed {
            assert!(line.contains(r#""request_id":"http-stream""#), "{line}");
        }

        // A gRPC method no descriptor lists may stream its answer.
        let grpc = ObserveLayer::grpc(GrpcRoutes::new(&[], &[]), None);
        let call = Request::builder()
            .uri("/pkg.Items/List")
            .header("x-request-id", "grpc-stream")
            .body(Body::empty())
            .unwrap();
        let answer = grpc.layer(streams()).call_once(call).await.unwrap();
        let streamed = streamed_lines(answer, &lines).await;
        assert_eq!(streamed.len(), 4, "{streamed:?}");
        for line in &streamed[2..] {
            assert!(line.contains(r#""request_id":"grpc-stream""#), "{line}");
        }
    }

    #[tokio::test]
    async fn without_a_subscriber_the_inner_service_is_called_at_once() {
        // Another test of this process may have installed a global one.
        let _none = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&called);
        let inner = tower::service_fn(move |_: Request<Body>| {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
            std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
        });
        let mut observed =
            ObserveLayer::http(HttpOwners::new("node", Arc::new(Interner::default())), None)
                .layer(inner);
        let future = observed.ready().await.unwrap().call(request("third"));
        assert!(called.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(future.await.unwrap().headers()["x-request-id"], "third");
    }
}
