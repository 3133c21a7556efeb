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

/// Authenticates a request whose `authorization` header is `authorization`,
/// as the auth layer does: `None` when the bytes are not a header value at
/// all, else whether the credentials were accepted.
#[must_use]
pub fn authenticate(
    authenticator: &crate::middleware::auth::Authenticator,
    authorization: &[u8],
) -> Option<bool> {
    let value = http::HeaderValue::from_bytes(authorization).ok()?;
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    Some(matches!(authenticator.authenticate(&headers), Ok(Some(_))))
}

/// The HS256 signature of `message` under `secret`, base64url as in a JWT.
#[must_use]
pub fn hs256_sign(message: &[u8], secret: &[u8]) -> Option<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::crypto::sign(message, &key, jsonwebtoken::Algorithm::HS256).ok()
}

/// The client IPs the rate limiter derives for a request from `peer` with
/// these raw `X-Forwarded-For` and `Forwarded` values, trusting the proxies
/// in `trusted` (CIDRs; unparsable ones are skipped): when the proxies
/// write `X-Forwarded-For`, and when they write `Forwarded`.
#[must_use]
pub fn client_ip(
    peer: std::net::IpAddr,
    x_forwarded_for: &[u8],
    forwarded: &[u8],
    trusted: &[&str],
) -> [std::net::IpAddr; 2] {
    use crate::middleware::rate_limit::{ForwardedHeader, client_ip};

    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("x-forwarded-for", x_forwarded_for),
        ("forwarded", forwarded),
    ] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    let trusted: Vec<ipnet::IpNet> = trusted.iter().filter_map(|net| net.parse().ok()).collect();
    [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded].map(|header| {
        let proxies = client_ip::Proxies {
            trusted: trusted.clone(),
            header,
        };
        client_ip::client_ip(peer, &headers, &proxies)
    })
}
