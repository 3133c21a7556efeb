//! [`ApiError`]: how the gateway answers when a call fails, always as
//! `application/problem+json`.
//!
//! gRPC codes from the services become HTTP statuses through the framework's
//! [`ErrorKind`] table (`INVALID_ARGUMENT` 400, `UNAUTHENTICATED` 401,
//! `PERMISSION_DENIED` 403, `NOT_FOUND` 404, `ALREADY_EXISTS` 409,
//! `FAILED_PRECONDITION` 412, `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504);
//! an `INVALID_ARGUMENT` carrying a `google.rpc.BadRequest` becomes `422`
//! with its field errors, and every `401` says `WWW-Authenticate: Bearer`.
//! A `RESOURCE_EXHAUSTED` is `429` only when it is a rate limit's, which
//! says when to retry (`retry-after`); any other (a client bulkhead full, a
//! service out of room) is the gateway's trouble, not the caller's, and is
//! `503` as is a `CANCELLED` from a service. Every `503` says
//! `Retry-After: 1`.

use axum::response::{IntoResponse, Response};
use http::{
    HeaderValue,
    header::{RETRY_AFTER, WWW_AUTHENTICATE},
};
use room619::{Error, ErrorKind, middleware::validation::Invalid};

/// A failed gateway call.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Answered as the error's problem document.
    Error(Error),
    /// Field errors: `422` with an `errors` list.
    Invalid(Invalid),
    /// A service's rate limit: `429` with `Retry-After` in this many seconds.
    Limited(u64),
}

impl ApiError {
    /// The answer to `status` from the service called `service`.
    ///
    /// Unexpected failures (`INTERNAL`, `UNKNOWN`, `DATA_LOSS`), a service
    /// out of reach (`UNAVAILABLE`: no instance, its breaker open, its
    /// database down; or `RESOURCE_EXHAUSTED` other than a rate limit's, such
    /// as the framework's client bulkhead full; or `CANCELLED`) and one too
    /// slow (`DEADLINE_EXCEEDED`) are logged with the peer's message and
    /// answered with a generic one, so that what is behind the gateway
    /// (addresses, discovery, databases, limits) does not reach the caller.
    pub(crate) fn from_status(service: &str, status: tonic::Status) -> Self {
        if let Some(invalid) = Invalid::from_status(&status) {
            return Self::Invalid(invalid);
        }
        if let Some(seconds) = rate_limited(&status) {
            return Self::Limited(seconds);
        }
        Self::Error(generic(Some(service), Error::from(status)))
    }

    /// The answer to `error` in reaching the service called `service`.
    pub(crate) fn reaching(service: &str, error: Error) -> Self {
        Self::Error(generic(Some(service), error))
    }

    /// A `400` for input that could not be read.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::Error(Error::invalid_argument(message.into()))
    }

    /// A `401`: no usable bearer token.
    pub(crate) fn unauthenticated(message: &'static str) -> Self {
        Self::Error(Error::unauthenticated(message))
    }
}

impl From<Error> for ApiError {
    /// The gateway's own errors: reaching a service (`UNAVAILABLE`) and the
    /// unexpected are answered generically, as in [`ApiError::from_status`].
    fn from(error: Error) -> Self {
        Self::Error(generic(None, error))
    }
}

/// The seconds to wait of a `RESOURCE_EXHAUSTED` that is a rate limit's: the
/// framework's rate limits answer with a `retry-after` (whole seconds), for
/// a caller (their token, their address) over their share; other
/// exhaustions (a bulkhead, a queue) say nothing of when to come back.
fn rate_limited(status: &tonic::Status) -> Option<u64> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let seconds = status.metadata().get("retry-after")?.to_str().ok()?;
    seconds
        .trim()
        .parse::<u64>()
        .ok()
        .map(|seconds| seconds.max(1))
}

