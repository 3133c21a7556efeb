//! Server middleware shared by gRPC and HTTP: authentication and
//! authorization, validation, rate limiting.
//!
//! Empty for now: the middleware issue fills it. The limits every node
//! already enforces (body size, gRPC message size, header timeouts) live in
//! [`rpc`](crate::rpc) and [`node`](crate::node).
