//! What counts as a failure: the outcome of a call as the breaker and the
//! retry see it.

use http::Response;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::{Rejection, RejectionKind};
use crate::error::BoxError;

/// Which outcomes count as failures.
///
/// Default: gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`; every HTTP
/// 5xx; every transport error. Never `INVALID_ARGUMENT` or a 4xx: those are
/// the caller's fault, and a backend that rejects bad input is healthy. Nor
/// `RESOURCE_EXHAUSTED`: servers answer it to one caller's excess (a rate
/// limit per user or IP, a message over the size limit; over HTTP the same
/// are 429 and 413), and counting it would let one caller open the breaker
/// for every other; a room619 server sheds load with `UNAVAILABLE`. Add it to
/// `grpc_codes` for a backend that answers overload with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailurePolicy {
    /// gRPC codes, by their canonical names (`"UNAVAILABLE"`), that are failures.
    pub grpc_codes: Vec<String>,
    /// Whether HTTP 5xx answers are failures. Default: true.
    pub http_5xx: bool,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            grpc_codes: ["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"]
                .map(str::to_owned)
                .to_vec(),
            http_5xx: true,
        }
    }
}

/// A call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It worked, or failed for a reason that says nothing about the backend.
    Success,
    /// It failed in a way that counts against the backend, with the gRPC
    /// code when there is one.
    Failure(Option<Code>),
}

impl FailurePolicy {
    /// Whether `code` counts as a failure.
    #[must_use]
    pub fn is_failure_code(&self, code: Code) -> bool {
        self.grpc_codes
            .iter()
            .any(|name| code_from_name(name) == Some(code))
    }

    /// Classifies a response by its headers: `grpc-status` when present
    /// (a trailers-only gRPC answer), the HTTP status otherwise.
    ///
    /// A gRPC error sent in trailers after messages (mid-stream) is not seen
    /// here; it counts as a success.
    #[must_use]
    pub fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        if let Some(code) = grpc_code(response) {
            return if code != Code::Ok && self.is_failure_code(code) {
                Outcome::Failure(Some(code))
            } else {
                Outcome::Success
            };
        }
        if self.http_5xx && response.status().is_server_error() {
            Outcome::Failure(None)
        } else {
            Outcome::Success
        }
    }

    /// Classifies an error from the transport (or a layer below): a gRPC
    /// status in its chain decides; any other error is a failure.
    #[must_use]
    pub fn classify_error(&self, error: &BoxError) -> Outcome {
        match status_in(error) {
            Some(code) if !self.is_failure_code(code) => Outcome::Success,
            code => Outcome::Failure(code),
        }
    }
}

/// The gRPC code in a response's headers (a trailers-only answer), if it has
/// one; `UNKNOWN` when it cannot be read.
fn grpc_code<B>(response: &Response<B>) -> Option<Code> {
    let status = response.headers().get(crate::rpc::grpc::GRPC_STATUS)?;
    Some(
        status
            .to_str()
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32),
    )
}

/// Whether a call's outcome says it ran out of its caller's time: a
/// `DEADLINE_EXCEEDED` answer or an HTTP 504, or an error carrying
/// `DEADLINE_EXCEEDED` or tonic's own `grpc-timeout` expiry. Not an attempt
/// cut by the retry layer's `attempt_timeout`: that bound is the policy's,
/// not the caller's.
pub(crate) fn ran_out_of_time<B>(result: &Result<Response<B>, BoxError>) -> bool {
    match result {
        Ok(response) => match grpc_code(response) {
            Some(code) => code == Code::DeadlineExceeded,
            None => response.status() == http::StatusCode::GATEWAY_TIMEOUT,
        },
        Err(error) => {
            let attempt_timeout = error
                .downcast_ref::<Rejection>()
                .is_some_and(|rejection| rejection.kind() == RejectionKind::AttemptTimeout);
            !attempt_timeout
                && (status_in(error) == Some(Code::DeadlineExceeded) || timeout_expired_in(error))
        }
    }
}

/// Whether tonic's channel cut the call at its `grpc-timeout`
/// (`tonic::TimeoutExpired` in the error's chain).
fn timeout_expired_in(error: &BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The gRPC code of the first `tonic::Status` in an error's chain.
#[must_use]
pub fn status_in(error: &BoxError) -> Option<Code> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(err) = source {
        if let Some(status) = err.downcast_ref::<tonic::Status>() {
            return Some(status.code());
        }
        source = err.source();
    }
    None
}

