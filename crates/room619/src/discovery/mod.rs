//! Service discovery: register, deregister, resolve by name and semver
//! requirement, watch for changes.
//!
//! Empty for now: the discovery issue fills it with the `Discovery` trait and
//! its backends (local, static, DNS, NATS JetStream KV). Until then, the
//! services of one process are found in the node's
//! [`Registry`](crate::service::Registry).
