//! [`ReplayBody`]: request bodies that can be buffered and sent again.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use pin_project_lite::pin_project;

use crate::{error::BoxError, rpc::client::balance::Tried};

/// A request body type the retry layer can buffer and rebuild.
pub trait ReplayBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + Sized + 'static
{
    /// A body of exactly these bytes.
    fn from_bytes(bytes: Bytes) -> Self;

    /// A body that sends `prefix`, then the rest of `rest`.
    fn chain(prefix: Bytes, rest: Self) -> Self;

    /// Reads the whole body if it is at most `limit` bytes and already there
    /// (`Ok(Ok(bytes))`); otherwise gives back an equivalent body that
    /// streams what was read and the rest (`Ok(Err(body))`).
    ///
    /// A body of known length (`size_hint().exact()`) is waited for. One of
    /// unknown length is read only as far as it is ready: a client- or
    /// bidi-streaming call whose next message waits on the answers (ping-pong)
    /// would never end, so it is sent once, as it comes, and not retried.
    ///
    /// # Errors
    ///
    /// A failure reading the body.
    fn buffer(
        mut self,
        limit: usize,
    ) -> impl Future<Output = Result<Result<Bytes, Self>, BoxError>> + Send {
        async move {
            let known = self.size_hint().exact();
            if known.is_some_and(|length| length > limit as u64) {
                return Ok(Err(self));
            }
            let mut buffered = BytesMut::new();
            loop {
                let frame = if known.is_some() {
                    self.frame().await
                } else {
                    match self.frame().now_or_never() {
                        Some(frame) => frame,
                        None => return Ok(Err(Self::chain(buffered.freeze(), self))),
                    }
                };
                let Some(frame) = frame else {
                    return Ok(Ok(buffered.freeze()));
                };
                let Ok(data) = frame.map_err(Into::into)?.into_data() else {
                    continue;
                };
                buffered.extend_from_slice(&data);
                if buffered.len() > limit {
                    return Ok(Err(Self::chain(buffered.freeze(), self)));
                }
            }
        }
    }
}

/// A request whose body was read into memory, so it can be sent more than
/// once (by retries and hedges).
pub(crate) struct Replayable {
    parts: http::request::Parts,
    body: Bytes,
}

impl Replayable {
    /// Reads `request`'s body if it is at most `limit` bytes (`Ok(Ok(..))`);
    /// otherwise gives back an equivalent request that streams it
    /// (`Ok(Err(..))`), to be sent once.
    pub(crate) async fn read<B: ReplayBody>(
        request: http::Request<B>,
        limit: usize,
    ) -> Result<Result<Self, http::Request<B>>, BoxError> {
        let (mut parts, body) = request.into_parts();
        // Every replay shares the list of instances the call tried (a hedge
        // inside a retry keeps the retry's).
        if parts.extensions.get::<Tried>().is_none() {
            parts.extensions.insert(Tried::default());
        }
        Ok(match body.buffer(limit).await? {
            Ok(body) => Ok(Self { parts, body }),
            Err(streamed) => Err(http::Request::from_parts(parts, streamed)),
        })
    }

    /// The call's deadline, as room619's clients keep it in the request.
    pub(crate) fn deadline(&self) -> Option<crate::rpc::deadline::Deadline> {
        self.parts
            .extensions
            .get::<crate::rpc::deadline::Deadline>()
            .copied()
    }

    /// A copy of the request to send.
    pub(crate) fn request<B: ReplayBody>(&self) -> http::Request<B> {
        http::Request::from_parts(self.parts.clone(), B::from_bytes(self.body.clone()))
    }
}

impl ReplayBody for tonic::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::new(http_body_util::Full::new(bytes))
    }

    fn chain(prefix: Bytes, rest: Self) -> Self {
        Self::new(Prefixed {
            prefix: Some(prefix),
            rest,
        })
    }
}

impl ReplayBody for axum::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::from(bytes)
    }

    fn chain(prefix: Bytes, rest: Self) -> Self {
        Self::new(Prefixed {
            prefix: Some(prefix),
            rest,
        })
    }
}

pin_project! {
    /// Sends `prefix`, then `rest`.
    struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B: Body<Data = Bytes>> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}
