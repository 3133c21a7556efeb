//! Message codecs: protobuf and JSON, chosen by `Content-Type` and `Accept`.
//!
//! Empty for now: the RPC-layer issue fills it with the codecs REST handlers
//! use to accept and answer both `application/json` and
//! `application/x-protobuf` from one handler. gRPC already uses tonic's
//! protobuf codec.
