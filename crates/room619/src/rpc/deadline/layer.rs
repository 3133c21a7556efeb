//! [`DeadlineLayer`]: reads a request's timeout and bounds its handler.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::Request;
use http_body::Body as _;
use pin_project_lite::pin_project;
use tokio::{task::futures::TaskLocalFuture, time::Timeout};
use tower::{Layer, Service};

use super::{CURRENT, Deadline, GRPC_TIMEOUT, HTTP_TIMEOUT, body::DeadlineBody, parse_timeout};
use crate::{Error, rpc::find_header};

/// Which protocol's header and error answers a [`DeadlineLayer`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc-timeout`; errors as gRPC statuses.
    Grpc,
    /// `x-request-timeout` (or `grpc-timeout`); errors as problem+json.
    Http,
}

/// Bounds each request by the deadline its header states; see the
/// [module docs](super).
///
/// ```
/// use room619::rpc::deadline::DeadlineLayer;
///
/// let router: axum::Router = axum::Router::new().layer(DeadlineLayer::http());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    protocol: Protocol,
}

impl DeadlineLayer {
    /// For gRPC routes.
    #[must_use]
    pub fn grpc() -> Self {
        Self {
            protocol: Protocol::Grpc,
        }
    }

    /// For HTTP routes.
    #[must_use]
    pub fn http() -> Self {
        Self {
            protocol: Protocol::Http,
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            protocol: self.protocol,
        }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    protocol: Protocol,
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers();
        let value = match self.protocol {
            Protocol::Grpc => find_header(headers, &GRPC_TIMEOUT),
            Protocol::Http => {
                find_header(headers, &HTTP_TIMEOUT).or_else(|| find_header(headers, &GRPC_TIMEOUT))
            }
        };
        let stated = match value.map(|value| parse_timeout(value.as_bytes())) {
            None => None,
            Some(Ok(timeout)) => Some(Deadline::after(timeout)),
            Some(Err(problem)) => {
                let error = Error::invalid_argument(format!("invalid request timeout: {problem}"));
                return ResponseFuture::Rejected {
                    response: Some(respond(self.protocol, error)),
                };
            }
        };
        let Some(deadline) = Deadline::earliest(stated, Deadline::current()) else {
            return ResponseFuture::Passthrough {
                inner: self.inner.call(request),
            };
        };
        let timeout = deadline.remaining();
        if deadline.is_expired() {
            return ResponseFuture::Rejected {
                response: Some(respond(self.protocol, expired(timeout))),
            };
        }
        request.extensions_mut().insert(deadline);
        let inner = tokio::time::timeout_at(deadline.instant(), self.inner.call(request));
        ResponseFuture::Bounded {
            inner: CURRENT.scope(deadline, inner),
            protocol: self.protocol,
            timeout,
            deadline,
        }
    }
}

pin_project! {
    /// The response future of [`DeadlineService`].
    #[project = Projected]
    pub enum ResponseFuture<F> {
        /// No deadline: the inner future as is.
        Passthrough { #[pin] inner: F },
        /// Bounded by a deadline, which is the task's current one meanwhile.
        Bounded {
            #[pin]
            inner: TaskLocalFuture<Deadline, Timeout<F>>,
            protocol: Protocol,
            timeout: Duration,
            deadline: Deadline,
        },
        /// Answered without calling the handler.
        Rejected { response: Option<Response> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Passthrough { inner } => inner.poll(cx),
            Projected::Bounded {
                inner,
                protocol,
                timeout,
                deadline,
            } => match inner.poll(cx) {
                Poll::Pending => Poll::Pending,
                // The deadline bounds the answer's body too (a stream).
                Poll::Ready(Ok(result)) => Poll::Ready(result.map(|response| {
                    response.map(|body| {
                        // An answer of a known length (a whole body) is sent
                        // at once: nothing to bound.
                        if body.is_end_stream() || body.size_hint().exact().is_some() {
                            body
                        } else {
                            Body::new(DeadlineBody::new(body, *deadline, *protocol, *timeout))
                        }
                    })
                })),
                Poll::Ready(Err(_elapsed)) => {
                    Poll::Ready(Ok(respond(*protocol, expired(*timeout))))
                }
            },
            Projected::Rejected { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_default()))
            }
        }
    }
}

fn expired(timeout: Duration) -> Error {
    Error::deadline_exceeded(format!("the request's deadline ({timeout:?}) passed"))
}

fn respond(protocol: Protocol, error: Error) -> Response {
    match protocol {
        Protocol::Grpc => tonic::Status::from(error).into_http(),
        Protocol::Http => error.into_response(),
    }
}
