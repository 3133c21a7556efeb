//! Generated protobuf messages and gRPC stubs for the `grpc.testing` interop
//! contracts, the ones every gRPC implementation's interop client and server
//! speak.
//!
//! The contracts live in `proto/` beside this crate (written to match upstream
//! gRPC's `src/proto/grpc/testing/`) and are compiled at build time by
//! `protox`; nothing here is written by hand but this module tree.

/// The encoded `FileDescriptorSet` of every contract in this crate, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/grpc_testing_descriptor.bin"));

/// The directory holding the `.proto` files (the import root: files are
/// named `grpc/testing/*.proto` below it), for clients in other languages
/// that compile the contracts themselves.
pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// `grpc.*` packages.
pub mod grpc {
    /// `grpc.testing`: `TestService`, `UnimplementedService` and their messages.
    pub mod testing {
        include!(concat!(env!("OUT_DIR"), "/grpc.testing.rs"));
    }
}
