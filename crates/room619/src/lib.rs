#![doc = include_str!("../docs/crate.md")]

pub mod bus;
pub mod config;
pub mod discovery;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod middleware;
pub mod node;
pub mod observability;
pub mod resilience;
pub mod rpc;
pub mod service;

pub use error::{Error, ErrorKind, Result};
pub use node::{Node, NodeBuilder, NodeHandle, RunningNode};
pub use service::{Service, ServiceBuilder, ServiceContext};
