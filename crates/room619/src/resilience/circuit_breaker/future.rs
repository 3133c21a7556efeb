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
    resilience::{Outcome, Rejection},
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
            // A call dropped before it finished: cut at its attempt's
            // timeout it failed, running for a slow call's time it was
            // slow; else it tells nothing (see `Breaker::dropped`).
            if let Some(admitted) = this.project().admitted.take() {
                let now = Instant::now();
                let timed_out = admitted.cut_at.is_some_and(|cut_at| now >= cut_at);
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

struct Admitted {
    permit: Permit,
    started: Instant,
    /// When the attempt this call is gets cut, if it has a timeout
    /// (`AttemptDeadline`).
    cut_at: Option<Instant>,
    shared: Arc<Shared>,
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(
        inner: F,
        permit: Permit,
        cut_at: Option<Instant>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            inner: Some(inner),
            admitted: Some(Admitted {
                permit,
                started: Instant::now(),
                cut_at,
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
            let transition = admitted.shared.lock().record(
                now,
                admitted.permit,
                failed,
                now.duration_since(admitted.started),
            );
            admitted.shared.report(transition);
        }
        Poll::Ready(result)
    }
}
