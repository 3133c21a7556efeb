//! Deadlines: read from incoming requests, enforced on handlers, passed on to
//! outgoing calls with the time that is left, never more.
//!
//! A request states its deadline as a relative timeout:
//!
//! - gRPC: the standard `grpc-timeout` header (`100m` = 100 ms; units `H`,
//!   `M`, `S`, `m`, `u`, `n`; at most 8 digits);
//! - HTTP: `x-request-timeout`, in the same syntax (`grpc-timeout` is accepted
//!   too).
//!
//! [`DeadlineLayer`] turns it into a [`Deadline`], bounds the handler with it
//! (`DEADLINE_EXCEEDED` / `504` when it passes) and its answer's body (a
//! stream still running then ends with `DEADLINE_EXCEEDED` trailers; an HTTP
//! body is cut), and makes it the task's [current deadline](Deadline::current)
//! while the handler runs and while the body is produced. room619's
//! clients ([`RpcChannel`](crate::rpc::client::RpcChannel),
//! [`HttpClient`](crate::rpc::client::HttpClient)) read the current deadline
//! and send the remaining time; a call whose deadline has already passed fails
//! with `DEADLINE_EXCEEDED` without being sent.
//!
//! ```
//! use std::time::Duration;
//! use room619::rpc::deadline::{Deadline, parse_timeout, encode_timeout};
//!
//! assert_eq!(parse_timeout(b"250m").unwrap(), Duration::from_millis(250));
//! assert_eq!(encode_timeout(Duration::from_millis(250)).to_str().unwrap(), "250000u");
//!
//! # tokio_test_block_on(async {
//! let deadline = Deadline::after(Duration::from_secs(1));
//! let inside = deadline.scope(async { Deadline::current() }).await;
//! assert_eq!(inside, Some(deadline));
//! assert_eq!(Deadline::current(), None);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

mod body;
mod layer;
mod timeout;

use std::{future::Future, time::Duration};

pub use layer::{DeadlineLayer, DeadlineService, Protocol};
pub use timeout::{GRPC_TIMEOUT, HTTP_TIMEOUT, encode_timeout, parse_timeout};
use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The instant `wait` from now, or a century from now if that is later: an
/// absurd setting (`"300000000000y"`) must not overflow the clock and panic.
pub(crate) fn after(wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    Instant::now() + wait.min(CENTURY)
}

/// The instant by which a request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `timeout` from now (at most a century away).
    #[must_use]
    pub fn after(timeout: Duration) -> Self {
        Self(after(timeout))
    }

    /// A deadline at `instant`.
    #[must_use]
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant itself.
    #[must_use]
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left; zero once it has passed.
    #[must_use]
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    #[must_use]
    pub fn is_expired(self) -> bool {
        self.0 <= Instant::now()
    }

    /// The earlier of two optional deadlines.
    #[must_use]
    pub fn earliest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline of the request this task is handling, if it has one.
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|deadline| *deadline).ok()
    }

    /// Runs `future` with this deadline as the [current](Self::current) one
    /// (or the earlier current one, if the task already has a tighter one).
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        let effective = Deadline::earliest(Some(self), Self::current()).unwrap_or(self);
        CURRENT.scope(effective, future).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configured wait of any length (`"300000000000y"`) makes an instant,
    /// not a clock overflow and a panic.
    #[test]
    fn an_absurdly_long_wait_is_a_century_not_a_panic() {
        let far = after(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(99 * 365 * 24 * 60 * 60));
        assert!(Deadline::after(Duration::MAX).remaining() > Duration::from_secs(3600));
        let soon = after(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }
}
