//! [`LimitedMessages`]: a body that enforces a gRPC message size limit.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::frame::FrameCursor;
use crate::error::BoxError;

/// Which way a limited body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request: an oversized message fails the body with a
    /// `RESOURCE_EXHAUSTED` [`tonic::Status`], which tonic reports as is.
    Request,
    /// A response: an oversized message is dropped and the stream ends with
    /// `RESOURCE_EXHAUSTED` trailers.
    Response,
}

#[derive(Debug)]
enum State {
    Streaming,
    Trailers(HeaderMap),
    Done,
}

pin_project! {
    /// A gRPC body whose messages may not exceed a declared length.
    #[derive(Debug)]
    pub struct LimitedMessages<B> {
        #[pin]
        inner: B,
        limit: usize,
        direction: Direction,
        cursor: FrameCursor,
        state: State,
    }
}

impl<B> LimitedMessages<B> {
    /// Limits the messages of `inner`, flowing in `direction`, to `limit` bytes.
    pub fn new(inner: B, limit: usize, direction: Direction) -> Self {
        Self {
            inner,
            limit,
            direction,
            cursor: FrameCursor::default(),
            state: State::Streaming,
        }
    }
}

impl<B> Body for LimitedMessages<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.state {
            State::Streaming => {}
            State::Done => return Poll::Ready(None),
            State::Trailers(_) => {
                return match std::mem::replace(this.state, State::Done) {
                    State::Trailers(trailers) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    _ => Poll::Ready(None),
                };
            }
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            Some(Ok(frame)) => frame,
        };
        let mut frame = frame;
        if let Some(trailers) = frame.trailers_mut() {
            if *this.direction == Direction::Response {
                super::status::decode_failure_is_invalid_argument(trailers);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let Some(oversized) = this.cursor.scan(data, *this.limit) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let message = format!(
            "grpc message of {} bytes exceeds the limit of {} bytes",
            oversized.length, this.limit
        );
        match this.direction {
            Direction::Request => {
                *this.state = State::Done;
                let status = tonic::Status::resource_exhausted(message);
                Poll::Ready(Some(Err(Box::new(status))))
            }
            Direction::Response => {
                tracing::warn!(%message, "grpc response message over the encode limit");
                let trailers = status_trailers(tonic::Code::ResourceExhausted, &message);
                let Ok(mut data) = frame.into_data() else {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                };
                if oversized.offset == 0 {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                *this.state = State::Trailers(trailers);
                data.truncate(oversized.offset);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Done => true,
            State::Trailers(_) => false,
            State::Streaming => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Streaming => self.inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

/// Trailers that end a call with `code` and `message` (ASCII without `%`,
/// which needs no percent-encoding; another is left out).
pub(crate) fn status_trailers(code: tonic::Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", HeaderValue::from(code as i32));
    if message.is_ascii()
        && !message.contains('%')
        && let Ok(value) = HeaderValue::from_str(message)
    {
        trailers.insert("grpc-message", value);
    }
    trailers
}
