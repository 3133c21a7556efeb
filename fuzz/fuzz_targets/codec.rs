//! REST and bus codecs: media-type and `Accept` negotiation and JSON /
//! protobuf decoding of hostile bytes never panic, and what decodes encodes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use room619::rpc::codec::Format;

/// A message with the shapes decoders get wrong: strings, bytes, nesting,
/// repeated and map fields.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(bytes = "vec", tag = "2")]
    blob: Vec<u8>,
    #[prost(message, optional, boxed, tag = "3")]
    inner: Option<Box<Note>>,
    #[prost(uint64, repeated, tag = "4")]
    numbers: Vec<u64>,
    #[prost(map = "string, string", tag = "5")]
    labels: std::collections::HashMap<String, String>,
}

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    MediaType(&'a str),
    Accept(&'a [u8]),
    Json(&'a [u8]),
    Protobuf(&'a [u8]),
}

fuzz_target!(|input: Input<'_>| match input {
    Input::MediaType(media) => {
        if let Some(format) = Format::from_media_type(media) {
            assert!(Format::from_media_type(format.media_type()).is_some());
        }
    }
    Input::Accept(bytes) => {
        if let Ok(value) = http::HeaderValue::from_bytes(bytes) {
            if let Err(err) = Format::from_accept(Some(&value)) {
                assert!(!err.message().is_empty());
            }
        }
    }
    Input::Json(bytes) => decode(Format::Json, bytes),
    Input::Protobuf(bytes) => decode(Format::Protobuf, bytes),
});

fn decode(format: Format, bytes: &[u8]) {
    match format.decode::<Note>(bytes) {
        Ok(note) => {
            format.encode(&note).expect("a decoded message encodes");
        }
        Err(err) => assert!(!err.message().is_empty()),
    }
}
