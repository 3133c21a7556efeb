//! Conditional requests on products (RFC 9110 §13): a product's version is
//! its strong entity tag, `ETag: "3"`. `GET` answers `304 Not Modified` to
//! an `If-None-Match` naming it; `PATCH` and `DELETE` with `If-Match` apply
//! only while the product is at a version it names, and with
//! `If-None-Match` only while it is at none it names (`*`: never, since the
//! product exists); `412` otherwise (§13.1.2: a false `If-None-Match` on a
//! method other than `GET` or `HEAD`), so an edit made from a stale read does
//! not silently undo a newer one.

use axum::extract::FromRequestParts;
use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{IF_MATCH, IF_NONE_MATCH},
    request::Parts,
};

use super::error::ApiError;

/// The entity tag of a product at `version`.
pub(crate) fn etag(version: i64) -> HeaderValue {
    // Digits between quotes are always a valid header value.
    HeaderValue::try_from(format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// What a request's `If-Match` asks of an update or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// No `If-Match`, or `*`: no condition on the version.
    Any,
    /// The versions its strong tags name: the change applies at one of them.
    Versions(Vec<i64>),
    /// Only tags that name no version (weak ones, which never match in
    /// `If-Match`, or tags the gateway did not issue): it cannot hold.
    Never,
}

impl IfMatch {
    fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(tags) = tags(headers, &IF_MATCH)? else {
            return Ok(Self::Any);
        };
        let Tags::Listed(tags) = tags else {
            return Ok(Self::Any);
        };
        let mut versions: Vec<i64> = tags
            .iter()
            .filter(|tag| !tag.weak)
            .filter_map(|tag| version(&tag.opaque))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        Ok(if versions.is_empty() {
            Self::Never
        } else {
            Self::Versions(versions)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers)
    }
}

/// A request's `If-None-Match`: for a read, whether to answer `304`; for a
/// change, whether to refuse it (`412`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfNoneMatch(Option<Tags>);

impl IfNoneMatch {
    /// Whether the request has none (or only empty ones): no condition.
    pub(crate) fn is_absent(&self) -> bool {
        self.0.is_none()
    }

    /// Whether a product at `version` is what the client has already: `*`,
    /// or a tag naming `version`, weak or strong (the weak comparison RFC 9110
    /// asks of `If-None-Match`).
    pub(crate) fn matches(&self, version: i64) -> bool {
        match &self.0 {
            None => false,
            Some(Tags::Any) => true,
            Some(Tags::Listed(tags)) => tags
                .iter()
                .any(|tag| self::version(&tag.opaque) == Some(version)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(tags(&parts.headers, &IF_NONE_MATCH)?))
    }
}

/// An `If-Match` or `If-None-Match` field: `*` or a list of entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tags {
    Any,
    Listed(Vec<Tag>),
}

/// One entity tag: `"opaque"` or, weak, `W/"opaque"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    weak: bool,
    opaque: String,
}

/// The version an opaque tag names: the gateway's are decimal numbers of 1
/// or more, without sign or leading zeros.
fn version(opaque: &str) -> Option<i64> {
    let plain = !opaque.is_empty()
        && !opaque.starts_with('0')
        && opaque.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| opaque.parse().ok()).flatten()
}

