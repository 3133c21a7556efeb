//! Resilience for clients: circuit breaker, retry with backoff and a budget,
//! attempt timeouts, bulkheads and fallbacks.
//!
//! Each pattern is a tower [`Layer`](tower::Layer) over `http::Request` /
//! `http::Response` services, so it works on room619's clients, on a plain
//! tonic `Channel` and on a hyper client alike:
//!
//! - [`circuit_breaker`]: closed / open / half-open over a sliding window;
//! - [`retry`]: exponential backoff with full jitter, only for idempotent
//!   calls and retryable outcomes, within a retry budget and the deadline;
//! - [`bulkhead`]: a concurrency limit with a bounded queue per downstream;
//! - [`fallback`]: graceful degradation, per call;
//! - [`hedge`]: a second attempt at a slow idempotent read, after a latency
//!   percentile (off unless methods are listed).
//!
//! room619's remote clients use them all, configured per downstream service
//! in `[resilience]` (see [`ClientPolicy`]): a breaker per instance (which
//! takes a failing instance out of the balancer) and one per service, a
//! bulkhead, and retries. Colocated calls skip them: nothing crosses a
//! network.
//!
//! What counts as a failure is a [`FailurePolicy`]; a call a layer refuses
//! fails with a [`Rejection`], which carries the gRPC status callers see.

mod budget;
pub mod bulkhead;
pub mod circuit_breaker;
mod classify;
pub mod fallback;
pub mod hedge;
mod policy;
mod rejection;
pub mod retry;
#[cfg(test)]
mod testing;

pub use classify::{FailurePolicy, Outcome, code_from_name, code_name, status_in};
pub use policy::{ClientPolicy, ResilienceConfig};
pub use rejection::{Rejection, RejectionKind};
