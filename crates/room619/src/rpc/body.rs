//! Response bodies that keep something alive until they have been read:
//! [`HoldingBody`] and the [`Hold`] trait.
//!
//! A layer that counts a request while it runs (a load-shedding permit, a
//! bulkhead slot, a service's in-flight token) must count it until its
//! response body has been sent or read, not only until the response's
//! headers: a server stream runs for as long as its body does.
//!
//! ```
//! use room619::rpc::body::Hold as _;
//! use http_body::Body as _;
//!
//! let held = std::sync::Arc::new(());
//! let body = axum::body::Body::from("answer").hold(std::sync::Arc::clone(&held));
//! assert_eq!(std::sync::Arc::strong_count(&held), 2, "held by the body");
//! drop(body);
//! assert_eq!(std::sync::Arc::strong_count(&held), 1, "let go with it");
//! ```

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A body that holds `guard` until it has ended (its last frame, its
    /// trailers or an error polled) or been dropped, whichever comes first.
    /// At its end the inner body is dropped before the guard, so what the
    /// body kept (a handler's stream and its state) is gone by the time the
    /// guard lets go.
    #[derive(Debug)]
    pub struct HoldingBody<B, G> {
        #[pin]
        body: Option<B>,
        guard: Option<G>,
    }
}

impl<B, G> HoldingBody<B, G> {
    /// `body`, holding `guard` (if any) until it ends.
    pub fn new(body: B, guard: Option<G>) -> Self {
        Self {
            body: Some(body),
            guard,
        }
    }
}

impl<B: Body, G> Body for HoldingBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(mut body) = this.body.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        let polled = body.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            // Trailers are the last frame; a reader (tonic's `Streaming`)
            // may stop at them without polling for the end.
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || body.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            // Let go without waiting for the drop: the body first, then what
            // it was held for.
            this.body.set(None);
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A response (or response body) that can keep a guard alive until the
/// caller is done with it: a body until it has been read to its end or
/// dropped, an `http::Response` through its body, `()` not at all (there
/// is nothing to read after it is returned).
///
/// Bodies that have already ended let go of the guard at once.
pub trait Hold: Sized {
    /// `self`, keeping `guard` alive until it has been read or dropped.
    #[must_use]
    fn hold<G: Send + 'static>(self, guard: G) -> Self;
}

impl Hold for axum::body::Body {
    fn hold<G: Send + 'static>(self, guard: G) -> Self {
        if self.is_end_stream() {
            return self;
        }
        Self::new(HoldingBody::new(self, Some(guard)))
    }
}

impl Hold for tonic::body::Body {
    fn hold<G: Send + 'static>(self, guard: G) -> Self {
        if self.is_end_stream() {
            return self;
        }
        Self::new(HoldingBody::new(self, Some(guard)))
    }
}

impl<B: Hold> Hold for http::Response<B> {
    fn hold<G: Send + 'static>(self, guard: G) -> Self {
        self.map(|body| body.hold(guard))
    }
}

impl Hold for () {
    fn hold<G: Send + 'static>(self, _guard: G) -> Self {}
}

pin_project! {
    /// The body of a colocated call's answer, polled on the caller's task: a
    /// panic in the callee's stream ends the body with an `INTERNAL` error
    /// instead of unwinding into the caller, as a callee across the network
    /// would fail its stream, not its caller.
    pub(crate) struct Unwinding<B> {
        #[pin]
        body: B,
        // What to name in the error: the called service.
        target: std::sync::Arc<str>,
        panicked: bool,
    }
}

impl<B> Unwinding<B> {
    pub(crate) fn new(body: B, target: std::sync::Arc<str>) -> Self {
        Self {
            body,
            target,
            panicked: false,
        }
    }
}

impl<B> Body for Unwinding<B>
where
    B: Body,
    B::Error: Into<crate::error::BoxError>,
{
    type Data = B::Data;
    type Error = crate::error::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.panicked {
            return Poll::Ready(None);
        }
        let body = this.body;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.poll_frame(cx))) {
            Ok(polled) => polled.map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            Err(_panic) => {
                *this.panicked = true;
                Poll::Ready(Some(Err(panicked(this.target).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.panicked || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.panicked {
            SizeHint::with_exact(0)
        } else {
            self.body.size_hint()
        }
    }
}

/// The status of a colocated call whose callee panicked.
pub(crate) fn panicked(target: &str) -> tonic::Status {
    tonic::Status::internal(format!("the colocated `{target}` panicked"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn a_body_holds_its_guard_until_its_last_frame() {
        let guard = Arc::new(());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut body = axum::body::Body::from_stream(stream).hold(Arc::clone(&guard));

        tx.send(Ok(Bytes::from_static(b"one"))).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "one");
        assert_eq!(Arc::strong_count(&guard), 2, "held while the body is open");

        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(
            Arc::strong_count(&guard),
            1,
            "let go at the end, not the drop"
        );
    }

    /// A body whose drop records what its guard says then.
    struct Watched {
        guard: Arc<()>,
        seen_at_drop: Arc<std::sync::Mutex<Option<usize>>>,
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            *self.seen_at_drop.lock().unwrap() = Some(Arc::strong_count(&self.guard));
        }
    }

    #[tokio::test]
    async fn the_inner_body_is_dropped_before_the_guard_lets_go() {
        let guard = Arc::new(());
        let seen_at_drop = Arc::new(std::sync::Mutex::new(None));
        let watched = Watched {
            guard: Arc::clone(&guard),
            seen_at_drop: Arc::clone(&seen_at_drop),
        };
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
            b"x",
        ))])
        .map(move |frame| {
            let _kept = &watched;
            frame
        });
        let mut body = axum::body::Body::from_stream(stream).hold(Arc::clone(&guard));
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert!(body.frame().await.is_none());
        // The stream saw the body's guard (and its own clone, and ours).
        assert_eq!(
            *seen_at_drop.lock().unwrap(),
            Some(3),
            "dropped at the end, guard still held"
        );
        assert_eq!(Arc::strong_count(&guard), 1);
        assert!(body.frame().await.is_none(), "an ended body stays ended");
    }

    #[tokio::test]
    async fn trailers_let_go_without_a_poll_for_the_end() {
        let guard = Arc::new(());
        let frames = [
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"message"))),
            Ok(Frame::trailers(http::HeaderMap::new())),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut body = tonic::body::Body::new(body).hold(Arc::clone(&guard));
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert_eq!(Arc::strong_count(&guard), 2);
        assert!(body.frame().await.unwrap().unwrap().is_trailers());
        assert_eq!(Arc::strong_count(&guard), 1, "the trailers end the body");
    }

    #[test]
    fn an_ended_body_lets_go_at_once() {
        let guard = Arc::new(());
        let body = tonic::body::Body::empty().hold(Arc::clone(&guard));
        assert!(body.is_end_stream());
        assert_eq!(Arc::strong_count(&guard), 1);
    }

    #[tokio::test]
    async fn a_tonic_body_holds_its_guard_until_dropped() {
        let guard = Arc::new(());
        let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(b"x")))
            .hold(Arc::clone(&guard));
        assert_eq!(Arc::strong_count(&guard), 2);
        drop(body);
        assert_eq!(Arc::strong_count(&guard), 1);
    }
}
