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

/// The header carrying an API key, as a [`HeaderName`].
const API_KEY: HeaderName = HeaderName::from_static(API_KEY_HEADER);

/// Marks the credential headers of `headers` sensitive.
///
/// One pass over the headers (a request carries a handful): cheaper than a
/// hashed lookup per credential name, and it runs on every request and
/// every answer.
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if is_credential(name) {
            value.set_sensitive(true);
        }
    }
}

fn is_credential(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::COOKIE
        || name == header::SET_COOKIE
        || name == API_KEY
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn every_value_of_every_credential_header_is_marked_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("c=3"));
        headers.insert("X-Api-Key", HeaderValue::from_static("k"));
        headers.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("p"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert("x-request-id", HeaderValue::from_static("r"));
        mark_sensitive(&mut headers);
        for (name, value) in &headers {
            let credential = name != header::CONTENT_TYPE && name != "x-request-id";
            assert_eq!(value.is_sensitive(), credential, "{name}");
        }
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 2);
    }
}
