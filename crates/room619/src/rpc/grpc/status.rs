//! A request message that does not decode is the caller's error:
//! `INVALID_ARGUMENT`, not tonic's `INTERNAL`.
//!
//! tonic's protobuf codec reports every decode failure (a truncated message,
//! invalid UTF-8 in a string, nesting past prost's recursion limit) as
//! `INTERNAL`, following gRPC's status code guide for a *library's* own parse
//! failures. On a server the bytes came from the client, so room619 answers
//! `INVALID_ARGUMENT` with the same message: the caller learns that retrying
//! the same request is pointless, and the server's error rate is not charged
//! for bad input.
//!
//! The rewrite goes by tonic's message, so a handler that returns a
//! downstream call's decode failure unchanged is reported the same way; map
//! such errors to `UNAVAILABLE` or `INTERNAL` with a message of your own.

use http::{HeaderMap, HeaderValue};

use super::{GRPC_MESSAGE, GRPC_STATUS};
use crate::rpc::find_header;

/// `INTERNAL`, as tonic writes it.
const INTERNAL: &[u8] = b"13";
/// `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: HeaderValue = HeaderValue::from_static("3");
/// How tonic's codec starts a decode failure, percent-encoded as on the wire.
const DECODE_FAILURE: &[u8] = b"failed%20to%20decode%20Protobuf%20message";

/// Rewrites a decode failure's `grpc-status` in `headers` (a trailers-only
/// answer, or the trailers of a stream) from `INTERNAL` to
/// `INVALID_ARGUMENT`.
pub(super) fn decode_failure_is_invalid_argument(headers: &mut HeaderMap) {
    // Such an answer has a message as well as a status: a lone header (the
    // trailers of a call that succeeded, a head with its content type) is
    // not one, and is not searched.
    let is_decode_failure = headers.len() >= 2
        && find_header(headers, &GRPC_STATUS).is_some_and(|status| status.as_bytes() == INTERNAL)
        && find_header(headers, &GRPC_MESSAGE)
            .is_some_and(|message| message.as_bytes().starts_with(DECODE_FAILURE));
    if is_decode_failure {
        headers.insert(GRPC_STATUS, INVALID_ARGUMENT);
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
    fn other_internal_errors_stay_internal() {
        let mut other = headers("13", "database%20down");
        decode_failure_is_invalid_argument(&mut other);
        assert_eq!(other[GRPC_STATUS], "13");
        let mut ok = headers("0", "failed%20to%20decode%20Protobuf%20message");
        decode_failure_is_invalid_argument(&mut ok);
        assert_eq!(ok[GRPC_STATUS], "0");
    }
}
