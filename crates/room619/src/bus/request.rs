//! Request and reply over the [`MessageBus`]: a request waits for one answer,
//! and a responder's failure comes back as its error kind and message.

use std::time::Duration;

use bytes::Bytes;

use super::{
    Headers, Message, MessageBus, OutgoingMessage, Payload, encode_reply,
    handle::Backend,
    headers::{ERROR_CODE, ERROR_MESSAGE},
    subject,
};
use crate::{Error, ErrorKind, Result, observability::trace_context};

impl MessageBus {
    /// Sends a request and waits for the reply, at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use room619::bus::{Json, MessageBus};
    ///
    /// # async fn demo() -> room619::Result<()> {
    /// let bus = MessageBus::in_memory();
    /// let mut requests = bus.subscribe("math.double").await?;
    /// let responder = bus.clone();
    /// tokio::spawn(async move {
    ///     while let Some(request) = requests.next().await {
    ///         let Json(n) = request.decode::<Json<u32>>().unwrap();
    ///         responder.reply(&request, &Json(n * 2)).await.unwrap();
    ///     }
    /// });
    /// let Json(doubled): Json<u32> = bus.request("math.double", &Json(21), Duration::from_secs(1)).await?;
    /// assert_eq!(doubled, 42);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// `DeadlineExceeded` when no reply came in time; `Unavailable` when
    /// nobody subscribes to `subject`; the responder's error (its kind and
    /// message) when it failed; `InvalidArgument` when the reply is not an `R`.
    pub async fn request<T: Payload, R: Payload>(
        &self,
        subject: &str,
        message: &T,
        timeout: Duration,
    ) -> Result<R> {
        let request = OutgoingMessage::encode(subject.to_owned(), message, self.format())?;
        self.request_message(request, timeout).await?.decode()
    }

    /// Sends a request built with its headers and waits for the raw reply.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), except decoding.
    pub async fn request_message(
        &self,
        mut message: OutgoingMessage,
        timeout: Duration,
    ) -> Result<Message> {
        // The responder's `bus.process` span continues the caller's trace.
        trace_context::inject_bus(message.headers_mut());
        subject::check_publish(message.subject())?;
        message.headers().check()?;
        let reply = match self.transport() {
            Backend::Memory(bus) => bus.request(message, timeout).await,
            #[cfg(feature = "nats")]
            Backend::Nats(bus) => bus.request(message, timeout).await,
            #[cfg(feature = "nats")]
            Backend::JetStream(bus) => bus.core().request(message, timeout).await,
        }?;
        match reply.headers().get(ERROR_CODE) {
            None => Ok(reply),
            Some(code) => {
                let code = code
                    .parse()
                    .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
                let text = reply
                    .headers()
                    .get(ERROR_MESSAGE)
                    .unwrap_or("the responder failed");
                Err(Error::new(ErrorKind::from_grpc_code(code), text.to_owned()))
            }
        }
    }

    /// Answers a request (a message with a reply subject), in the request's
    /// format, continuing its trace.
    ///
    /// # Errors
    ///
    /// `FailedPrecondition` when `request` expects no reply; as
    /// [`publish_message`](Self::publish_message) otherwise.
    pub async fn reply<T: Payload>(&self, request: &Message, message: &T) -> Result<()> {
        let Some(to) = request.reply_subject() else {
            return Err(Error::failed_precondition(format!(
                "the message on `{}` expects no reply",
                request.subject()
            )));
        };
        let format = request.format().unwrap_or(self.format());
        let (payload, headers) = encode_reply(request, message, format)?;
        self.reply_raw(to, payload, headers).await
    }

    pub(crate) async fn reply_raw(&self, to: &str, payload: Bytes, headers: Headers) -> Result<()> {
        headers.check()?;
        match self.transport() {
            Backend::Memory(bus) => bus.reply(to, payload, headers).await,
            #[cfg(feature = "nats")]
            Backend::Nats(bus) => bus.reply(to, payload, headers).await,
            #[cfg(feature = "nats")]
            Backend::JetStream(bus) => bus.core().reply(to, payload, headers).await,
        }
    }
}
