//! Client IP from `X-Forwarded-For` / `Forwarded`: never panics, and an
//! untrusted peer is always its own client IP, whatever it sends.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use room619::fuzzing;

const TRUSTED: &[&str] = &["10.0.0.0/8", "::1/128"];

fuzz_target!(|data: &[u8]| {
    let (xff, forwarded) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let untrusted = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    assert_eq!(
        fuzzing::client_ip(untrusted, xff, forwarded, TRUSTED),
        [untrusted; 2],
        "an untrusted peer chose its own client IP"
    );
    let proxy = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let _ = fuzzing::client_ip(proxy, xff, forwarded, TRUSTED);
});
