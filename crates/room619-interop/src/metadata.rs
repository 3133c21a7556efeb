//! [`EchoMetadata`]: the interop "Echo Metadata" feature, for any gRPC server.
//!
//! A client sending `x-grpc-test-echo-initial` gets it back in the response
//! headers; one sending `x-grpc-test-echo-trailing-bin` gets it back in the
//! trailers. tonic lets a unary handler set headers but not trailers, so this
//! is done once, around the generated server, on the HTTP messages: the same
//! code then serves unary and streaming calls alike.

use std::{
    convert::Infallible,
    future::{Future, ready},
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt as _;
use tonic::{Status, body::Body, server::NamedService};

/// The request header echoed into the response headers.
const ECHO_INITIAL: HeaderName = HeaderName::from_static("x-grpc-test-echo-initial");

/// The request header echoed into the response trailers.
const ECHO_TRAILING: HeaderName = HeaderName::from_static("x-grpc-test-echo-trailing-bin");

/// The header that makes a response "trailers-only" when it is in the headers.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Wraps a tonic server so it echoes the interop test metadata; the gRPC
/// service name stays the inner server's.
#[derive(Debug, Clone)]
pub(crate) struct EchoMetadata<S> {
    inner: S,
}

impl<S> EchoMetadata<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for EchoMetadata<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for EchoMetadata<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let initial = request.headers().get(ECHO_INITIAL).cloned();
        let trailing = request.headers().get(ECHO_TRAILING).cloned();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(echo(response, initial, trailing))
        })
    }
}

/// Puts `initial` in the headers of `response` and `trailing` in its
/// trailers. A trailers-only response (its status already in the headers,
/// as tonic answers an error before any message) has no trailers to come:
/// `trailing` goes in its headers then.
fn echo(
    mut response: http::Response<Body>,
    initial: Option<HeaderValue>,
    trailing: Option<HeaderValue>,
) -> http::Response<Body> {
    if let Some(value) = initial {
        response.headers_mut().insert(ECHO_INITIAL, value);
    }
    let Some(value) = trailing else {
        return response;
    };
    if response.headers().contains_key(GRPC_STATUS) {
        response.headers_mut().insert(ECHO_TRAILING, value);
        return response;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert(ECHO_TRAILING, value);
    response.map(|body| Body::new(body.with_trailers(ready(Some(Ok::<_, Status>(trailers))))))
}
