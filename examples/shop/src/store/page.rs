//! Keyset pagination, shared by the services: page sizes and opaque page
//! tokens.
//!
//! A page token is the base64url of the last row's key, `(created_at, id)`;
//! the next page is the rows after that key, so a page never repeats a row
//! and skips none that was there when the first page was read, whatever is
//! added or removed in between. A row committed meanwhile may be missed by a
//! pager already past its key: `created_at` is taken before the row commits,
//! so one slow to commit can land behind rows committed before it.
//!
//! ```
//! use shop::store::page::Cursor;
//!
//! let cursor = Cursor { created_at: "2026-11-26T05:00:00.000000Z".into(), id: "u1".into() };
//! let token = cursor.encode();
//! assert_eq!(Cursor::decode(&token).unwrap(), Some(cursor));
//! assert_eq!(Cursor::decode("").unwrap(), None);
//! assert!(Cursor::decode("not-a-token").is_err());
//! ```

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use room619::Error;

/// The page size when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The number of rows to return for a requested `page_size`: 0 means
/// [`DEFAULT_PAGE_SIZE`].
///
/// # Errors
///
/// `InvalidArgument` above [`MAX_PAGE_SIZE`].
pub fn page_size(requested: u32) -> room619::Result<i64> {
    match requested {
        0 => Ok(i64::from(DEFAULT_PAGE_SIZE)),
        1..=MAX_PAGE_SIZE => Ok(i64::from(requested)),
        _ => Err(Error::invalid_argument(format!(
            "page_size must be 0 to {MAX_PAGE_SIZE} (got {requested})"
        ))),
    }
}

/// The key of the last row of a page: where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The row's `created_at` (RFC 3339).
    pub created_at: String,
    /// The row's id.
    pub id: String,
}

impl Cursor {
    /// The opaque token for this cursor.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{} {}", self.created_at, self.id))
    }

    /// The cursor of `token`; `None` for an empty token (the first page).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when `token` is not one [`encode`](Self::encode)
    /// made.
    pub fn decode(token: &str) -> room619::Result<Option<Self>> {
        if token.is_empty() {
            return Ok(None);
        }
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| {
                let (created_at, id) = text.split_once(' ')?;
                // Written again as the rows store it (microseconds, fixed
                // width): the query compares the text, and a forged
                // `05:00:00Z` would sort after `05:00:00.1Z` of that second.
                let created_at =
                    humantime::format_rfc3339_micros(humantime::parse_rfc3339(created_at).ok()?)
                        .to_string();
                // Ids have neither spaces nor control characters (a NUL
                // would fail in PostgreSQL, not as a bad token).
                let usable = !id.is_empty()
                    && !id.chars().any(|c| c.is_whitespace() || c.is_control());
                usable.then(|| Self {
                    created_at,
                    id: id.to_owned(),
                })
            })
            .map(Some)
            .ok_or_else(|| {
                Error::invalid_argument(
                    "page_token is not valid: pass the next_page_token of a previous response, or nothing for the first page",
                )
            })
    }
}

/// The SQL condition of the rows after a cursor whose `created_at` and id
/// are the placeholders `$at` and `$id`: `(created_at, id) > ($at, $id)`.
/// A row-value comparison, which PostgreSQL and SQLite (3.15 and later; the
/// bundled one is 3.46) read as where a range of an index on
/// `(created_at, id)` starts, so a deep page costs what the first does. Its
/// spelled-out equivalent, `created_at > $at OR (created_at = $at AND
/// id > $id)`, is no range: PostgreSQL reads the index from its start and
/// filters every row before the cursor.
///
/// ```
/// assert_eq!(shop::store::page::after(2, 3), "(created_at, id) > ($2, $3)");
/// ```
#[must_use]
pub fn after(at: usize, id: usize) -> String {
    format!("(created_at, id) > (${at}, ${id})")
}

/// Splits `rows`, fetched as `size + 1` rows in key order, into the page and
/// the next page's token (empty when this is the last page).
pub fn split<T>(mut rows: Vec<T>, size: i64, key: impl Fn(&T) -> Cursor) -> (Vec<T>, String) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() <= size {
        return (rows, String::new());
    }
    rows.truncate(size);
    let token = rows
        .last()
        .map(|last| key(last).encode())
        .unwrap_or_default();
    (rows, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), 20);
        assert_eq!(page_size(1).unwrap(), 1);
        assert_eq!(page_size(100).unwrap(), 100);
        let err = page_size(101).unwrap_err();
        assert_eq!(err.kind(), room619::ErrorKind::InvalidArgument);
        assert!(err.message().contains("page_size"), "{}", err.message());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: "2026-11-26T05:00:00.123456Z".into(),
            id: "a_b-1".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), Some(cursor));
        let forged = |text: &str| URL_SAFE_NO_PAD.encode(text);
        let (spaced, nul) = (
            forged("2026-11-26T05:00:00Z a b"),
            forged("2026-11-26T05:00:00Z \0"),
        );
        for bad in [
            "%%%",
            "bm9zcGFjZQ",
            "eCB5",
            "MjAyNi0xMS0yNlQwNTowMDowMFog",
            &spaced,
            &nul,
        ] {
            let err = Cursor::decode(bad).unwrap_err();
            assert_eq!(err.kind(), room619::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    /// A forged time is read as the rows store it, so it sorts among them
    /// as the time it names.
    #[test]
    fn a_forged_time_is_written_as_stored() {
        let forged = URL_SAFE_NO_PAD.encode("2026-11-26T05:00:00Z u1");
        let cursor = Cursor::decode(&forged).unwrap().unwrap();
        assert_eq!(cursor.created_at, "2026-11-26T05:00:00.000000Z");
        let precise = URL_SAFE_NO_PAD.encode("2026-11-26T05:00:00.1234567Z u1");
        let cursor = Cursor::decode(&precise).unwrap().unwrap();
        assert_eq!(cursor.created_at, "2026-11-26T05:00:00.123456Z");
    }

    #[test]
    fn split_makes_a_token_only_when_more_rows_follow() {
        let key = |n: &u32| Cursor {
            created_at: "2026-11-26T05:00:00.000000Z".into(),
            id: n.to_string(),
        };
        let (rows, token) = split(vec![1, 2, 3], 2, key);
        assert_eq!(rows, [1, 2]);
        assert_eq!(Cursor::decode(&token).unwrap().unwrap().id, "2");
        let (rows, token) = split(vec![1, 2], 2, key);
        assert_eq!(rows, [1, 2]);
        assert!(token.is_empty());
    }
}
