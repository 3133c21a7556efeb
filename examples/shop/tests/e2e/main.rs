#![cfg(test)]
//! The whole shop through its front door, the real `room619` binary: every
//! service in one process (colocated calls, in-memory bus, SQLite), and
//! again as four processes over a spawned `nats-server` (discovery and
//! JetStream) with the machine's PostgreSQL, driven over real HTTP through
//! the gateway; and the same data read by a Python `grpcio` client
//! generated from the `.proto` files.

mod binary;
mod distributed;
mod over_nats;
mod python_client;
mod shop_flow;
