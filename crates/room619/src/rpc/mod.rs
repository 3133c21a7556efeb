//! gRPC and HTTP on one port.
//!
//! Every connection is served by hyper (HTTP/1.1 and HTTP/2 over cleartext,
//! detected per connection). Each request then goes by its `content-type`:
//! `application/grpc`, `application/grpc+proto` and the like go to the tonic
//! routes of all hosted services (plus gRPC health and reflection); everything
//! else goes to the axum router of all HTTP routes. See [`ProtocolSplit`].
//!
//! - [`body`]: response bodies that hold a permit or token until they end.
//! - [`client`]: typed gRPC clients and HTTP clients of other services,
//!   in-process when the service is colocated, balanced over instances when not.
//! - [`deadline`]: deadlines from `grpc-timeout` / `x-request-timeout`,
//!   enforced on handlers and propagated to outgoing calls.
//! - [`grpc`]: gRPC message size limits as a tower layer.
//! - [`http`]: route checks, problem+json error answers and body limits.
//! - [`codec`]: protobuf and JSON for REST routes, by `Content-Type` and
//!   `Accept` (`415` / `406` problem+json for the others).
//! - [`shed`]: load shedding, a per-node limit on concurrent requests that
//!   refuses at once (`503` / `UNAVAILABLE`) instead of queueing.

pub mod body;
pub mod client;
pub mod codec;
pub mod deadline;
pub mod grpc;
mod header;
pub mod http;
pub mod shed;
mod split;

pub(crate) use header::{find as find_header, repeated as repeated_header};
pub use split::{ProtocolSplit, SplitFuture, is_grpc};
