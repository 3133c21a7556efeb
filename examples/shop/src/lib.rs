//! The room619 demo shop's services, for its binary and its tests.
//!
//! PLACEHOLDER (H2): the shop's library root is owned by the storage work
//! (H1); this one only declares the modules the auth service needs.

pub mod auth;
pub mod echo;
pub mod settings;
pub mod store;
