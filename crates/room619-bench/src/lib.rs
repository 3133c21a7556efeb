//! Benchmarks for room619: the side-by-side load harness, and the parts a
//! criterion benchmark can reuse.
//!
//! The `loadgen` binary compares a room619 node with the bare stacks it is
//! built on, under the same load in the same process: gRPC unary against a
//! bare tonic server, REST JSON against a bare axum server. How to run it and
//! what it measured are in `docs/PERFORMANCE.md`.
//!
//! # Layout
//!
//! - [`chain`]: the full middleware chain (JWT auth, rate limit) for the
//!   `--chain` runs;
//! - [`cpu`]: the CPU time of the server threads, per request;
//! - [`failures`]: failed calls inside criterion's timed closures, counted
//!   so that a benchmark whose calls fail exits with an error;
//! - [`echo`]: the echo handlers every target serves (one implementation for
//!   all, so that only the serving stack differs);
//! - [`servers`]: starts each target on `127.0.0.1:0` and stops it;
//! - [`nats`]: a `nats-server` of the benchmarks' own;
//! - [`otlp`]: an OTLP trace receiver and the observed nodes' subscriber;
//! - [`load`]: closed- and open-loop load generators recording latencies
//!   in HDR histograms;
//! - [`report`]: medians over rounds, ratios and the Markdown table.

pub mod chain;
pub mod cpu;
pub mod echo;
pub mod failures;
pub mod load;
pub mod nats;
pub mod otlp;
pub mod report;
pub mod servers;

/// The error of the harness: anything that stops a run from starting.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
