//! Answers a middleware gives instead of calling the handler, in the
//! caller's protocol: a trailers-only gRPC status, or problem+json.

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Request};

use crate::{Error, rpc::is_grpc};

/// Which protocol a rejected request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        if is_grpc(request) {
            Self::Grpc
        } else {
            Self::Http
        }
    }

    /// `err` as this protocol's answer, with `headers` added (for example
    /// `www-authenticate` or `retry-after`).
    pub(crate) fn reject(self, err: Error, headers: &[(HeaderName, HeaderValue)]) -> Response {
        let mut response = match self {
            Self::Grpc => tonic::Status::from(err).into_http::<axum::body::Body>(),
            Self::Http => err.into_response(),
        };
        for (name, value) in headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }
}
