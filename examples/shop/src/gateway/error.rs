//! [`ApiError`]: how the gateway answers when a call fails, always as
//! `application/problem+json`.
//!
//! gRPC codes from the services become HTTP statuses through the framework's
//! [`ErrorKind`] table (`INVALID_ARGUMENT` 400, `UNAUTHENTICATED` 401,
//! `PERMISSION_DENIED` 403, `NOT_FOUND` 404, `ALREADY_EXISTS` 409,
//! `RESOURCE_EXHAUSTED` 429, `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504);
//! an `INVALID_ARGUMENT` carrying a `google.rpc.BadRequest` becomes `422`
//! with its field errors, and every `401` says `WWW-Authenticate: Bearer`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header::WWW_AUTHENTICATE};
use room619::{Error, ErrorKind, middleware::validation::Invalid};

/// A failed gateway call.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Answered as the error's problem document.
    Error(Error),
    /// Field errors: `422` with an `errors` list.
    Invalid(Invalid),
}

impl ApiError {
    /// The answer to `status` from the service called `service`.
    ///
    /// Unexpected failures (`INTERNAL`, `UNKNOWN`, `DATA_LOSS`), a service
    /// out of reach (`UNAVAILABLE`: no instance, its breaker open, its
    /// database down) and one too slow (`DEADLINE_EXCEEDED`) are logged with
    /// the peer's message and answered with a generic one, so that what is
    /// behind the gateway (addresses, discovery, databases) does not reach
    /// the caller.
    pub(crate) fn from_status(service: &str, status: tonic::Status) -> Self {
        if let Some(invalid) = Invalid::from_status(&status) {
            return Self::Invalid(invalid);
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
        ErrorKind::Unavailable => {
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
            Self::Error(error) => {
                let unauthenticated = error.kind() == ErrorKind::Unauthenticated;
                let mut response = error.into_response();
                if unauthenticated {
                    response.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"shop\""),
                    );
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
                tonic::Code::ResourceExhausted,
                StatusCode::TOO_MANY_REQUESTS,
            ),
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
        }
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
