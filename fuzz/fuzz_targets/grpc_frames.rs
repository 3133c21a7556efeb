//! The gRPC length-prefix scanner of the message limit layer: any body, cut
//! into chunks anywhere, is scanned without a panic, and the same body finds
//! the same oversized message however it is cut.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u16,
    cuts: Vec<u8>,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let limit = usize::from(input.limit);
    let whole = room619::fuzzing::grpc_frames([input.body.as_slice()], limit);
    let mut chunks = Vec::new();
    let mut rest = input.body.as_slice();
    for cut in input.cuts {
        let at = usize::from(cut).min(rest.len());
        let (chunk, tail) = rest.split_at(at);
        chunks.push(chunk);
        rest = tail;
    }
    chunks.push(rest);
    let split = room619::fuzzing::grpc_frames(chunks, limit);
    assert_eq!(whole, split);
});
