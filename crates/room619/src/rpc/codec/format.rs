//! [`Format`]: JSON or protobuf, with negotiation and (de)serialization.

use bytes::Bytes;
use http::HeaderValue;
use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// A wire format for message bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// `application/json` through serde.
    Json,
    /// `application/x-protobuf` through prost.
    Protobuf,
}

impl Format {
    /// The media type this format is sent with.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Protobuf => "application/x-protobuf",
        }
    }

    /// The format a `Content-Type` value names, if room619 speaks it.
    #[must_use]
    pub fn from_media_type(value: &str) -> Option<Self> {
        let essence = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Self::Json),
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Some(Self::Protobuf),
            other if other.starts_with("application/") && other.ends_with("+json") => {
                Some(Self::Json)
            }
            _ => None,
        }
    }

    /// The format to answer in for an `Accept` header, as RFC 9110 §12.5.1
    /// has it: each format takes the quality of the most specific range that
    /// matches it (its own media type, then `application/*`, then `*/*`),
    /// so `application/json;q=0, */*` refuses JSON; the higher quality wins,
    /// JSON on a tie or when the header is absent. A range with a malformed
    /// weight is ignored.
    ///
    /// # Errors
    ///
    /// `NotAcceptable` when the header allows neither format.
    pub fn from_accept(accept: Option<&HeaderValue>) -> Result<Self> {
        let Some(accept) = accept else {
            return Ok(Self::Json);
        };
        let text = accept.to_str().unwrap_or_default();
        // Per format: (specificity, quality) of the best-matching range.
        let mut json: Option<(u8, u16)> = None;
        let mut protobuf: Option<(u8, u16)> = None;
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let mut quality = Some(1000);
            for param in parts {
                if let Some((name, value)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    quality = parse_quality(value);
                }
            }
            let Some(quality) = quality else {
                continue;
            };
            let (matches_json, matches_protobuf, specificity) = match media.as_str() {
                "*/*" => (true, true, 1),
                "application/*" => (true, true, 2),
                other => match Self::from_media_type(other) {
                    Some(Self::Json) => (true, false, 3),
                    Some(Self::Protobuf) => (false, true, 3),
                    None => (false, false, 0),
                },
            };
            for (matched, best) in [(matches_json, &mut json), (matches_protobuf, &mut protobuf)] {
                if matched && best.is_none_or(|(s, q)| (specificity, quality) > (s, q)) {
                    *best = Some((specificity, quality));
                }
            }
        }
        let quality = |best: Option<(u8, u16)>| best.map_or(0, |(_, q)| q);
        match (quality(json), quality(protobuf)) {
            (0, 0) => Err(Error::not_acceptable(
                "this route answers application/json or application/x-protobuf; the Accept header allows neither",
            )),
            (json, protobuf) if protobuf > json => Ok(Self::Protobuf),
            _ => Ok(Self::Json),
        }
    }

    /// Encodes `value`.
    ///
    /// # Errors
    ///
    /// `Internal` when JSON serialization fails (a type with a map of
    /// non-string keys, say).
    pub fn encode<T: Serialize + prost::Message>(self, value: &T) -> Result<Bytes> {
        match self {
            Self::Json => serde_json::to_vec(value)
                .map(Bytes::from)
                .map_err(|err| Error::internal(format!("cannot encode the answer as JSON: {err}"))),
            Self::Protobuf => Ok(Bytes::from(value.encode_to_vec())),
        }
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` saying where the body is malformed, without quoting it.
    pub fn decode<T: DeserializeOwned + prost::Message + Default>(self, body: &[u8]) -> Result<T> {
        match self {
            Self::Json => serde_json::from_slice(body).map_err(|err| {
                let what = match err.classify() {
                    serde_json::error::Category::Io | serde_json::error::Category::Syntax => {
                        "not valid JSON"
                    }
                    serde_json::error::Category::Data => "JSON of the wrong shape",
                    serde_json::error::Category::Eof => "truncated JSON",
                };
                Error::invalid_argument(format!(
                    "the request body is {what} (line {}, column {})",
                    err.line(),
                    err.column()
                ))
            }),
            Self::Protobuf => T::decode(body).map_err(|_| {
                Error::invalid_argument(
                    "the request body is not a valid protobuf message of the expected type",
                )
            }),
        }
    }
}

/// `q=0.5` → 500; at most three decimals, as RFC 9110 allows; `None` for
/// anything else (`2`, `0.0001`, `high`).
fn parse_quality(value: &str) -> Option<u16> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix("1") {
        return rest
            .trim_start_matches('.')
            .chars()
            .all(|c| c == '0')
            .then_some(1000);
    }
    let decimals = value.strip_prefix("0")?;
    let decimals = decimals.strip_prefix('.').unwrap_or(decimals);
    if decimals.len() > 3 || !decimals.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{decimals:0<3}");
    padded.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Result<Format> {
        Format::from_accept(Some(&HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn accept_picks_the_highest_quality() {
        assert_eq!(accept("application/x-protobuf").unwrap(), Format::Protobuf);
        assert_eq!(
            accept("application/json;q=0.5, application/x-protobuf").unwrap(),
            Format::Protobuf
        );
        assert_eq!(
            accept("application/x-protobuf;q=0.1, application/json").unwrap(),
            Format::Json
        );
        assert_eq!(accept("*/*").unwrap(), Format::Json);
        assert_eq!(Format::from_accept(None).unwrap(), Format::Json);
    }

    /// RFC 9110 §12.5.1: the most specific range decides a format's
    /// quality, and `q=0` refuses it whatever a wildcard says.
    #[test]
    fn the_most_specific_range_decides_and_q0_refuses() {
        assert_eq!(
            accept("application/json;q=0, */*").unwrap(),
            Format::Protobuf
        );
        assert_eq!(
            accept("application/json;q=0.1, */*").unwrap(),
            Format::Protobuf
        );
        assert_eq!(
            accept("application/json;Q=0, application/*").unwrap(),
            Format::Protobuf,
            "parameter names are case-insensitive"
        );
        assert_eq!(
            accept("application/x-protobuf, application/json").unwrap(),
            Format::Json,
            "JSON on a tie"
        );
        assert_eq!(
            accept("application/x-protobuf;q=2, application/json;q=0.5").unwrap(),
            Format::Json,
            "a malformed weight ignores its range"
        );
        assert_eq!(
            accept("application/x-protobuf;q=0.0001")
                .unwrap_err()
                .kind(),
            crate::ErrorKind::NotAcceptable
        );
        assert_eq!(
            accept("*/*;q=0.5, application/x-protobuf;q=0").unwrap(),
            Format::Json
        );
    }

    #[test]
    fn unacceptable_accept_headers_are_406() {
        let err = accept("text/html, application/json;q=0").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotAcceptable);
    }

    #[test]
    fn media_types_with_parameters_are_recognised() {
        assert_eq!(
            Format::from_media_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_media_type("application/problem+json"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_media_type("Application/Protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(Format::from_media_type("text/plain"), None);
    }

    #[test]
    fn qualities_parse_like_rfc_9110() {
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0.5"), Some(500));
        assert_eq!(parse_quality("0.05"), Some(50));
        assert_eq!(parse_quality("0"), Some(0));
        assert_eq!(parse_quality("0.1234"), None);
        assert_eq!(parse_quality("x"), None);
    }
}
