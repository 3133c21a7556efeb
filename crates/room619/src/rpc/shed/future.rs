//! [`ShedFuture`]: the inner answer with its permit, or the refusal.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::body::Body;
use http::Response;
use pin_project_lite::pin_project;

use super::{Permit, PermitBody};

pin_project! {
    /// The response future of [`LoadShed`](super::LoadShed).
    pub struct ShedFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = Projected]
    enum State<F> {
        // Admitted: the inner service answers; the permit moves into the body.
        Admitted { #[pin] inner: F, permit: Option<Permit> },
        // Refused at once.
        Refused { response: Option<Response<Body>> },
    }
}

impl<F> ShedFuture<F> {
    pub(super) fn admitted(inner: F, permit: Option<Permit>) -> Self {
        Self {
            state: State::Admitted { inner, permit },
        }
    }

    pub(super) fn refused(response: Response<Body>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<PermitBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Admitted { inner, permit } => {
                let Ok(response) = ready!(inner.poll(cx));
                let permit = permit.take();
                Poll::Ready(Ok(response.map(|body| PermitBody::new(body, permit))))
            }
            Projected::Refused { response } => {
                let response = response.take().unwrap_or_default();
                Poll::Ready(Ok(response.map(|body| PermitBody::new(body, None))))
            }
        }
    }
}
