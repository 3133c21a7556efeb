//! [`ErrorKind`] and its mapping to gRPC codes and HTTP statuses.

use http::StatusCode;
use tonic::Code;

/// What went wrong, independent of the protocol that reports it.
///
/// Each kind maps to exactly one gRPC code and one HTTP status; the table is
/// the one in `docs/ARCHITECTURE.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Malformed or invalid input: `INVALID_ARGUMENT` / 400.
    InvalidArgument,
    /// No such resource or route: `NOT_FOUND` / 404.
    NotFound,
    /// The resource exists already: `ALREADY_EXISTS` / 409.
    AlreadyExists,
    /// Authenticated but not allowed: `PERMISSION_DENIED` / 403.
    PermissionDenied,
    /// Missing or invalid credentials: `UNAUTHENTICATED` / 401.
    Unauthenticated,
    /// A limit, quota or concurrency bound was hit: `RESOURCE_EXHAUSTED` / 429.
    ResourceExhausted,
    /// The body exceeds the configured limit: `RESOURCE_EXHAUSTED` / 413.
    PayloadTooLarge,
    /// The body's media type is not one the route reads: `INVALID_ARGUMENT` / 415.
    UnsupportedMediaType,
    /// No media type the caller accepts can be produced: `INVALID_ARGUMENT` / 406.
    NotAcceptable,
    /// The operation is not allowed in the current state: `FAILED_PRECONDITION` / 412.
    FailedPrecondition,
    /// Concurrency conflict: `ABORTED` / 409.
    Aborted,
    /// Temporarily unable to serve: `UNAVAILABLE` / 503.
    Unavailable,
    /// The deadline passed: `DEADLINE_EXCEEDED` / 504.
    DeadlineExceeded,
    /// The caller gave up: `CANCELLED` / 499.
    Cancelled,
    /// Not implemented or not routed: `UNIMPLEMENTED` / 501.
    Unimplemented,
    /// Unexpected server failure: `INTERNAL` / 500.
    Internal,
    /// Invalid configuration, a server-side mistake: `INTERNAL` / 500.
    Config,
}

impl ErrorKind {
    /// The gRPC status code this kind is reported with.
    #[must_use]
    pub fn grpc_code(self) -> Code {
        match self {
            Self::InvalidArgument | Self::UnsupportedMediaType | Self::NotAcceptable => {
                Code::InvalidArgument
            }
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::ResourceExhausted | Self::PayloadTooLarge => Code::ResourceExhausted,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Aborted => Code::Aborted,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal | Self::Config => Code::Internal,
        }
    }

    /// Whether an error of this kind is the server's own failure, logged as
    /// an error where it is answered (`Internal`, `Config`). The other
    /// server-side kinds (`Unavailable`, `DeadlineExceeded`,
    /// `Unimplemented`) are answers, often under load, and are not.
    #[must_use]
    pub fn is_server_fault(self) -> bool {
        matches!(self, Self::Internal | Self::Config)
    }

    /// The HTTP status this kind is reported with.
    #[must_use]
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            // 499 is nginx's "client closed request"; it is a valid status code.
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Internal | Self::Config => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short human-readable title, used as the problem's `title`.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidArgument => "Invalid Argument",
            Self::NotFound => "Not Found",
            Self::AlreadyExists => "Already Exists",
            Self::PermissionDenied => "Permission Denied",
            Self::Unauthenticated => "Unauthenticated",
            Self::ResourceExhausted => "Resource Exhausted",
            Self::PayloadTooLarge => "Payload Too Large",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::NotAcceptable => "Not Acceptable",
            Self::FailedPrecondition => "Failed Precondition",
            Self::Aborted => "Aborted",
            Self::Unavailable => "Unavailable",
            Self::DeadlineExceeded => "Deadline Exceeded",
            Self::Cancelled => "Cancelled",
            Self::Unimplemented => "Unimplemented",
            Self::Internal => "Internal Error",
            Self::Config => "Invalid Configuration",
        }
    }

    /// The kind a gRPC code stands for, for errors that arrive from a peer.
    #[must_use]
    pub fn from_grpc_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Aborted => Self::Aborted,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Cancelled => Self::Cancelled,
            Code::Unimplemented => Self::Unimplemented,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => Self::Internal,
        }
    }

    /// The kind an HTTP error status stands for. A `409` is taken as
    /// `AlreadyExists` (room619 answers `Aborted` with `409` too: the two
    /// cannot be told apart); a client error without a kind of its own
    /// (`414`, `418`...) is `InvalidArgument`, the request's fault (but
    /// `421` and `425`, `Unavailable`: another try may do), and
    /// only server errors without one are `Internal`.
    #[must_use]
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            406 => Self::NotAcceptable,
            415 => Self::UnsupportedMediaType,
            401 | 407 => Self::Unauthenticated,
            403 | 451 => Self::PermissionDenied,
            404 | 410 => Self::NotFound,
            409 => Self::AlreadyExists,
            412 | 428 => Self::FailedPrecondition,
            413 => Self::PayloadTooLarge,
            429 => Self::ResourceExhausted,
            499 => Self::Cancelled,
            501 => Self::Unimplemented,
            // Sent to the wrong server, or too early: another try may do.
            421 | 425 | 502..=503 => Self::Unavailable,
            408 | 504 => Self::DeadlineExceeded,
            400..=499 => Self::InvalidArgument,
            _ => Self::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 17] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::PermissionDenied,
        ErrorKind::Unauthenticated,
        ErrorKind::ResourceExhausted,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::NotAcceptable,
        ErrorKind::FailedPrecondition,
        ErrorKind::Aborted,
        ErrorKind::Unavailable,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Cancelled,
        ErrorKind::Unimplemented,
        ErrorKind::Internal,
        ErrorKind::Config,
    ];

    #[test]
    fn every_kind_maps_to_an_error_status() {
        for kind in ALL {
            let status = kind.http_status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{kind:?}"
            );
            assert_ne!(kind.grpc_code(), Code::Ok, "{kind:?}");
        }
    }

    #[test]
    fn grpc_codes_round_trip_for_protocol_kinds() {
        for kind in ALL {
            if matches!(
                kind,
                ErrorKind::PayloadTooLarge
                    | ErrorKind::Config
                    | ErrorKind::UnsupportedMediaType
                    | ErrorKind::NotAcceptable
            ) {
                continue;
            }
            assert_eq!(ErrorKind::from_grpc_code(kind.grpc_code()), kind);
        }
    }

    /// A client error without a kind of its own used to be `Internal`
    /// (logged as the server's failure, answered `500` by a gateway).
    #[test]
    fn client_errors_stay_client_errors() {
        // 408: the peer gave up waiting, read as an exceeded deadline; 421
        // and 425: the request was fine, and another try may do.
        for status in (400..=499).filter(|status| ![408, 421, 425].contains(status)) {
            let status = StatusCode::from_u16(status).unwrap();
            let kind = ErrorKind::from_http_status(status);
            assert!(kind.http_status().is_client_error(), "{status}: {kind:?}");
        }
        assert_eq!(
            ErrorKind::from_http_status(StatusCode::GONE),
            ErrorKind::NotFound
        );
        assert_eq!(
            ErrorKind::from_http_status(StatusCode::INTERNAL_SERVER_ERROR),
            ErrorKind::Internal
        );
    }

    #[test]
    fn cancelled_is_499() {
        assert_eq!(ErrorKind::Cancelled.http_status().as_u16(), 499);
    }
}
