//! Generated protobuf messages and gRPC stubs for the room619 demo shop.
//!
//! The contracts live in `proto/` beside this crate and are compiled at build
//! time by `protox`; nothing here is written by hand but this module tree.

/// The encoded `FileDescriptorSet` of every contract in this crate, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));

/// `shop.echo.*` packages.
pub mod echo {
    /// `shop.echo.v1`: the echo service used by the demo and the framework's tests.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.echo.v1.rs"));
    }
}

#[cfg(feature = "room619")]
room619::grpc_client!(echo::v1::echo_client::EchoClient);
