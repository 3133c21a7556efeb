//! gRPC interop for room619: the standard `grpc.testing.TestService`, hosted
//! on a room619 node, so that the interop clients of other gRPC
//! implementations can check the node speaks gRPC as they do.
//!
//! The cases run by this crate's tests, with the Python client
//! (`grpcio`, driven by `python/interop_client.py`): `empty_unary`,
//! `large_unary`, `client_streaming`, `server_streaming`, `ping_pong`,
//! `empty_stream`, `status_code_and_message`, `special_status_message`,
//! `custom_metadata`, `unimplemented_method`, `unimplemented_service`,
//! `cancel_after_begin`, `cancel_after_first_response` and
//! `timeout_on_sleeping_server`. Besides what the client asserts, each test
//! checks the server side while the client is still connected: no call is
//! left in flight, and only the calls the case cancels ended cancelled (the
//! server noticed `cancel_after_first_response`'s cancellation, for one).
//! `scripts/test` installs the client.
//!
//! The compression cases (`client_compressed_unary`,
//! `server_compressed_unary` and their streaming forms) do not apply: a
//! room619 node accepts no gRPC message compression, by design (tonic is built
//! without its `gzip` and `zstd` features, and a call with a `grpc-encoding`
//! is refused `UNIMPLEMENTED` rather than inflated, as room619's test
//! `compressed_grpc_requests_are_refused_not_inflated` checks), so there is
//! neither a compressed request to accept nor a compressed response to send.
//! The cases that need TLS or Google credentials do not apply either: the
//! client speaks plaintext only.
//!
//! # Layout
//!
//! - [`service`]: the room619 service to host on a node;
//!   [`service_with_log`] also keeps a [`CallLog`] of how its calls ended.
//! - `server`: `TestService` as the interop descriptions specify it (payload
//!   sizes, response parameters and intervals, echoed status).
//! - `metadata`: the "Echo Metadata" feature, around the generated server.
//! - `call_log`: [`CallLog`], around that, for tests of the server side.
//! - [`proto`]: the generated `grpc.testing` code (crate
//!   `room619-interop-proto`, outside the workspace lints).

mod call_log;
mod metadata;
mod server;

pub use room619_interop_proto as proto;

pub use call_log::CallLog;

use proto::grpc::testing::test_service_server::TestServiceServer;
use room619::{ServiceBuilder, service::BuiltService};

/// The room619 service named `interop` (version `1.0.0`) hosting
/// `grpc.testing.TestService`, with its descriptors registered for
/// reflection. `TestService/UnimplementedCall` answers `UNIMPLEMENTED`, and
/// `grpc.testing.UnimplementedService` is deliberately not hosted: the node
/// answers calls to it `UNIMPLEMENTED`, as it does for any unknown service.
///
/// # Errors
///
/// Only if the service cannot be built, which would be a bug: its name,
/// version and routes are fixed.
pub fn service() -> room619::Result<BuiltService> {
    service_with_log(CallLog::new())
}

/// [`service`], keeping how its calls end in `log` (clones of it share what
/// it keeps), so a test can check the server side of a case.
///
/// # Errors
///
/// As [`service`].
pub fn service_with_log(log: CallLog) -> room619::Result<BuiltService> {
    let server = metadata::EchoMetadata::new(TestServiceServer::new(server::TestServer));
    ServiceBuilder::new("interop", "1.0.0")?
        .description("grpc.testing.TestService, for the gRPC interop cases")
        .grpc(call_log::Logged::new(server, log))
        .file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build()
}
