//! Message codecs for REST handlers: JSON and protobuf from the same handler,
//! chosen by `Content-Type` (what the body is) and `Accept` (what the caller
//! wants back).
//!
//! | media type | format |
//! |---|---|
//! | `application/json` (and `application/*+json`) | [`Format::Json`] |
//! | `application/x-protobuf`, `application/protobuf`, `application/vnd.google.protobuf` | [`Format::Protobuf`] |
//!
//! A message type works with both when it derives `prost::Message` and serde's
//! `Serialize`/`Deserialize` (generated code can get the serde derives through
//! `tonic_prost_build::configure().type_attribute(..)`).
//!
//! ```
//! use axum::{Router, routing::post};
//! use room619::rpc::codec::{Accepted, Decoded, Encoded};
//!
//! #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
//! struct Note {
//!     #[prost(string, tag = "1")]
//!     text: String,
//! }
//!
//! async fn echo(Accepted(format): Accepted, Decoded(note): Decoded<Note>) -> Encoded<Note> {
//!     Encoded::new(format, note)
//! }
//!
//! let app: Router = Router::new().route("/v1/notes", post(echo));
//! ```
//!
//! Failures answer problem+json: an unsupported `Content-Type` is `415`, an
//! `Accept` that allows neither format is `406`, a body that does not decode is
//! `400` (the message gives the position, never the input itself).

mod extract;
mod format;

pub use extract::{Accepted, Decoded, Encoded};
pub use format::Format;
#[cfg(feature = "validate")]
pub(crate) use format::unreadable_body;
