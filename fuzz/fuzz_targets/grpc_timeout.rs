//! `grpc-timeout` / `x-request-timeout` parsing: never panics, and whatever
//! parses encodes to a value that parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use room619::rpc::deadline::{encode_timeout, parse_timeout};

fuzz_target!(|data: &[u8]| {
    if let Ok(timeout) = parse_timeout(data) {
        let encoded = encode_timeout(timeout);
        assert!(
            parse_timeout(encoded.as_bytes()).is_ok(),
            "{timeout:?} encoded as {encoded:?} does not parse"
        );
    }
});