/// The gRPC codes by their canonical names, in code order.
const CODE_NAMES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

/// The code for a canonical name such as `UNAVAILABLE` (case-insensitive).
#[must_use]
pub fn code_from_name(name: &str) -> Option<Code> {
    CODE_NAMES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, code)| *code)
}

/// The canonical name of a gRPC code number (`14` → `UNAVAILABLE`);
/// `UNKNOWN` for a number no code has.
///
/// ```
/// assert_eq!(room619::resilience::code_name(14), "UNAVAILABLE");
/// assert_eq!(room619::resilience::code_name(99), "UNKNOWN");
/// ```
#[must_use]
pub fn code_name(code: i64) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|index| CODE_NAMES.get(index))
        .map_or("UNKNOWN", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(code: Code) -> Response<()> {
        Response::builder()
            .header("grpc-status", (code as i32).to_string())
            .body(())
            .unwrap()
    }

    #[test]
    fn code_names_are_in_code_order() {
        for (index, (name, code)) in CODE_NAMES.iter().enumerate() {
            assert_eq!(*code as usize, index, "{name}");
            assert_eq!(code_from_name(&name.to_ascii_lowercase()), Some(*code));
            assert_eq!(code_name(*code as i64), *name);
        }
        assert_eq!(code_name(-1), "UNKNOWN");
        assert_eq!(code_from_name("NOPE"), None);
    }

    #[test]
    fn default_failures_follow_the_issue() {
        let policy = FailurePolicy::default();
        assert_eq!(
            policy.classify_response(&grpc(Code::Unavailable)),
            Outcome::Failure(Some(Code::Unavailable))
        );
        assert_eq!(
            policy.classify_response(&grpc(Code::InvalidArgument)),
            Outcome::Success
        );
        // One caller's rate limit or oversized message: not the backend's fault.
        assert_eq!(
            policy.classify_response(&grpc(Code::ResourceExhausted)),
            Outcome::Success
        );
        assert_eq!(policy.classify_response(&grpc(Code::Ok)), Outcome::Success);
        let server_error = Response::builder().status(503).body(()).unwrap();
        assert_eq!(
            policy.classify_response(&server_error),
            Outcome::Failure(None)
        );
        let client_error = Response::builder().status(404).body(()).unwrap();
        assert_eq!(policy.classify_response(&client_error), Outcome::Success);
    }

    #[test]
    fn errors_are_failures_unless_their_status_says_otherwise() {
        let policy = FailurePolicy::default();
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(policy.classify_error(&refused), Outcome::Failure(None));
        let invalid: BoxError = Box::new(tonic::Status::invalid_argument("bad"));
        assert_eq!(policy.classify_error(&invalid), Outcome::Success);
    }

    #[test]
    fn running_out_of_time_is_told_apart_from_other_failures() {
        let answered = |response: Response<()>| ran_out_of_time(&Ok(response));
        assert!(answered(grpc(Code::DeadlineExceeded)));
        assert!(!answered(grpc(Code::Unavailable)));
        assert!(answered(Response::builder().status(504).body(()).unwrap()));
        assert!(!answered(Response::builder().status(503).body(()).unwrap()));
        let failed = |error: BoxError| ran_out_of_time::<()>(&Err(error));
        assert!(failed(Box::new(tonic::Status::deadline_exceeded("late"))));
        assert!(failed(Box::new(tonic::TimeoutExpired(()))));
        assert!(!failed(Box::new(tonic::Status::unavailable("down"))));
        assert!(!failed(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        // The retry layer's own attempt timeout is the policy's bound.
        assert!(!failed(Box::new(Rejection::attempt_timeout(
            "users",
            std::time::Duration::from_millis(100)
        ))));
    }

    #[test]
    fn every_canonical_name_parses() {
        for code in 0..17 {
            let code = Code::from_i32(code);
            let name = format!("{code:?}");
            let snake: String = name
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter()
                        .chain(std::iter::once(c.to_ascii_uppercase()))
                })
                .collect();
            assert_eq!(code_from_name(&snake), Some(code), "{snake}");
        }
    }
}
