//! [`ResponseFuture`]: records each admitted call's outcome.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{Permit, Shared};
use crate::{
    error::BoxError,
    resilience::{Outcome, Rejection, classify::ran_out_of_time},
};

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        admitted: Option<Admitted>,
        rejection: Option<Rejection>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // A call dropped before it finished: cut at a bound that blames
            // its backend it failed, running for a slow call's time it was
            // slow; else it tells nothing (see `Breaker::dropped`).
            if let Some(admitted) = this.project().admitted.take() {
                let now = Instant::now();
                let timed_out = admitted
                    .bounds
                    .blames_cut(now, admitted.shared.counts_deadlines);
                let transition = admitted.shared.lock().dropped(
                    now,
                    admitted.permit,
                    timed_out,
                    now.duration_since(admitted.started),
                );
                admitted.shared.report(transition);
            }
        }
    }
}

/// The instants an admitted call is cut at, as its request carried them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// When the attempt this call is gets cut, if it has a timeout
    /// (`AttemptDeadline`).
    pub(super) attempt: Option<Instant>,
    /// Its caller's deadline (`Deadline`), and whether it left the call less
    /// than `DEADLINE_FLOOR` (or `slow_call_duration`, if shorter) when
    /// admitted: running out of so little time says nothing about the
    /// backend.
    pub(super) deadline: Option<(Instant, bool)>,
}

impl Bounds {
    /// Whether a call dropped at `now` was cut at a bound that blames its
    /// backend: its attempt's timeout, or its caller's deadline when
    /// `DEADLINE_EXCEEDED` counts (`counts_deadlines`) and that deadline
    /// left it time enough. Past both, the earlier one cut it.
    fn blames_cut(&self, now: Instant, counts_deadlines: bool) -> bool {
        let attempt = self.attempt.filter(|at| now >= *at);
        match self.deadline.filter(|(at, _)| now >= *at) {
            Some((at, short)) if attempt.is_none_or(|cut| at < cut) => counts_deadlines && !short,
            _ => attempt.is_some(),
        }
    }

    /// Whether a failed call only ran out of a caller's deadline too short to
    /// blame the backend: it answered `DEADLINE_EXCEEDED` or 504, or failed
    /// once that deadline had passed (room619's clients read any failure
    /// then as the deadline's, and so does this).
    fn short_of_time<B>(&self, now: Instant, result: &Result<http::Response<B>, BoxError>) -> bool {
        let Some((at, true)) = self.deadline else {
            return false;
        };
        ran_out_of_time(result) || (result.is_err() && now >= at)
    }
}

struct Admitted {
    permit: Permit,
    started: Instant,
    bounds: Bounds,
    shared: Arc<Shared>,
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(
        inner: F,
        permit: Permit,
        started: Instant,
        bounds: Bounds,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            inner: Some(inner),
            admitted: Some(Admitted {
                permit,
                started,
                bounds,
                shared,
            }),
            rejection: None,
        }
    }

    pub(super) fn rejected(rejection: Rejection) -> Self {
        Self {
            inner: None,
            admitted: None,
            rejection: Some(rejection),
        }
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let rejection = this
                .rejection
                .take()
                .unwrap_or_else(|| Rejection::breaker_open("unknown"));
            return Poll::Ready(Err(Box::new(rejection)));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        if let Some(admitted) = this.admitted.take() {
            let now = Instant::now();
            let policy = &admitted.shared.failures;
            let outcome = match &result {
                Ok(response) => policy.classify_response(response),
                Err(error) => policy.classify_error(error),
            };
            let failed = matches!(outcome, Outcome::Failure(_));
            let elapsed = now.duration_since(admitted.started);
            let transition = if failed && admitted.bounds.short_of_time(now, &result) {
                admitted
                    .shared
                    .lock()
                    .ignored(now, admitted.permit, elapsed)
            } else {
                admitted
                    .shared
                    .lock()
                    .record(now, admitted.permit, failed, elapsed)
            };
            admitted.shared.report(transition);
        }
        Poll::Ready(result)
    }
}
