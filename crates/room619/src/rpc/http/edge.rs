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
            // hyper holds a body with a declared length to that length, and
            // says so in its size hint; a body that does not (a colocated
            // caller's stream under a `Content-Length` it kept) is capped.
            Some(length) if request.body().size_hint().upper() == Some(length) => {
                request.map(|body| Body::new(IdleTimeoutBody::new(body, idle)))
            }
            _ => {
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

/// The same answer as `application/problem+json`; its text (its first
/// [`MAX_DETAIL`] bytes, without the input an axum rejection quotes)
/// becomes the detail.
async fn as_problem(response: Response, path: String) -> Response {
    let status = response.status();
    let (mut parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_DETAIL {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = without_input(truncate(&text, MAX_DETAIL));
    let detail = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error")
    } else {
        text
    };
    let problem = Problem::new(status, Cow::Owned(detail.to_owned()))
        .with_instance(truncate(&path, MAX_QUOTED_PATH));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// axum's rejections whose text goes on, after `": "`, with what failed to
/// deserialize, which may quote the request (a JSON value, a form or query
/// parameter's value). Its other rejections say where the input is
/// malformed (JSON syntax, UTF-8) or why the body could not be read, and
/// are kept.
const QUOTING_REJECTIONS: [&str; 4] = [
    "Failed to deserialize the JSON body into the target type",
    "Failed to deserialize form body",
    "Failed to deserialize form",
    "Failed to deserialize query string",
];

/// `text` without the part of an axum rejection's text that may quote the
/// request: a client's input (a password in a JSON field, a token in a
/// path) must not come back in an error, where it would be logged and
/// shown. A handler's own text is kept.
fn without_input(text: &str) -> &str {
    if text.starts_with("Invalid URL: ") {
        return "Invalid URL: a path parameter does not have the form this route expects";
    }
    QUOTING_REJECTIONS
        .iter()
        .find(|rejection| {
            text.strip_prefix(**rejection)
                .is_some_and(|rest| rest.starts_with(": "))
        })
        .map_or(text, |rejection| rejection)
}

#[cfg(test)]
mod tests {
    use axum::{Json, Router, extract::Path, routing::get};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn problem(
        router: Router,
        request: Request<Body>,
    ) -> (http::StatusCode, serde_json::Value) {
        let response = router
            .layer(HttpEdgeLayer::new(1 << 20))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// axum's rejections quote what failed to parse; the problem keeps
    /// what kind of failure it was and leaves the input out.
    #[tokio::test]
    async fn rejections_do_not_quote_the_request() {
        #[derive(serde::Deserialize)]
        struct Person {
            #[serde(rename = "age")]
            _age: u32,
        }
        let router = Router::new()
            .route(
                "/users/{id}",
                get(|Path(id): Path<u64>| async move { id.to_string() }),
            )
            .route(
                "/people",
                axum::routing::post(|Json(_): Json<Person>| async { "ok" }),
            );
        let (status, body) = problem(
            router.clone(),
            Request::get("/users/hunter2").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST);
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("Invalid URL") && !detail.contains("hunter2"),
            "{body}"
        );

        let (status, body) = problem(
            router,
            Request::post("/people")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"age":"SECRET-CANARY"}"#))
                .unwrap(),
        )
        .await;
        assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!body.to_string().contains("SECRET-CANARY"), "{body}");
        assert_eq!(
            body["detail"],
            "Failed to deserialize the JSON body into the target type"
        );
    }

    /// A handler's own long text is cut at the limit, not dropped.
    #[tokio::test]
    async fn a_long_error_text_is_cut_not_dropped() {
        let long = "é".repeat(MAX_DETAIL);
        let text = long.clone();
        let router = Router::new().route(
            "/",
            get(move || async move { (http::StatusCode::BAD_REQUEST, text) }),
        );
        let (status, body) = problem(router, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST);
        let detail = body["detail"].as_str().unwrap();
        assert_eq!(detail, truncate(&long, MAX_DETAIL));
        assert_eq!(detail.len(), MAX_DETAIL);
    }

    #[test]
    fn only_the_quoting_part_of_a_rejection_is_left_out() {
        assert_eq!(
            without_input("Failed to deserialize form body: secret=x"),
            "Failed to deserialize form body"
        );
        assert_eq!(
            without_input("Failed to deserialize form: secret=x"),
            "Failed to deserialize form"
        );
        assert_eq!(
            without_input("the name is too long"),
            "the name is too long"
        );
        assert_eq!(
            without_input("Failed to deserialize the JSON body into the target type"),
            "Failed to deserialize the JSON body into the target type"
        );
    }
}