/// `error` from `service` (the gateway's own with none), with a message of
/// its own when its message is for operators, not callers (logged).
fn generic(service: Option<&str>, error: Error) -> Error {
    let what = service.map_or_else(
        || "a service the gateway needs".to_owned(),
        |service| format!("the {service} service"),
    );
    match error.kind() {
        ErrorKind::Internal => {
            tracing::error!(service, error = ?error, "a call failed");
            Error::internal(match service {
                None => "the gateway failed".to_owned(),
                Some(_) => format!("{what} failed"),
            })
        }
        // A bulkhead full, a service out of room (not a rate limit of the
        // caller's: see `rate_limited`), or a call cut short: for the
        // caller, a service that cannot take the call now.
        ErrorKind::Unavailable | ErrorKind::ResourceExhausted | ErrorKind::Cancelled => {
            tracing::warn!(service, error = ?error, "a service is unavailable");
            Error::unavailable(format!("{what} is unavailable; retry shortly"))
        }
        ErrorKind::DeadlineExceeded => {
            tracing::warn!(service, error = ?error, "a service missed the deadline");
            Error::deadline_exceeded(format!("{what} did not answer in time"))
        }
        _ => error,
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::Invalid(invalid)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(invalid) => invalid.into_response(),
            Self::Limited(seconds) => {
                let error =
                    Error::resource_exhausted(format!("rate limit exceeded; retry in {seconds}s"));
                let mut response = error.into_response();
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
                response
            }
            Self::Error(error) => {
                let kind = error.kind();
                let mut response = error.into_response();
                let header = match kind {
                    ErrorKind::Unauthenticated => Some((
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"shop\""),
                    )),
                    // Soon: what is unavailable is so for a moment (a
                    // restart, a breaker's cool-down, a full bulkhead).
                    ErrorKind::Unavailable => Some((RETRY_AFTER, HeaderValue::from_static("1"))),
                    _ => None,
                };
                if let Some((name, value)) = header {
                    response.headers_mut().insert(name, value);
                }
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use room619::middleware::validation::FieldViolation;

    use super::*;

    fn answer(status: tonic::Status) -> Response {
        ApiError::from_status("users", status).into_response()
    }

    #[test]
    fn grpc_codes_become_their_http_statuses() {
        let cases = [
            (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (tonic::Code::Unauthenticated, StatusCode::UNAUTHORIZED),
            (tonic::Code::PermissionDenied, StatusCode::FORBIDDEN),
            (tonic::Code::NotFound, StatusCode::NOT_FOUND),
            (tonic::Code::AlreadyExists, StatusCode::CONFLICT),
            (
                tonic::Code::FailedPrecondition,
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                tonic::Code::ResourceExhausted,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (tonic::Code::Cancelled, StatusCode::SERVICE_UNAVAILABLE),
            (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (tonic::Code::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            (tonic::Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (code, expected) in cases {
            let response = answer(tonic::Status::new(code, "x"));
            assert_eq!(response.status(), expected, "{code:?}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            assert_eq!(
                response.headers().contains_key(WWW_AUTHENTICATE),
                expected == StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                response
                    .headers()
                    .get(RETRY_AFTER)
                    .map(HeaderValue::as_bytes),
                (expected == StatusCode::SERVICE_UNAVAILABLE).then_some(b"1".as_slice()),
                "{code:?}"
            );
        }
    }

    /// The framework's client bulkhead refuses with `RESOURCE_EXHAUSTED`
    /// naming the service and its limits: the caller gets a `503` that says
    /// neither, as for any service out of reach.
    #[tokio::test]
    async fn a_full_bulkhead_is_a_service_unavailable_not_the_callers_limit() {
        let bulkhead = room619::resilience::Rejection::bulkhead_full("products", 256, 0);
        let response = answer(bulkhead.status().clone());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("the users service is unavailable; retry shortly"),
            "{body}"
        );
        assert!(
            !body.contains("bulkhead") && !body.contains("256"),
            "{body}"
        );
    }

    /// A service's rate limit (its `RESOURCE_EXHAUSTED` says when to retry)
    /// is the caller's: `429` with that `Retry-After`.
    #[test]
    fn a_services_rate_limit_stays_429_with_its_retry_after() {
        let mut limited = tonic::Status::resource_exhausted("rate limit exceeded; retry in 7s");
        limited
            .metadata_mut()
            .insert("retry-after", tonic::metadata::MetadataValue::from(7_u64));
        let response = answer(limited);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }

    #[test]
    fn field_violations_become_422() {
        let status = tonic::Status::from(Invalid::new(vec![FieldViolation {
            field: "name".to_owned(),
            detail: "too long".to_owned(),
        }]));
        assert_eq!(answer(status).status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
