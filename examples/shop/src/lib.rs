//! The room619 demo shop's services, as a library the `room619` binary and
//! the tests build nodes from.

pub mod gateway;
