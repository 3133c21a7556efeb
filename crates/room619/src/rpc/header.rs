//! [`find`]: a header lookup that is cheap for the names room619 reads on
//! every request.
//!
//! `HeaderMap::get` hashes the name it is given, byte by byte for a name
//! that is not one of HTTP's standard ones (`x-request-id`,
//! `grpc-timeout`, `grpc-status`...), then probes: about 150 instructions,
//! as much when the header is absent, which for most of these names is the
//! usual case. A request or an answer usually has a handful of headers, and
//! comparing each one's name with the wanted one costs less than hashing
//! it: a standard name against a custom one differs by kind at once. (For
//! one of HTTP's standard names, whose hash is cheap, `get` costs as
//! little: measured with callgrind, neither wins, so those are looked up
//! with `get`.)

use http::{HeaderMap, HeaderName, HeaderValue};

/// Maps with at most this many values are searched in order, larger ones
/// through the hash (a few names with many values each, `cookie` say, are
/// not walked value by value).
const SEARCHED_IN_ORDER: usize = 8;

/// The first value of `name` in `headers`, as `HeaderMap::get` gives it.
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    // Every value is visited, so the bound is on values, not names.
    if headers.len() > SEARCHED_IN_ORDER {
        return headers.get(name);
    }
    // A name's first value comes before its others, as `get` returns it.
    headers
        .iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Whether `headers` hold more than one value of `name`, looked for as
/// [`find`] does.
pub(crate) fn repeated(headers: &HeaderMap, name: &HeaderName) -> bool {
    if headers.len() > SEARCHED_IN_ORDER {
        return headers.get_all(name).iter().nth(1).is_some();
    }
    headers
        .iter()
        .filter(|(key, _)| *key == name)
        .nth(1)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in entries {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn finds_what_get_finds_in_small_and_large_maps() {
        let wanted = HeaderName::from_static("x-request-id");
        let small = map(&[
            ("content-type", "application/json"),
            ("x-request-id", "first"),
            ("x-request-id", "second"),
        ]);
        assert_eq!(find(&small, &wanted), small.get(&wanted));
        assert!(repeated(&small, &wanted));
        assert!(!repeated(&small, &http::header::CONTENT_TYPE));
        assert_eq!(find(&small, &wanted).unwrap(), "first");
        assert_eq!(
            find(&small, &http::header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        assert_eq!(find(&small, &HeaderName::from_static("grpc-timeout")), None);

        let mut large = map(&[("x-request-id", "id")]);
        for n in 0..SEARCHED_IN_ORDER {
            large.insert(
                HeaderName::from_bytes(format!("x-filler-{n}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert_eq!(find(&large, &wanted).unwrap(), "id");
        assert!(!repeated(&large, &wanted));
        large.append(wanted.clone(), HeaderValue::from_static("again"));
        assert!(repeated(&large, &wanted));
        assert_eq!(find(&large, &HeaderName::from_static("grpc-timeout")), None);
        assert_eq!(find(&HeaderMap::new(), &wanted), None);

        let mut repeated = map(&[("x-request-id", "id")]);
        for _ in 0..100 {
            repeated.append(http::header::COOKIE, HeaderValue::from_static("c=1"));
        }
        assert_eq!(repeated.keys_len(), 2);
        assert_eq!(find(&repeated, &wanted).unwrap(), "id");
        assert_eq!(
            find(&repeated, &HeaderName::from_static("grpc-timeout")),
            None
        );
    }
}
