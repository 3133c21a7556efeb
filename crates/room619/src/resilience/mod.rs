//! Resilience layers for clients: circuit breaker, retry with backoff and a
//! budget, timeouts, bulkheads and fallbacks.
//!
//! Empty for now: the resilience issue fills it, each pattern as a tower
//! `Layer`.
