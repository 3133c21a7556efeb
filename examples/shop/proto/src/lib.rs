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

/// `auth.*` packages: sign-up, login and tokens.
pub mod auth {
    /// `auth.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/auth.v1.rs"));
    }
}

/// `users.*` packages: user profiles, in two API versions.
pub mod users {
    /// `users.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/users.v1.rs"));
    }
    /// `users.v2`: `name` became `display_name`.
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/users.v2.rs"));
    }
}

/// `products.*` packages: the catalog.
pub mod products {
    /// `products.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/products.v1.rs"));
    }
}

#[cfg(feature = "room619")]
room619::grpc_client!(echo::v1::echo_client::EchoClient);
#[cfg(feature = "room619")]
room619::grpc_client!(auth::v1::auth_client::AuthClient);
#[cfg(feature = "room619")]
room619::grpc_client!(users::v1::users_client::UsersClient);
#[cfg(feature = "room619")]
room619::grpc_client!(users::v2::users_client::UsersClient);
#[cfg(feature = "room619")]
room619::grpc_client!(products::v1::products_client::ProductsClient);
