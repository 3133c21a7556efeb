//! A request message that does not decode is the caller's error:
//! `INVALID_ARGUMENT`, not tonic's `INTERNAL`; one over a server's own size
//! limit is `RESOURCE_EXHAUSTED`, as the node's limit answers, not tonic's
//! `OUT_OF_RANGE`.
//!
//! tonic's protobuf codec reports every decode failure (a truncated message,
//! invalid UTF-8 in a string, nesting past prost's recursion limit) as
//! `INTERNAL`, following gRPC's status code guide for a *library's* own parse
//! failures. On a server the bytes came from the client, so room619 answers
//! `INVALID_ARGUMENT` with the same message: the caller learns that retrying
//! the same request is pointless, and the server's error rate is not charged
//! for bad input. A generated server keeps a size limit of its own (4 MiB
//! unless set with `max_decoding_message_size`), which tonic reports as
//! `OUT_OF_RANGE`; gRPC's guide, and the node's own limit
//! ([`Limits::grpc_max_decode_message_size`](crate::config::Limits::grpc_max_decode_message_size)),
//! say `RESOURCE_EXHAUSTED`.
//!
//! The rewrite goes by tonic's message, so a handler that returns a
//! downstream call's decode failure unchanged is reported the same way; map
//! such errors to `UNAVAILABLE` or `INTERNAL` with a message of your own.

use http::{HeaderMap, HeaderValue};

use super::{GRPC_MESSAGE, GRPC_STATUS};
use crate::rpc::find_header;

/// `INTERNAL`, as tonic writes it.
const INTERNAL: &[u8] = b"13";
/// `OUT_OF_RANGE`, as tonic writes it.
const OUT_OF_RANGE: &[u8] = b"11";
/// `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: HeaderValue = HeaderValue::from_static("3");
/// `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");
/// How tonic's codec starts a decode failure, percent-encoded as on the wire.
const DECODE_FAILURE: &[u8] = b"failed%20to%20decode%20Protobuf%20message";
/// How tonic's codec starts a message over its size limit, percent-encoded.
const TOO_LARGE: &[u8] = b"Error,%20decoded%20message%20length%20too%20large";

/// Rewrites a codec failure's `grpc-status` in `headers` (a trailers-only
/// answer, or the trailers of a stream): a decode failure from `INTERNAL`
/// to `INVALID_ARGUMENT`, a message over the server's size limit from
/// `OUT_OF_RANGE` to `RESOURCE_EXHAUSTED`.
pub(super) fn decode_failure_is_invalid_argument(headers: &mut HeaderMap) {
    // Such an answer has a message as well as a status: a lone header (the
    // trailers of a call that succeeded, a head with its content type) is
    // not one, and is not searched.
    if headers.len() < 2 {
        return;
    }
    let Some(status) = find_header(headers, &GRPC_STATUS) else {
        return;
    };
    let rewritten = match status.as_bytes() {
        INTERNAL => (DECODE_FAILURE, INVALID_ARGUMENT),
        OUT_OF_RANGE => (TOO_LARGE, RESOURCE_EXHAUSTED),
        _ => return,
    };
    let (message, status) = rewritten;
    if find_header(headers, &GRPC_MESSAGE)
        .is_some_and(|found| found.as_bytes().starts_with(message))
    {
        headers.insert(GRPC_STATUS, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static(status));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
        headers
    }

    #[test]
    fn decode_failures_become_invalid_argument() {
        let mut decode = headers("13", "failed%20to%20decode%20Protobuf%20message%3A%20x");
        decode_failure_is_invalid_argument(&mut decode);
        assert_eq!(decode[GRPC_STATUS], "3");
    }

    #[test]
    fn a_message_over_the_servers_own_limit_is_resource_exhausted() {
        let mut too_large = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%205242880%20bytes",
        );
        decode_failure_is_invalid_argument(&mut too_large);
        assert_eq!(too_large[GRPC_STATUS], "8");
        let mut other = headers("11", "page%20past%20the%20end");
        decode_failure_is_invalid_argument(&mut other);
        assert_eq!(other[GRPC_STATUS], "11");
    }

    #[test]
    fn other_internal_errors_stay_internal() {
        let mut other = headers("13", "database%20down");
        decode_failure_is_invalid_argument(&mut other);
        assert_eq!(other[GRPC_STATUS], "13");
        let mut ok = headers("0", "failed%20to%20decode%20Protobuf%20message");
        decode_failure_is_invalid_argument(&mut ok);
        assert_eq!(ok[GRPC_STATUS], "0");
    }
}
