//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): thin
//! wrappers that reach parsers the public API keeps private. Not part of the
//! public API; no stability promise.

use bytes::Bytes;

use crate::{
    Result,
    bus::{Headers, Message},
};

/// Scans `chunks` as one gRPC body through the length-prefix scanner of
/// [`MessageLimitLayer`](crate::rpc::grpc::MessageLimitLayer); returns the
/// declared length of the first message over `limit`.
pub fn grpc_frames<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, limit: usize) -> Option<u64> {
    crate::rpc::grpc::scan_frames(chunks, limit)
}

/// A received bus message built from raw parts, as the bus backends build
/// them from the wire.
#[must_use]
pub fn bus_message(
    subject: String,
    payload: Bytes,
    headers: Headers,
    reply: Option<String>,
) -> Message {
    Message::new(subject, payload, headers, reply)
}

/// Checks `headers` as a publish does.
///
/// # Errors
///
/// `InvalidArgument` naming a bad header.
pub fn bus_headers(headers: &Headers) -> Result<()> {
    headers.check()
}

/// Checks `subject` as a publish does and `pattern` as a subscription does;
/// when both are valid, whether the pattern matches the subject.
#[must_use]
pub fn bus_subject(subject: &str, pattern: &str) -> Option<bool> {
    let published = crate::bus::subject::check_publish(subject).is_ok();
    let pattern = crate::bus::subject::Pattern::new(pattern).ok()?;
    published.then(|| pattern.matches(subject))
}
