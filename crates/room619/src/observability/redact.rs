//! Safe forms of untrusted values for log lines and span attributes:
//! [`SafeHeaders`] hides the values of credential headers, [`Escaped`]
//! escapes control characters (so a value cannot forge a log line in the
//! pretty format; the JSON format escapes them anyway).
//!
//! room619 itself never logs or records header values; use these when your
//! own code does.
//!
//! ```
//! use room619::observability::redact::{Escaped, SafeHeaders};
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("authorization", "Bearer secret".parse().unwrap());
//! headers.insert("x-tenant", "acme".parse().unwrap());
//! let shown = format!("{:?}", SafeHeaders(&headers));
//! assert!(shown.contains("[redacted]") && !shown.contains("secret"));
//! assert_eq!(Escaped("a\nb").to_string(), "a\\nb");
//! ```

use std::fmt::{self, Write as _};

use http::HeaderMap;

/// Headers whose values are credentials: never logged nor recorded.
pub const SENSITIVE_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
];

/// Whether the header `name` carries credentials (ASCII case ignored).
#[must_use]
pub fn is_sensitive(name: &str) -> bool {
    SENSITIVE_HEADERS
        .iter()
        .any(|sensitive| sensitive.eq_ignore_ascii_case(name))
}

/// Headers as `Debug`: credential values shown as `[redacted]`, the others
/// with control characters escaped.
#[derive(Clone, Copy)]
pub struct SafeHeaders<'a>(pub &'a HeaderMap);

impl fmt::Debug for SafeHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive(name.as_str()) {
                map.entry(&name.as_str(), &format_args!("[redacted]"));
            } else {
                let text = String::from_utf8_lossy(value.as_bytes());
                map.entry(&name.as_str(), &format_args!("\"{}\"", Escaped(&text)));
            }
        }
        map.finish()
    }
}

/// A string with control characters escaped (`\n`, `\r`, `\t`, others as
/// `\u{..}`) when displayed.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_and_control_characters_escaped() {
        let mut headers = HeaderMap::new();
        for name in SENSITIVE_HEADERS {
            headers.insert(name, "s3cret".parse().unwrap());
        }
        headers.insert("x-note", "tab\there".parse().unwrap());
        let shown = format!("{:?}", SafeHeaders(&headers));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown.matches("[redacted]").count(), SENSITIVE_HEADERS.len());
        assert!(shown.contains("tab\\there"), "{shown}");
        assert_eq!(Escaped("a\u{1b}[31m").to_string(), "a\\u{1b}[31m");
        assert!(is_sensitive("Authorization"));
    }
}
