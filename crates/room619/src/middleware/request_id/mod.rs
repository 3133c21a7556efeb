//! [`RequestId`]: every request gets an id, propagated from `x-request-id`
//! when the caller sent a sane one, generated otherwise, and returned in the
//! response's `x-request-id` header.
//!
//! Handlers read it from the request extensions (`Extension<RequestId>` in
//! axum, `request.extensions().get::<RequestId>()` in tonic). A node does
//! this in its observability layer, which also records the id on the
//! request's server span, so every log line of the request carries it;
//! [`RequestIdLayer`] does the same on a stack of one's own.
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use room619::middleware::{RequestId, RequestIdLayer};
//!
//! let app: Router = Router::new()
//!     .route("/", get(|Extension(id): Extension<RequestId>| async move { id.to_string() }))
//!     .layer(RequestIdLayer::new());
//! ```

mod layer;

use std::fmt;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::rpc::{find_header, repeated_header};

pub use layer::{RequestIdLayer, RequestIdService, ResponseFuture};

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// [`REQUEST_ID_HEADER`] as a [`HeaderName`].
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The longest id accepted from a caller; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The id of one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A new random id: 32 lowercase hex digits.
    #[must_use]
    pub fn generate() -> Self {
        // Written by hand, eight digits at a time: `format!("{:032x}")` and
        // a copy into the header value cost three times as much, and a
        // digit at a time twice as much, on every request without an id.
        let mut id = [0u8; 32];
        let (halves, _) = id.as_chunks_mut::<16>();
        for half in halves {
            *half = hex_digits(fastrand::u64(..));
        }
        // One allocation that clones share (the extension, the answer):
        // `copy_from_slice` would make a second one on the first clone.
        Self(
            HeaderValue::from_maybe_shared(Bytes::from_owner(id))
                .unwrap_or(HeaderValue::from_static("0")),
        )
    }

    /// The id of `request`, put in its extensions: the caller's first one
    /// when sane ([`from_header`]), a new one otherwise. A header that is
    /// not sane is replaced by the new id, and further values after the
    /// first are dropped, so a handler reading (or passing on) the header
    /// never sees what the logs and the answer do not carry; a request
    /// without one is not given one (the extension is where handlers read
    /// it, and every header added is hashed and stored once more per
    /// request).
    ///
    /// [`from_header`]: Self::from_header
    pub(crate) fn assign<B>(request: &mut http::Request<B>) -> Self {
        let id = match find_header(request.headers(), &REQUEST_ID) {
            None => Self::generate(),
            Some(given) => {
                let sane = Self::from_header(given);
                let repeated = repeated_header(request.headers(), &REQUEST_ID);
                match sane {
                    Some(sane) if !repeated => sane,
                    sane => {
                        let id = sane.unwrap_or_else(Self::generate);
                        request
                            .headers_mut()
                            .insert(REQUEST_ID, id.header_value().clone());
                        id
                    }
                }
            }
        };
        request.extensions_mut().insert(id.clone());
        id
    }

    /// The caller's id if it is 1 to 128 characters of `A-Z a-z 0-9 - _ . : /`,
    /// so a hostile id cannot forge log lines or grow without bound.
    #[must_use]
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(b));
        sane.then(|| Self(value.clone()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII ids are ever built.
        self.0.to_str().unwrap_or_default()
    }

    /// The value answered in `x-request-id`: marked sensitive, which HTTP/2
    /// sends as a literal never indexed. An id is new on every request, so
    /// indexing it in the connection's HPACK table would only evict the
    /// entries worth keeping (and search a table filling up with ids on
    /// every answer). `Debug` of that header value shows `Sensitive`; the
    /// id is in every log line of the request.
    pub(crate) fn into_answer(self) -> HeaderValue {
        let mut value = self.0;
        value.set_sensitive(true);
        value
    }

    /// The id as a header value.
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

/// The 16 lowercase hex digits of `value`, most significant first.
fn hex_digits(value: u64) -> [u8; 16] {
    let mut digits = [0u8; 16];
    let (halves, _) = digits.as_chunks_mut::<8>();
    for (half, word) in halves.iter_mut().zip([value >> 32, value]) {
        *half = ascii_hex(nibbles(word)).to_be_bytes();
    }
    digits
}

/// The low 32 bits of `word`, a nibble to a byte, the most significant
/// nibble in the most significant byte.
fn nibbles(word: u64) -> u64 {
    let word = word & 0xffff_ffff;
    let word = (word | word << 16) & 0x0000_ffff_0000_ffff;
    let word = (word | word << 8) & 0x00ff_00ff_00ff_00ff;
    (word | word << 4) & 0x0f0f_0f0f_0f0f_0f0f
}

/// Each byte of `nibbles` (0 to 15) as its ASCII hex digit: `'0'` added,
/// and 39 more (from `':'` to `'a'`) where it is 10 or more. No byte
/// carries into the next: the largest, 15, becomes `'f'` (102).
fn ascii_hex(nibbles: u64) -> u64 {
    const BYTES: u64 = 0x0101_0101_0101_0101;
    let letters = ((nibbles + 6 * BYTES) >> 4) & BYTES;
    nibbles + u64::from(b'0') * BYTES + letters * u64::from(b'a' - b'9' - 1)
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_hex_and_distinct() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        fastrand::seed(619);
        let id = RequestId::generate();
        fastrand::seed(619);
        let (high, low) = (fastrand::u64(..), fastrand::u64(..));
        assert_eq!(id.as_str(), format!("{high:016x}{low:016x}"));
        for value in [0, 9, 10, 15, 0x0123_4567_89ab_cdef, u64::MAX] {
            let digits = hex_digits(value);
            assert_eq!(
                std::str::from_utf8(&digits).unwrap(),
                format!("{value:016x}")
            );
        }
    }

    #[test]
    fn an_id_is_assigned_to_every_request_and_a_hostile_header_replaced() {
        let mut absent = http::Request::new(());
        let made = RequestId::assign(&mut absent);
        assert_eq!(absent.extensions().get::<RequestId>(), Some(&made));
        assert!(absent.headers().get(REQUEST_ID).is_none(), "not added");

        let mut sane = http::Request::builder()
            .header("x-request-id", "req-7")
            .body(())
            .unwrap();
        assert_eq!(RequestId::assign(&mut sane).as_str(), "req-7");
        assert_eq!(sane.headers()["x-request-id"], "req-7");

        let mut hostile = http::Request::builder()
            .header("x-request-id", "a b")
            .body(())
            .unwrap();
        let replaced = RequestId::assign(&mut hostile);
        assert_eq!(replaced.as_str().len(), 32);
        assert_eq!(hostile.headers()["x-request-id"], replaced.as_str());
        assert_eq!(hostile.extensions().get::<RequestId>(), Some(&replaced));
    }

    #[test]
    fn a_repeated_header_keeps_only_the_id_the_logs_carry() {
        let mut twice = http::Request::builder()
            .header("x-request-id", "req-7")
            .header("x-request-id", "a b")
            .body(())
            .unwrap();
        assert_eq!(RequestId::assign(&mut twice).as_str(), "req-7");
        let values: Vec<_> = twice.headers().get_all("x-request-id").iter().collect();
        assert_eq!(values, ["req-7"]);

        let mut hostile_first = http::Request::builder()
            .header("x-request-id", "a b")
            .header("x-request-id", "req-8")
            .body(())
            .unwrap();
        let made = RequestId::assign(&mut hostile_first);
        assert_eq!(made.as_str().len(), 32);
        let values: Vec<_> = hostile_first
            .headers()
            .get_all("x-request-id")
            .iter()
            .collect();
        assert_eq!(values, [made.as_str()]);
    }

    #[test]
    fn hostile_ids_are_refused() {
        for bad in ["", "a b", "x\ty", "id\"quoted\"", &"a".repeat(129)] {
            let value = HeaderValue::from_str(bad).unwrap();
            assert!(RequestId::from_header(&value).is_none(), "{bad:?}");
        }
        let good = HeaderValue::from_static("req-42_a.b:c/d");
        assert_eq!(
            RequestId::from_header(&good).unwrap().as_str(),
            "req-42_a.b:c/d"
        );
    }
}
