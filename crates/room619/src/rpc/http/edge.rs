//! [`HttpEdgeLayer`]: what every HTTP route of a node passes through, as one
//! hand-written tower layer (one service boundary, no boxed future on the
//! success path).
//!
//! In order: a declared `Content-Length` over the body limit answers `413` at
//! once; a body of unknown length is capped at the limit (so no more than the
//! limit is read), so axum's extractors add no limit of their own; the request's
//! deadline bounds the handler ([`DeadlineLayer`]); and an error answer that
//! has no body type of its own (empty or `text/plain`: axum's `405`, its
//! extractor rejections, a handler's bare status) becomes
//! `application/problem+json` with the same status and headers.

use std::{
    borrow::Cow,
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    body::Body,
    extract::DefaultBodyLimit,
    response::{IntoResponse, Response},
};
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, header, uri::PathAndQuery};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Limited};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{idle::IdleTimeoutBody, truncate};
use crate::{
    Error,
    error::{PROBLEM_JSON, Problem},
    rpc::deadline::DeadlineLayer,
};

/// How long a request body may send nothing before it fails.
const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest path quoted back as a problem's `instance`.
const MAX_QUOTED_PATH: usize = 256;
/// The most bytes of a plain-text error body kept as a problem's `detail`.
const MAX_DETAIL: usize = 1024;

/// The edge of a node's HTTP routes. In order: a declared `Content-Length`
/// over the body limit answers `413` at once; a body of unknown length is
/// capped at the limit (axum's extractors add none of their own); the request's
/// deadline bounds the handler; an error answer without a body type of its own
/// becomes `application/problem+json`.
///
/// ```
/// use room619::rpc::http::HttpEdgeLayer;
///
/// let router: axum::Router = axum::Router::new().layer(HttpEdgeLayer::new(1 << 20));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpEdgeLayer {
    body_limit: usize,
    body_idle_timeout: Duration,
}

impl HttpEdgeLayer {
    /// An edge whose body limit is `body_limit` bytes (and whose body idle
    /// timeout is the default, 30 s).
    #[must_use]
    pub fn new(body_limit: usize) -> Self {
        Self {
            body_limit,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
        }
    }

    /// A request body that sends no data for `timeout` fails (the handler
    /// sees a body error, the client a `400`), so a client trickling or
    /// withholding a body it announced cannot hold a request open for ever.
    /// Default: 30 s.
    #[must_use]
    pub fn body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle_timeout = timeout;
        self
    }
}

type Inner<S> = <DeadlineLayer as Layer<<DefaultBodyLimit as Layer<S>>::Service>>::Service;

impl<S> Layer<S> for HttpEdgeLayer {
    type Service = HttpEdge<Inner<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        // The edge caps the body itself, so axum's extractors are told not
        // to wrap it in a limit of their own (a second `Limited` and one
        // more allocation a request, for a limit already enforced).
        let inner = DefaultBodyLimit::disable().layer(inner);
        HttpEdge {
            inner: DeadlineLayer::http().layer(inner),
            body_limit: self.body_limit,
            body_idle_timeout: self.body_idle_timeout,
        }
    }
}

/// The service made by [`HttpEdgeLayer`].
#[derive(Debug, Clone)]
pub struct HttpEdge<S> {
    inner: S,
    body_limit: usize,
    body_idle_timeout: Duration,
}

impl<S> Service<Request<Body>> for HttpEdge<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.body_limit;
        let idle = self.body_idle_timeout;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let request = match declared {
            Some(length) if length > limit as u64 => {
                let error = Error::payload_too_large(format!(
                    "request body of {length} bytes exceeds the limit of {limit} bytes"
                ));
                return EdgeFuture::Ready {
                    response: Some(error.into_response()),
                };
            }
            _ if request.body().is_end_stream() => request,
            // hyper holds a body with a declared length to that length.
            Some(_) => request.map(|body| Body::new(IdleTimeoutBody::new(body, idle))),
            None => {
                request.map(|body| Body::new(IdleTimeoutBody::new(Limited::new(body, limit), idle)))
            }
        };
        // Kept for the `instance` of a problem, should the answer need
        // rewriting: the path and query only (one shared-bytes clone).
        let path = request.uri().path_and_query().cloned();
        EdgeFuture::Inner {
            inner: self.inner.call(request),
            path,
        }
    }
}

pin_project! {
    /// The response future of [`HttpEdge`].
    #[project = Projected]
    pub enum EdgeFuture<F> {
        /// The routes answer.
        Inner { #[pin] inner: F, path: Option<PathAndQuery> },
        /// An error answer is being rewritten as a problem (rare: boxed).
        Rewriting { rewrite: BoxFuture<'static, Response> },
        /// Answered at the edge.
        Ready { response: Option<Response> },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                Projected::Inner { inner, path } => {
                    let Ok(response) = ready!(inner.poll(cx));
                    if !needs_problem(&response) {
                        return Poll::Ready(Ok(response));
                    }
                    let path = path
                        .take()
                        .map(|path| path.path().to_owned())
                        .unwrap_or_default();
                    self.set(EdgeFuture::Rewriting {
                        rewrite: Box::pin(as_problem(response, path)),
                    });
                }
                Projected::Rewriting { rewrite } => return rewrite.as_mut().poll(cx).map(Ok),
                Projected::Ready { response } => {
                    return Poll::Ready(Ok(response.take().unwrap_or_default()));
                }
            }
        }
    }
}

/// An error answer without a body type of its own.
fn needs_problem(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.as_bytes().starts_with(b"text/plain"),
    }
}

/// The same answer as `application/problem+json`; its text becomes the detail.
async fn as_problem(response: Response, path: String) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let text = match Limited::new(body, MAX_DETAIL).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let detail = if text.trim().is_empty() {
        Cow::Borrowed(status.canonical_reason().unwrap_or("error"))
    } else {
        Cow::Owned(text)
    };
    let problem = Problem::new(status, detail).with_instance(truncate(&path, MAX_QUOTED_PATH));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
