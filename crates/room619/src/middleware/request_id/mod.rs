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

use crate::rpc::find_header;

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
        let random = fastrand::u128(..).to_be_bytes();
        let mut id = [0u8; 32];
        let (pairs, _) = id.as_chunks_mut::<2>();
        for (pair, byte) in pairs.iter_mut().zip(random) {
            *pair = [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]];
        }
        // One allocation that clones share (the extension, the answer):
        // `copy_from_slice` would make a second one on the first clone.
        Self(
            HeaderValue::from_maybe_shared(Bytes::from_owner(id))
                .unwrap_or(HeaderValue::from_static("0")),
        )
    }

    /// The id of `request`, put in its extensions: the caller's when sane
    /// ([`from_header`]), a new one otherwise. A header that is not sane is
    /// replaced by the new id, so a handler reading the header never sees
    /// what the logs and the answer do not carry; a request without one is
    /// not given one (the extension is where handlers read it, and every
    /// header added is hashed and stored once more per request).
    ///
    /// [`from_header`]: Self::from_header
    pub(crate) fn assign<B>(request: &mut http::Request<B>) -> Self {
        let id = match find_header(request.headers(), &REQUEST_ID) {
            None => Self::generate(),
            Some(given) => {
                if let Some(sane) = Self::from_header(given) {
                    sane
                } else {
                    let made = Self::generate();
                    request
                        .headers_mut()
                        .insert(REQUEST_ID, made.header_value().clone());
                    made
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
        assert_eq!(id.as_str(), format!("{:032x}", fastrand::u128(..)));
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
