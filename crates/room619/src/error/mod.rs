//! One error type for the whole framework, mapped to the wire at one edge.
//!
//! An [`Error`] carries an [`ErrorKind`], a message meant for the caller and an
//! optional source kept for logs. The kind decides how the error leaves the
//! process: as a gRPC [`tonic::Status`] with the matching [`tonic::Code`], or as
//! an HTTP response with the matching status and an RFC 9457
//! `application/problem+json` body (see [`Problem`]).
//!
//! ```
//! use room619::error::{Error, ErrorKind};
//!
//! let err = Error::not_found("no user with id 42");
//! assert_eq!(err.kind(), ErrorKind::NotFound);
//! assert_eq!(err.kind().grpc_code(), tonic::Code::NotFound);
//! assert_eq!(err.kind().http_status(), http::StatusCode::NOT_FOUND);
//! ```

mod kind;
mod problem;

use std::{borrow::Cow, error::Error as StdError, fmt};

pub use kind::ErrorKind;
pub use problem::{PROBLEM_JSON, Problem};

/// A boxed error source, as kept inside [`Error`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The result type of room619's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure with a kind that knows its gRPC code and HTTP status.
///
/// The message is shown to callers (as the gRPC status message or the
/// problem's `detail`), so it says what was wrong without internal details; the
/// source, if any, is only logged.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` with a message for the caller.
    #[must_use]
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause; it is logged, never sent to the caller.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message meant for the caller.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs this error where it is answered, if it is the server's own
    /// failure ([`ErrorKind::is_server_fault`]): as an error with its
    /// source. A refusal (`Unavailable` from load shedding, an expired
    /// deadline) is logged at debug only, with its source if it has one:
    /// under load there is one a request.
    fn log_answered(&self) {
        if self.kind.is_server_fault() {
            tracing::error!(error = ?self, "request failed");
        } else if self.kind.http_status().is_server_error() {
            tracing::debug!(error = ?self, "request refused");
        }
    }

    /// This error as an RFC 9457 problem document.
    #[must_use]
    pub fn to_problem(&self) -> Problem {
        Problem::new(self.kind.http_status(), self.message.clone())
    }
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident,)*) => {
        impl Error {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(message: impl Into<Cow<'static, str>>) -> Self {
                    Self::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}

constructors! {
    /// The request was malformed or failed validation.
    invalid_argument => InvalidArgument,
    /// The addressed resource does not exist.
    not_found => NotFound,
    /// The resource to be created exists already.
    already_exists => AlreadyExists,
    /// The caller is known but may not do this.
    permission_denied => PermissionDenied,
    /// The caller did not prove who it is.
    unauthenticated => Unauthenticated,
    /// A limit or quota was reached.
    resource_exhausted => ResourceExhausted,
    /// The request body is larger than the configured limit.
    payload_too_large => PayloadTooLarge,
    /// The body's media type is not one the route reads.
    unsupported_media_type => UnsupportedMediaType,
    /// No media type the caller accepts can be produced.
    not_acceptable => NotAcceptable,
    /// The system is not in a state that allows the operation.
    failed_precondition => FailedPrecondition,
    /// A concurrency conflict (a transaction lost a race); retrying the
    /// whole operation may succeed.
    aborted => Aborted,
    /// The caller gave up on the operation.
    cancelled => Cancelled,
    /// The service is temporarily unable to answer; retrying may help.
    unavailable => Unavailable,
    /// The deadline passed before the operation finished.
    deadline_exceeded => DeadlineExceeded,
    /// The operation is not implemented or not routed.
    unimplemented => Unimplemented,
    /// A bug or an unexpected failure inside the server.
    internal => Internal,
    /// The configuration is invalid.
    config => Config,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// The status a gRPC handler answers with: the kind's code and the message.
/// The source is not sent; a server fault is logged with it here, as an
/// HTTP answer is in `into_response`.
impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        err.log_answered();
        tonic::Status::new(err.kind.grpc_code(), err.message)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let kind = ErrorKind::from_grpc_code(status.code());
        Error::new(kind, status.message().to_owned()).with_source(status)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::internal("i/o failure").with_source(err)
    }
}

/// The answer is problem+json; a `401` also carries the challenge
/// `WWW-Authenticate: Bearer` (RFC 9110 §15.5.2 asks one of every `401`),
/// which a caller may replace with its own (`Bearer error="invalid_token"`,
/// a realm) by inserting the header afterwards.
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        self.log_answered();
        let mut response = axum::response::IntoResponse::into_response(self.to_problem());
        if response.status() == http::StatusCode::UNAUTHORIZED
            && !response
                .headers()
                .contains_key(http::header::WWW_AUTHENTICATE)
        {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_code_and_message() {
        let status = tonic::Status::from(Error::resource_exhausted("too many"));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "too many");
    }

    #[test]
    fn status_round_trips_to_the_same_kind() {
        let err = Error::from(tonic::Status::unavailable("down"));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.message(), "down");
        assert!(StdError::source(&err).is_some());
    }

    /// RFC 9110 §15.5.2: every `401` carries a challenge; no other answer
    /// does.
    #[test]
    fn a_401_answer_carries_a_bearer_challenge() {
        use axum::response::IntoResponse as _;

        let response = Error::unauthenticated("who are you").into_response();
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[http::header::WWW_AUTHENTICATE], "Bearer");
        for err in [
            Error::permission_denied("not you"),
            Error::not_found("nothing"),
        ] {
            let response = err.into_response();
            assert!(
                !response
                    .headers()
                    .contains_key(http::header::WWW_AUTHENTICATE),
                "{}",
                response.status()
            );
        }
    }

    #[test]
    fn display_names_the_kind_and_message() {
        assert_eq!(
            Error::not_found("no such user").to_string(),
            "Not Found: no such user"
        );
    }
}
