//! [`RequestId`]: every request gets an id, propagated from `x-request-id`
//! when the caller sent a sane one, generated otherwise, and returned in the
//! response's `x-request-id` header.
//!
//! Handlers read it from the request extensions (`Extension<RequestId>` in
//! axum, `request.extensions().get::<RequestId>()` in tonic). On a node, the
//! observability layer inside this one records the id on the request's
//! server span, so every log line of the request carries it.
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Written by hand: `format!("{:032x}")` and a copy into the header
        // value cost three times as much, on every request without an id.
        let mut random = fastrand::u128(..);
        let mut id = [0u8; 32];
        for digit in id.iter_mut().rev() {
            *digit = HEX[usize::from(random.to_le_bytes()[0] & 0xf)];
            random >>= 4;
        }
        Self(
            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&id))
                .unwrap_or(HeaderValue::from_static("0")),
        )
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
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
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
