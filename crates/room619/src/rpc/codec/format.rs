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
    /// matches the media type it is sent with (that type itself, then, for
    /// protobuf, its other names `application/protobuf` and
    /// `application/vnd.google.protobuf`, then `application/*`, then `*/*`),
    /// so `application/json;q=0, */*` refuses JSON; the higher quality wins,
    /// JSON on a tie or when the header is absent. Other JSON types
    /// (`application/problem+json`, `application/vnd.api+json`) do not
    /// match: the answer is plain `application/json`. A range with a
    /// malformed weight is ignored.
    ///
    /// # Errors
    ///
    /// `NotAcceptable` when the header allows neither format.
    pub fn from_accept(accept: Option<&HeaderValue>) -> Result<Self> {
        match accept {
            None => Ok(Self::Json),
            Some(accept) => Self::negotiate(std::iter::once(accept)),
        }
    }

    /// As [`from_accept`](Self::from_accept), for every `Accept` line of
    /// `headers` read as one list (RFC 9110 §5.3). Bytes that are not
    /// UTF-8 (in a parameter, say) do not hide the ranges beside them.
    ///
    /// # Errors
    ///
    /// `NotAcceptable` when the headers allow neither format.
    ///
    /// ```
    /// use room619::rpc::codec::Format;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// headers.append(http::header::ACCEPT, "text/html".parse().unwrap());
    /// headers.append(http::header::ACCEPT, "application/x-protobuf".parse().unwrap());
    /// assert_eq!(Format::from_headers(&headers).unwrap(), Format::Protobuf);
    /// ```
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Self> {
        let mut lines = headers.get_all(http::header::ACCEPT).iter().peekable();
        if lines.peek().is_none() {
            return Ok(Self::Json);
        }
        Self::negotiate(lines)
    }

    fn negotiate<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> Result<Self> {
        // Per format: (specificity, quality) of the best-matching range.
        let mut json: Option<(u8, u16)> = None;
        let mut protobuf: Option<(u8, u16)> = None;
        for line in lines {
            let text = String::from_utf8_lossy(line.as_bytes());
            Self::weigh(&text, &mut json, &mut protobuf);
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

    /// Keeps, per format, the (specificity, quality) of the most specific
    /// range of `text` that matches it.
    fn weigh(text: &str, json: &mut Option<(u8, u16)>, protobuf: &mut Option<(u8, u16)>) {
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
                "application/protobuf" | "application/vnd.google.protobuf" => (false, true, 3),
                "application/json" => (true, false, 4),
                "application/x-protobuf" => (false, true, 4),
                _ => (false, false, 0),
            };
            for (matched, best) in [
                (matches_json, &mut *json),
                (matches_protobuf, &mut *protobuf),
            ] {
                if matched && best.is_none_or(|(s, q)| (specificity, quality) > (s, q)) {
                    *best = Some((specificity, quality));
                }
            }
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

/// Why a request body with these headers cannot be read as it is, if it
/// cannot: a `Content-Encoding` other than `identity` (the node does not
/// inflate request bodies), or a JSON body in a charset other than UTF-8.
/// A `415` saying which, without quoting the header.
pub(crate) fn unreadable_body(headers: &http::HeaderMap, format: Format) -> Option<Error> {
    let encoded = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
    if encoded {
        return Some(Error::unsupported_media_type(
            "request bodies are read as sent: a Content-Encoding (gzip, say) is not accepted; send the body uncompressed",
        ));
    }
    if format != Format::Json {
        return None;
    }
    let content_type = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    let charset = content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })?;
    (!charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8")).then(|| {
        Error::unsupported_media_type(
            "JSON bodies are read as UTF-8; the request names another charset",
        )
    })
}

