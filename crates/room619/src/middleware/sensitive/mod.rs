//! [`SensitiveHeadersLayer`]: marks credentials in requests and responses
//! as sensitive, so `Debug` output (logs, traces) shows `Sensitive` instead of
//! the value.
//!
//! Marked by default: `authorization`, `proxy-authorization`, `cookie`,
//! `set-cookie` and `x-api-key`. room619 itself never logs header values;
//! the marking protects against layers and handlers that log a whole request.
//!
//! ```
//! use room619::middleware::SensitiveHeadersLayer;
//! use tower::{Layer as _, ServiceExt as _, service_fn};
//!
//! # async fn demo() {
//! let svc = SensitiveHeadersLayer::new().layer(service_fn(|req: http::Request<()>| async move {
//!     assert!(req.headers()["authorization"].is_sensitive());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let req = http::Request::builder().header("authorization", "Bearer x").body(()).unwrap();
//! svc.oneshot(req).await.unwrap();
//! # }
//! ```

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderName, Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Marks credential headers sensitive, both ways.
#[derive(Debug, Clone, Copy, Default)]
pub struct SensitiveHeadersLayer {
    _private: (),
}

impl SensitiveHeadersLayer {
    /// The layer; the header list is fixed (see the module docs).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for SensitiveHeadersLayer {
    type Service = SensitiveHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SensitiveHeaders { inner }
    }
}

/// The service of [`SensitiveHeadersLayer`].
#[derive(Debug, Clone)]
pub struct SensitiveHeaders<S> {
    inner: S,
}

/// Marks the credential headers of `headers` sensitive.
pub fn mark_sensitive(headers: &mut HeaderMap) {
    let names = [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::SET_COOKIE,
        HeaderName::from_static(API_KEY_HEADER),
    ];
    for name in &names {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SensitiveHeaders<S>
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
        mark_sensitive(request.headers_mut());
        ResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`SensitiveHeaders`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        mark_sensitive(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}
