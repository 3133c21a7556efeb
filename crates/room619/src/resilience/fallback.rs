//! Graceful degradation: a fallback answer when a dependency is unavailable,
//! overloaded or too slow, chosen per call by the caller.
//!
//! A fallback applies to the failures that say "not now" rather than "no":
//! `UNAVAILABLE` (breaker open, no instance, connection lost),
//! `RESOURCE_EXHAUSTED` (bulkhead full) and `DEADLINE_EXCEEDED`. Other errors
//! (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) pass through unchanged.
//!
//! ```
//! use room619::resilience::fallback::Degrade as _;
//! use tonic::Status;
//!
//! let recommendations: Result<Vec<String>, Status> = Err(Status::unavailable("breaker open"));
//! // Show no recommendations rather than fail the whole page.
//! let shown = recommendations.or_fallback(Vec::new());
//! assert_eq!(shown.unwrap(), Vec::<String>::new());
//!
//! let missing: Result<Vec<String>, Status> = Err(Status::not_found("no such user"));
//! assert!(missing.or_fallback(Vec::new()).is_err());
//! ```

use tonic::{Code, Status};

use crate::{Error, ErrorKind};

/// Whether a failure is one a fallback may hide.
pub trait Degradable {
    /// `true` for unavailable, overloaded and timed-out calls.
    fn is_degradable(&self) -> bool;
}

impl Degradable for Status {
    fn is_degradable(&self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        )
    }
}

impl Degradable for Error {
    fn is_degradable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::ResourceExhausted | ErrorKind::DeadlineExceeded
        )
    }
}

/// Fallbacks on a call's result.
pub trait Degrade<T, E> {
    /// `value` instead of a degradable failure.
    ///
    /// # Errors
    ///
    /// Failures that are not degradable, unchanged.
    fn or_fallback(self, value: T) -> Result<T, E>;

    /// The closure's answer instead of a degradable failure (it sees the
    /// failure, e.g. to log it).
    ///
    /// # Errors
    ///
    /// Failures that are not degradable, unchanged.
    fn or_fallback_with(self, fallback: impl FnOnce(&E) -> T) -> Result<T, E>;
}

impl<T, E: Degradable> Degrade<T, E> for Result<T, E> {
    fn or_fallback(self, value: T) -> Result<T, E> {
        self.or_fallback_with(|_| value)
    }

    fn or_fallback_with(self, fallback: impl FnOnce(&E) -> T) -> Result<T, E> {
        match self {
            Err(error) if error.is_degradable() => {
                tracing::info!("dependency degraded; using the fallback");
                Ok(fallback(&error))
            }
            other => other,
        }
    }
}
