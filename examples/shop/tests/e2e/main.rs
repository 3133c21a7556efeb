//! The whole shop through its front door: the real `room619` binary, every
//! service in one process (colocated calls, in-memory bus, SQLite), driven
//! over real HTTP through the gateway, and the same data read by a Python
//! `grpcio` client generated from the `.proto` files.

mod binary;
mod python_client;
mod shop_flow;
