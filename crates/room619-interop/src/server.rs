//! [`TestServer`]: `grpc.testing.TestService` as the interop descriptions'
//! "Server" section specifies it.
//!
//! Every call checks the request's `response_type` (only `COMPRESSABLE`
//! exists) and sizes (negative ones are `INVALID_ARGUMENT`), and ends with
//! the request's `response_status` when its code is not OK ("Echo Status"),
//! without processing what follows. Metadata echoing is not here: it is the
//! job of [`EchoMetadata`](crate::metadata::EchoMetadata), around the server.

use std::{collections::VecDeque, pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt as _, stream};
use room619_interop_proto::grpc::testing::{
    EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse, test_service_server::TestService,
};
use tonic::{Code, Request, Response, Status, Streaming};

/// The stream every streaming method answers with.
type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send + 'static>>;

/// The interop `TestService`: stateless, so one value serves every call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TestServer;

#[tonic::async_trait]
impl TestService for TestServer {
    async fn empty_call(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        Ok(Response::new(simple_response(&request.into_inner())?))
    }

    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let mut response = Response::new(simple_response(&request.into_inner())?);
        response.metadata_mut().insert(
            "cache-control",
            tonic::metadata::MetadataValue::from_static("max-age=60"),
        );
        Ok(response)
    }

    type StreamingOutputCallStream = ResponseStream;

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<Self::StreamingOutputCallStream>, Status> {
        let request = request.into_inner();
        check_streaming_request(&request)?;
        let responses = stream::iter(request.response_parameters).then(respond);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let mut inbound = request.into_inner();
        let mut total = 0_usize;
        while let Some(message) = inbound.message().await? {
            total += message.payload.map_or(0, |payload| payload.body.len());
        }
        let aggregated_payload_size = i32::try_from(total)
            .map_err(|_| Status::out_of_range("aggregated payload size overflows an int32"))?;
        Ok(Response::new(StreamingInputCallResponse {
            aggregated_payload_size,
        }))
    }

    type FullDuplexCallStream = ResponseStream;

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::FullDuplexCallStream>, Status> {
        Ok(Response::new(duplex(request.into_inner(), Duplex::Full)))
    }

    type HalfDuplexCallStream = ResponseStream;

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::HalfDuplexCallStream>, Status> {
        Ok(Response::new(duplex(request.into_inner(), Duplex::Half)))
    }

    async fn unimplemented_call(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is never implemented",
        ))
    }
}

/// The answer to `UnaryCall`: a zero-filled payload of `response_size` bytes.
fn simple_response(request: &SimpleRequest) -> Result<SimpleResponse, Status> {
    echo_status(request.response_status.as_ref())?;
    check_payload_type(request.response_type)?;
    Ok(SimpleResponse {
        payload: Some(zeros(request.response_size)?),
        ..SimpleResponse::default()
    })
}

/// Checks what a `StreamingOutputCallRequest` asks for before any answer.
fn check_streaming_request(request: &StreamingOutputCallRequest) -> Result<(), Status> {
    echo_status(request.response_status.as_ref())?;
    check_payload_type(request.response_type)
}

/// One streamed response: waits `interval_us`, then answers `size` zeros.
async fn respond(parameters: ResponseParameters) -> Result<StreamingOutputCallResponse, Status> {
    let interval = u64::try_from(parameters.interval_us)
        .map_err(|_| Status::invalid_argument("response_parameters.interval_us is negative"))?;
    if interval > 0 {
        tokio::time::sleep(Duration::from_micros(interval)).await;
    }
    Ok(StreamingOutputCallResponse {
        payload: Some(zeros(parameters.size)?),
    })
}

/// The status the client asked the call to end with, if it is not OK.
fn echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(status) if status.code != 0 => Err(Status::new(
            Code::from_i32(status.code),
            status.message.clone(),
        )),
        _ => Ok(()),
    }
}

/// Only `COMPRESSABLE` payloads exist; anything else is `INVALID_ARGUMENT`.
fn check_payload_type(response_type: i32) -> Result<(), Status> {
    match PayloadType::try_from(response_type) {
        Ok(PayloadType::Compressable) => Ok(()),
        Err(_) => Err(Status::invalid_argument(format!(
            "response_type {response_type} is not supported"
        ))),
    }
}

/// A `COMPRESSABLE` payload of `size` zero bytes.
fn zeros(size: i32) -> Result<Payload, Status> {
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("response size {size} is negative")))?;
    Ok(Payload {
        r#type: PayloadType::Compressable.into(),
        body: vec![0; size],
    })
}

/// When a bidirectional call answers its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duplex {
    /// Each request as it arrives (`FullDuplexCall`).
    Full,
    /// All of them once the client half-closes (`HalfDuplexCall`).
    Half,
}

/// Where a bidirectional call stands between two responses.
struct DuplexState {
    inbound: Streaming<StreamingOutputCallRequest>,
    mode: Duplex,
    /// Responses asked for and not sent yet, in order.
    pending: VecDeque<ResponseParameters>,
    /// The client has half-closed.
    closed: bool,
}

/// The responses of a bidirectional call: one per `ResponseParameters` of
/// each request, in order. A request with a non-OK `response_status` ends the
/// call with that status; so does a broken inbound stream. Dropping the stream
/// (the client cancelled, or its deadline passed) stops everything.
fn duplex(inbound: Streaming<StreamingOutputCallRequest>, mode: Duplex) -> ResponseStream {
    let state = DuplexState {
        inbound,
        mode,
        pending: VecDeque::new(),
        closed: false,
    };
    Box::pin(stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            if state.closed || state.mode == Duplex::Full {
                if let Some(parameters) = state.pending.pop_front() {
                    let response = respond(parameters).await;
                    let next = response.is_ok().then_some(state);
                    return Some((response, next));
                }
                if state.closed {
                    return None;
                }
            }
            let request = match state.inbound.message().await {
                Ok(Some(request)) => request,
                Ok(None) => {
                    state.closed = true;
                    continue;
                }
                Err(status) => return Some((Err(status), None)),
            };
            if let Err(status) = check_streaming_request(&request) {
                return Some((Err(status), None));
            }
            state.pending.extend(request.response_parameters);
        }
    }))
}
