//! [`PermitBody`]: a response body that holds its request's permit until it
//! ends.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::Permit;

pin_project! {
    /// A response body holding a [`LoadShed`](super::LoadShed) permit: the
    /// request counts as in flight until the body has ended or been dropped.
    #[derive(Debug)]
    pub struct PermitBody {
        #[pin]
        body: Body,
        permit: Option<Permit>,
    }
}

impl PermitBody {
    pub(super) fn new(body: Body, permit: Option<Permit>) -> Self {
        Self { body, permit }
    }
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Ended: give the permit back without waiting for the drop.
            this.permit.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
