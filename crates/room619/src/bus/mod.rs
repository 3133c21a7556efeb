//! The message bus: publish, subscribe, queue groups, request/reply.
//!
//! Empty for now: the message-bus issue fills it with `MessageBus` and its
//! in-memory, NATS core and NATS JetStream backends.
