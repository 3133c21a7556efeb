//! Helpers the resilience layers' unit tests share.

use std::fmt::Debug;

use axum::body::Body;
use http::{Method, Request, Response};
use tower::{Service, ServiceExt as _};

/// A gRPC request for `path`.
pub(super) fn grpc(path: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/grpc")
        .body(Body::from("message"))
        .unwrap()
}

/// Calls `service` once with a gRPC request for `path`, once it is ready.
pub(super) async fn call<S>(service: &mut S, path: &str) -> Response<()>
where
    S: Service<Request<Body>, Response = Response<()>>,
    S::Error: Debug,
{
    service
        .ready()
        .await
        .unwrap()
        .call(grpc(path))
        .await
        .unwrap()
}
