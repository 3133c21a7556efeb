//! A client of the node's gRPC server reflection (`grpc.reflection.v1`): the
//! services it serves and the descriptors of their contracts.

use std::collections::HashSet;

use prost::Message as _;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse,
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

use super::{super::Failure, describe_status};

/// The most files one contract may pull in, so a broken server cannot keep
/// the CLI asking for ever.
const MAX_FILES: usize = 1000;

/// One reflection conversation (a bidirectional stream): a question, then
/// its answer.
pub(super) struct Reflection {
    questions: mpsc::Sender<ServerReflectionRequest>,
    answers: Streaming<ServerReflectionResponse>,
}

impl Reflection {
    /// Opens the conversation.
    pub(super) async fn open(
        channel: Channel,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Self, Failure> {
        let (questions, asked) = mpsc::channel(1);
        let mut request = tonic::Request::new(ReceiverStream::new(asked));
        *request.metadata_mut() = metadata.clone();
        let answers = ServerReflectionClient::new(channel)
            .server_reflection_info(request)
            .await
            .map_err(|status| {
                Failure::Failed(format!(
                    "the node's gRPC reflection failed: {}",
                    describe_status(&status)
                ))
            })?
            .into_inner();
        Ok(Self { questions, answers })
    }

    async fn ask(&mut self, question: MessageRequest) -> Result<MessageResponse, Failure> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        };
        if self.questions.send(request).await.is_err() {
            return Err(Failure::Failed(
                "the node closed the reflection stream".to_owned(),
            ));
        }
        let answer = self.answers.message().await.map_err(|status| {
            Failure::Failed(format!(
                "the node's gRPC reflection failed: {}",
                describe_status(&status)
            ))
        })?;
        match answer.and_then(|answer| answer.message_response) {
            Some(MessageResponse::ErrorResponse(error)) => Err(Failure::Failed(format!(
                "the node's gRPC reflection answered: {} (code {})",
                error.error_message, error.error_code
            ))),
            Some(answer) => Ok(answer),
            None => Err(Failure::Failed(
                "the node's gRPC reflection answered nothing".to_owned(),
            )),
        }
    }

    /// The full names of the gRPC services the node serves.
    pub(super) async fn services(&mut self) -> Result<Vec<String>, Failure> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await?
        {
            MessageResponse::ListServicesResponse(list) => Ok(list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect()),
            _ => Err(unexpected("a list of services")),
        }
    }

    /// The descriptor of `service` (a full name), with every file its
    /// contract depends on.
    pub(super) async fn service(&mut self, service: &str) -> Result<ServiceDescriptor, Failure> {
        let first = self
            .ask(MessageRequest::FileContainingSymbol(service.to_owned()))
            .await?;
        let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
        let mut pending = decode_files(first)?;
        let mut requested: HashSet<String> =
            pending.iter().map(|file| file.name().to_owned()).collect();
        while let Some(file) = pending.pop() {
            if files.iter().any(|known| known.name() == file.name()) {
                continue;
            }
            for dependency in &file.dependency {
                if requested.insert(dependency.clone()) {
                    if requested.len() > MAX_FILES {
                        return Err(Failure::Failed(format!(
                            "the contract of `{service}` needs more than {MAX_FILES} files"
                        )));
                    }
                    let answer = self
                        .ask(MessageRequest::FileByFilename(dependency.clone()))
                        .await?;
                    pending.extend(decode_files(answer)?);
                }
            }
            files.push(file);
        }
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_protos(files).map_err(|err| {
            Failure::Failed(format!(
                "the node's descriptors of `{service}` are inconsistent: {err}"
            ))
        })?;
        pool.get_service_by_name(service).ok_or_else(|| {
            Failure::Failed(format!(
                "the node's reflection has no descriptor of `{service}`"
            ))
        })
    }
}

/// The files of a `FileDescriptorResponse`.
fn decode_files(answer: MessageResponse) -> Result<Vec<prost_types::FileDescriptorProto>, Failure> {
    let MessageResponse::FileDescriptorResponse(response) = answer else {
        return Err(unexpected("file descriptors"));
    };
    response
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).map_err(|err| {
                Failure::Failed(format!(
                    "the node's reflection sent an undecodable descriptor: {err}"
                ))
            })
        })
        .collect()
}

fn unexpected(wanted: &str) -> Failure {
    Failure::Failed(format!(
        "the node's reflection answered something other than {wanted}"
    ))
}
