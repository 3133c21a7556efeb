//! Bus envelopes as they arrive: any subject, headers (with any
//! `Content-Type`), reply subject and payload are checked and decoded without
//! a panic.
#![no_main]

use bytes::Bytes;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use room619::bus::{Headers, headers::CONTENT_TYPE};

#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Event {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "2")]
    sequence: u64,
}

#[derive(Arbitrary, Debug)]
struct Envelope {
    subject: String,
    pattern: String,
    headers: Vec<(String, String)>,
    content_type: Option<String>,
    reply: Option<String>,
    payload: Vec<u8>,
}

fuzz_target!(|envelope: Envelope| {
    let mut headers: Headers = envelope.headers.into_iter().collect();
    if let Some(content_type) = envelope.content_type {
        headers.insert(CONTENT_TYPE, content_type);
    }
    if let Err(err) = room619::fuzzing::bus_headers(&headers) {
        assert!(!err.message().is_empty());
    }
    let _matches = room619::fuzzing::bus_subject(&envelope.subject, &envelope.pattern);
    let message = room619::fuzzing::bus_message(
        envelope.subject,
        Bytes::from(envelope.payload),
        headers,
        envelope.reply,
    );
    if let Err(err) = message.decode::<Event>() {
        assert!(!err.message().is_empty());
    }
});
