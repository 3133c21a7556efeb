//! [`Rejection`]: a call a resilience layer refused or cut short.

use std::fmt;

use tonic::Status;

use crate::{Error, ErrorKind};

/// Why a call was refused without reaching the backend (or cut short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The circuit breaker is open.
    BreakerOpen,
    /// The bulkhead's slots and queue are full.
    BulkheadFull,
    /// An attempt took longer than its timeout.
    AttemptTimeout,
    /// No instance of the service is left to call (every one left
    /// discovery, or stopped serving).
    NoInstances,
}

/// A call refused by a resilience layer. Its source is the [`tonic::Status`]
/// callers see (tonic finds it there), so a gRPC client gets `UNAVAILABLE`,
/// `RESOURCE_EXHAUSTED` or `DEADLINE_EXCEEDED` with a message saying which
/// layer refused and for what.
#[derive(Debug)]
pub struct Rejection {
    kind: RejectionKind,
    status: Status,
}

impl Rejection {
    /// The breaker guarding `target` is open.
    #[must_use]
    pub fn breaker_open(target: &str) -> Self {
        Self {
            kind: RejectionKind::BreakerOpen,
            status: Status::unavailable(format!(
                "circuit breaker for `{target}` is open; the call was not sent"
            )),
        }
    }

    /// Every one of the `instances` instances of `target` has its circuit
    /// breaker open: no instance would take the call.
    #[must_use]
    pub fn instances_open(target: &str, instances: usize) -> Self {
        Self {
            kind: RejectionKind::BreakerOpen,
            status: Status::unavailable(format!(
                "the circuit breaker of every instance of `{target}` ({instances}) is open; \
                 the call was not sent"
            )),
        }
    }

    /// No instance of `target` is left in its balancer.
    #[must_use]
    pub fn no_instances(target: &str) -> Self {
        Self {
            kind: RejectionKind::NoInstances,
            status: Status::unavailable(format!(
                "no instance of `{target}` is left: every one left discovery or stopped serving; \
                 the call was not sent"
            )),
        }
    }

    /// The bulkhead in front of `target` is full.
    #[must_use]
    pub fn bulkhead_full(target: &str, limit: usize, queue: usize) -> Self {
        Self {
            kind: RejectionKind::BulkheadFull,
            status: Status::resource_exhausted(format!(
                "bulkhead for `{target}` is full ({limit} calls in flight, {queue} queued)"
            )),
        }
    }

    /// No slot of `target`'s bulkhead (`limit` calls in flight) came free
    /// within `waited`.
    #[must_use]
    pub fn bulkhead_waited(target: &str, limit: usize, waited: std::time::Duration) -> Self {
        Self {
            kind: RejectionKind::BulkheadFull,
            status: Status::resource_exhausted(format!(
                "bulkhead for `{target}` is full ({limit} calls in flight): no slot came free \
                 within {waited:?} (max_queue_wait)"
            )),
        }
    }

    /// An attempt at `target` took longer than `timeout`.
    #[must_use]
    pub fn attempt_timeout(target: &str, timeout: std::time::Duration) -> Self {
        Self {
            kind: RejectionKind::AttemptTimeout,
            status: Status::deadline_exceeded(format!(
                "an attempt at `{target}` took longer than {timeout:?}"
            )),
        }
    }

    /// Why the call was refused.
    #[must_use]
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The status callers see.
    #[must_use]
    pub fn status(&self) -> &Status {
        &self.status
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status.message())
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.status)
    }
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        let kind = match rejection.kind {
            RejectionKind::BreakerOpen | RejectionKind::NoInstances => ErrorKind::Unavailable,
            RejectionKind::BulkheadFull => ErrorKind::ResourceExhausted,
            RejectionKind::AttemptTimeout => ErrorKind::DeadlineExceeded,
        };
        Error::new(kind, rejection.status.message().to_owned()).with_source(rejection)
    }
}