/// The tags of every `name` field of `headers` (a list may be split over
/// several), `None` without one (an empty field counts as none): `400`
/// when one is not `*` or a list of entity tags (one at least), or `*` comes
/// with other tags.
fn tags(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Tags>, ApiError> {
    let mut found: Option<Tags> = None;
    let shown = if name == IF_MATCH {
        "If-Match"
    } else {
        "If-None-Match"
    };
    for value in headers.get_all(name) {
        let malformed = || {
            ApiError::bad_request(format!(
                "`{shown}` must be `*` or a list of entity tags such as `\"3\"` (the `ETag` of a \
                 product)"
            ))
        };
        let text = value.to_str().map_err(|_| malformed())?.trim();
        if text.is_empty() {
            // An empty field says nothing: as if it were not sent.
            continue;
        }
        let tags = if text == "*" {
            Tags::Any
        } else {
            // An empty list names nothing: malformed rather than a
            // condition that can never hold.
            let listed = list(text).filter(|tags| !tags.is_empty());
            Tags::Listed(listed.ok_or_else(malformed)?)
        };
        found = match (found, tags) {
            (None, tags) => Some(tags),
            (Some(Tags::Listed(mut all)), Tags::Listed(more)) => {
                all.extend(more);
                Some(Tags::Listed(all))
            }
            // `*` stands alone (RFC 9110 §13.1.1: `"*" / #entity-tag`).
            (Some(_), _) => return Err(malformed()),
        };
    }
    Ok(found)
}

/// `#entity-tag`: tags separated by commas and optional white space, empty
/// elements allowed (RFC 9110 §5.6.1); `None` when malformed.
fn list(text: &str) -> Option<Vec<Tag>> {
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(quoted) => (true, quoted),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &inner[..end];
        // etagc: %x21 / %x23-7E / obs-text (bytes of 0x80 and up are not
        // readable with `to_str`, so never here).
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return None;
        }
        tags.push(Tag {
            weak,
            opaque: opaque.to_owned(),
        });
        rest = inner[end + 1..].trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn if_match(values: &[&str]) -> Result<IfMatch, ApiError> {
        IfMatch::from_headers(&headers(&IF_MATCH, values))
    }

    fn if_none_match(values: &[&str]) -> Result<IfNoneMatch, ApiError> {
        Ok(IfNoneMatch(tags(
            &headers(&IF_NONE_MATCH, values),
            &IF_NONE_MATCH,
        )?))
    }

    #[test]
    fn etags_are_quoted_versions() {
        assert_eq!(etag(1), "\"1\"");
        assert_eq!(etag(i64::MAX), format!("\"{}\"", i64::MAX).as_str());
    }

    #[test]
    fn if_match_names_versions_by_strong_tags_only() {
        assert_eq!(if_match(&[]).unwrap(), IfMatch::Any);
        assert_eq!(
            if_match(&["", " "]).unwrap(),
            IfMatch::Any,
            "empty: not sent"
        );
        assert_eq!(
            if_match(&["", "\"3\""]).unwrap(),
            IfMatch::Versions(vec![3])
        );
        assert_eq!(if_match(&["*"]).unwrap(), IfMatch::Any);
        assert_eq!(if_match(&[" * "]).unwrap(), IfMatch::Any);
        assert_eq!(if_match(&["\"3\""]).unwrap(), IfMatch::Versions(vec![3]));
        assert_eq!(
            if_match(&["\"4\" , W/\"5\",,\"3\"", "\"4\""]).unwrap(),
            IfMatch::Versions(vec![3, 4])
        );
        for never in [
            "W/\"3\"",
            "\"\"",
            "\"abc\"",
            "\"03\"",
            "\"-3\"",
            "\"0\"",
            "\"99999999999999999999\"",
        ] {
            assert_eq!(if_match(&[never]).unwrap(), IfMatch::Never, "{never}");
        }
    }

    #[test]
    fn malformed_conditions_are_refused() {
        for bad in [
            "3",
            "\"3",
            "\"3\"x",
            "\"3\" \"4\"",
            "w/\"3\"",
            "W/ \"3\"",
            "**",
            "\"a b\"",
            ",",
            " , ,",
        ] {
            let err = if_match(&[bad]).unwrap_err();
            assert!(
                format!("{err:?}").contains("`If-Match` must be"),
                "{bad}: {err:?}"
            );
            assert!(if_none_match(&[bad]).is_err(), "{bad}");
        }
        assert!(if_match(&["*", "\"3\""]).is_err());
        assert!(if_match(&["\"3\"", "*"]).is_err());
        assert!(if_match(&["*, \"3\""]).is_err());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(if_none_match(&[]).unwrap().is_absent());
        assert!(if_none_match(&["", " "]).unwrap().is_absent());
        assert!(!if_none_match(&["*"]).unwrap().is_absent());
        assert!(!if_none_match(&[]).unwrap().matches(3));
        assert!(if_none_match(&["*"]).unwrap().matches(3));
        assert!(if_none_match(&["\"3\""]).unwrap().matches(3));
        assert!(if_none_match(&["W/\"3\""]).unwrap().matches(3));
        assert!(
            if_none_match(&["\"1\", \"2\"", "\"3\""])
                .unwrap()
                .matches(3)
        );
        assert!(!if_none_match(&["\"4\", W/\"2\""]).unwrap().matches(3));
    }
}
