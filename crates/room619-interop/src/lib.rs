//! gRPC interop for room619: the standard `grpc.testing.TestService`, hosted
//! on a room619 node, so that the interop clients of other gRPC
//! implementations can check the node speaks gRPC as they do.
//!
//! The cases run by this crate's tests, with the Python client
//! (`grpcio`, driven by `python/interop_client.py`): `empty_unary`,
//! `large_unary`, `client_streaming`, `server_streaming`, `ping_pong`,
//! `status_code_and_message`, `special_status_message`, `custom_metadata`
//! and `timeout_on_sleeping_server`. `scripts/test` installs the client.
//!
//! # Layout
//!
//! - [`service`]: the room619 service to host on a node.
//! - `server`: `TestService` as the interop descriptions specify it (payload
//!   sizes, response parameters and intervals, echoed status).
//! - `metadata`: the "Echo Metadata" feature, around the generated server.
//! - [`proto`]: the generated `grpc.testing` code (crate
//!   `room619-interop-proto`, outside the workspace lints).

mod metadata;
mod server;

pub use room619_interop_proto as proto;

use proto::grpc::testing::test_service_server::TestServiceServer;
use room619::{ServiceBuilder, service::BuiltService};

/// The room619 service named `interop` (version `1.0.0`) hosting
/// `grpc.testing.TestService`, with its descriptors registered for
/// reflection. `grpc.testing.UnimplementedService` is deliberately not
/// hosted: calling it must answer `UNIMPLEMENTED`.
///
/// # Errors
///
/// Only if the service cannot be built, which would be a bug: its name,
/// version and routes are fixed.
pub fn service() -> room619::Result<BuiltService> {
    ServiceBuilder::new("interop", "1.0.0")?
        .description("grpc.testing.TestService, for the gRPC interop cases")
        .grpc(metadata::EchoMetadata::new(TestServiceServer::new(
            server::TestServer,
        )))
        .file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build()
}