/// `q=0.5` → 500: `1` or `0`, then at most three decimals (only zeros
/// after `1`), as RFC 9110 §12.4.2 has it; `None` for anything else (`2`,
/// `10`, `05`, `0.0001`, `high`).
fn parse_quality(value: &str) -> Option<u16> {
    let value = value.trim();
    let (whole, decimals) = match value.split_once('.') {
        Some((whole, decimals)) => (whole, decimals),
        None => (value, ""),
    };
    if decimals.len() > 3 || !decimals.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match whole {
        "1" if decimals.bytes().all(|b| b == b'0') => Some(1000),
        "0" => decimals
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .try_fold(0_u16, |quality, digit| {
                Some(quality * 10 + u16::from(digit - b'0'))
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Result<Format> {
        Format::from_accept(Some(&HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn accept_reads_every_line_and_skips_bytes_that_are_not_utf8() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::ACCEPT, HeaderValue::from_static("text/html"));
        headers.append(
            http::header::ACCEPT,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(Format::from_headers(&headers).unwrap(), Format::Protobuf);

        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_bytes(b"text/html; x=\"\xe9\", application/x-protobuf").unwrap(),
        );
        assert_eq!(Format::from_headers(&headers).unwrap(), Format::Protobuf);
        assert_eq!(
            Format::from_headers(&http::HeaderMap::new()).unwrap(),
            Format::Json
        );
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

    /// Only the type an answer is sent with (and protobuf's other names)
    /// matches a format: other JSON types name formats room619 does not
    /// answer in, and the exact type outranks an alias.
    #[test]
    fn a_range_matches_the_type_an_answer_is_sent_with() {
        for refused in [
            "application/json;q=0, application/vnd.api+json",
            "application/problem+json",
            "application/x-protobuf;q=0, application/protobuf",
        ] {
            assert_eq!(
                accept(refused).unwrap_err().kind(),
                crate::ErrorKind::NotAcceptable,
                "{refused}"
            );
        }
        assert_eq!(accept("application/protobuf").unwrap(), Format::Protobuf);
        assert_eq!(
            accept("application/vnd.google.protobuf, application/json;q=0.5").unwrap(),
            Format::Protobuf
        );
        assert_eq!(
            accept("application/x-protobuf;q=0.5, application/protobuf, application/json;q=0.7")
                .unwrap(),
            Format::Json,
            "the exact type's quality decides"
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
    fn encoded_bodies_and_other_charsets_are_unreadable() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_static(value));
            }
            headers
        };
        let readable = [
            headers(&[("content-type", "application/json")]),
            headers(&[("content-type", "application/json; charset=UTF-8")]),
            headers(&[("content-type", "application/json;charset=\"utf-8\"")]),
            headers(&[
                ("content-type", "application/json"),
                ("content-encoding", "identity"),
            ]),
            headers(&[
                ("content-type", "application/json"),
                ("content-encoding", ""),
            ]),
            headers(&[("content-type", "application/x-protobuf; charset=latin1")]),
        ];
        for headers in readable {
            let format =
                Format::from_media_type(headers["content-type"].to_str().unwrap()).unwrap();
            assert!(unreadable_body(&headers, format).is_none(), "{headers:?}");
        }
        let unreadable = [
            headers(&[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ]),
            headers(&[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "identity, br"),
            ]),
            headers(&[("content-type", "application/json; charset=utf-16")]),
        ];
        for headers in unreadable {
            let format =
                Format::from_media_type(headers["content-type"].to_str().unwrap()).unwrap();
            let err = unreadable_body(&headers, format).expect("unreadable");
            assert_eq!(
                err.kind(),
                crate::ErrorKind::UnsupportedMediaType,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn qualities_parse_like_rfc_9110() {
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0.5"), Some(500));
        assert_eq!(parse_quality("0.05"), Some(50));
        assert_eq!(parse_quality("0"), Some(0));
        assert_eq!(parse_quality("0."), Some(0));
        assert_eq!(parse_quality(" 0.123 "), Some(123));
        assert_eq!(parse_quality("0.1234"), None);
        assert_eq!(parse_quality("x"), None);
        for malformed in [
            "10", "1000", "1.0000", "1..", "1.5", "05", "0500", "0.-1", ".5", "", "0.5x",
        ] {
            assert_eq!(parse_quality(malformed), None, "{malformed:?}");
        }
    }
}
