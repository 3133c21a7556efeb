//! Subjects: dot-separated tokens (`orders.created`), checked before anything
//! is sent, and the NATS wildcard rules the in-memory backend matches with.
//!
//! A subscription's subject may use wildcards as whole tokens: `*` matches
//! exactly one token, `>` (last token only) matches one or more. A publish
//! subject has none.

use std::cell::Cell;

use crate::{Error, Result};

/// The longest subject (or subscription pattern), in bytes. A NATS server
/// refuses a protocol line longer than its `max_control_line` (4 KiB by
/// default), and refuses it by closing the connection: every publish and
/// subscription on it would be cut, not just the one with the long subject.
/// 1 KiB leaves room for the reply subject and the sizes on the same line.
pub(crate) const MAX_SUBJECT_BYTES: usize = 1024;

/// The longest name (queue group, durable consumer, stream), in bytes, as
/// JetStream allows.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// `text` as an error message shows it: whole when short, else its start.
fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return text.to_owned();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Checks a subject to publish to: non-empty tokens, no wildcards, no
/// whitespace, at most [`MAX_SUBJECT_BYTES`].
///
/// # Errors
///
/// `InvalidArgument` naming the subject and what is wrong with it.
#[inline]
pub(crate) fn check_publish(subject: &str) -> Result<()> {
    // This runs on every publish: one pass over the bytes decides; only a
    // subject that fails it is looked at again, to say what is wrong (and to
    // judge non-ASCII text exactly).
    if subject.len() <= MAX_SUBJECT_BYTES && is_plain(subject.as_bytes()) {
        Ok(())
    } else {
        check_publish_closely(subject)
    }
}

/// [`check_publish`] for a subject that lives as long as the program (a
/// string literal, most often): the last one found good on this thread is
/// remembered by address and length, so publishing to the same constant
/// subject again checks nothing. A `&'static str` never changes, so the same
/// address and length are the same, already checked, subject.
///
/// # Errors
///
/// As [`check_publish`].
#[inline]
pub(crate) fn check_static_publish(subject: &'static str) -> Result<()> {
    thread_local! {
        static LAST_GOOD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }
    let key = (subject.as_ptr().addr(), subject.len());
    if LAST_GOOD.with(Cell::get) == key {
        return Ok(());
    }
    check_publish(subject)?;
    LAST_GOOD.with(|last| last.set(key));
    Ok(())
}

/// [`check_publish`] for a subject that is not plain ASCII tokens.
#[cold]
#[inline(never)]
fn check_publish_closely(subject: &str) -> Result<()> {
    check_tokens(subject, |token| {
        if token.contains(['*', '>']) {
            Err("wildcards (`*`, `>`) may only be used to subscribe")
        } else {
            Ok(())
        }
    })
}

/// Whether `subject` is non-empty tokens of visible ASCII but `*` and `>`,
/// separated by single dots: what nearly every publish subject is. `false`
/// says nothing more (the subject may still be valid Unicode).
///
/// One pass over the bytes with a table; a faster eight-bytes-at-a-time
/// version saved about 15 instructions a publish, not worth its subtlety.
#[inline]
fn is_plain(subject: &[u8]) -> bool {
    let mut token_empty = true;
    let mut plain = true;
    for &byte in subject {
        if byte == b'.' {
            plain &= !token_empty;
            token_empty = true;
        } else {
            plain &= TOKEN_BYTE[usize::from(byte)];
            token_empty = false;
        }
    }
    plain && !token_empty
}

/// The bytes a token may hold without a closer look: visible ASCII but the
/// separator and the wildcards.
static TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0x21;
    while byte < 0x7f {
        // `.` (0x2e), `*` (0x2a) and `>` (0x3e) are not token bytes.
        table[byte] = !matches!(byte, 0x2e | 0x2a | 0x3e);
        byte += 1;
    }
    table
};

/// Checks a subject to subscribe to: as [`check_publish`], but `*` may stand
/// for a token and `>` for the rest.
///
/// # Errors
///
/// `InvalidArgument` naming the subject and what is wrong with it.
pub(crate) fn check_pattern(pattern: &str) -> Result<()> {
    let last = pattern.split('.').count().saturating_sub(1);
    let mut index = 0;
    check_tokens(pattern, |token| {
        let at = index;
        index += 1;
        match token {
            "*" => Ok(()),
            ">" if at == last => Ok(()),
            ">" => Err("`>` may only be the last token"),
            _ if token.contains(['*', '>']) => Err("wildcards must be whole tokens"),
            _ => Ok(()),
        }
    })
}

/// Checks a name used as one token or identifier (a queue group, a durable
/// consumer, a stream): non-empty, no whitespace, no `.`, `*` or `>`, at
/// most [`MAX_NAME_BYTES`].
///
/// # Errors
///
/// `InvalidArgument` saying what `what` may not contain.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_argument(format!(
            "`{}` is not a valid {what}: it is {} bytes long, at most {MAX_NAME_BYTES} are allowed",
            shown(name),
            name.len()
        )));
    }
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
    {
        return Err(Error::invalid_argument(format!(
            "`{name}` is not a valid {what}: it must be non-empty, without whitespace, `.`, `*` or `>`"
        )));
    }
    Ok(())
}

/// Checks a stream or durable consumer name: as [`check_name`], and without
/// `/` or `\`, which JetStream refuses in the names it stores as files.
///
/// # Errors
///
/// `InvalidArgument` saying what `what` may not contain.
pub(crate) fn check_stored_name(what: &str, name: &str) -> Result<()> {
    check_name(what, name)?;
    if name.contains(['/', '\\']) {
        return Err(Error::invalid_argument(format!(
            "`{name}` is not a valid {what}: JetStream refuses `/` and `\\` in it"
        )));
    }
    Ok(())
}

fn check_tokens(
    subject: &str,
    mut token_rule: impl FnMut(&str) -> Result<(), &'static str>,
) -> Result<()> {
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(Error::invalid_argument(format!(
            "`{}` is not a valid subject: it is {} bytes long, at most {MAX_SUBJECT_BYTES} are allowed",
            shown(subject),
            subject.len()
        )));
    }
    let problem = if subject.is_empty() {
        Some("it is empty")
    } else if subject.contains(char::is_whitespace) {
        Some("it contains whitespace")
    } else if subject.split('.').any(str::is_empty) {
        Some("it has an empty token (`..`, or a leading or trailing `.`)")
    } else {
        subject.split('.').find_map(|token| token_rule(token).err())
    };
    match problem {
        Some(problem) => Err(Error::invalid_argument(format!(
            "`{subject}` is not a valid subject: {problem}"
        ))),
        None => Ok(()),
    }
}

/// A checked subscription subject, split into tokens for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Vec<String>,
}

impl Pattern {
    /// Parses a subscription subject.
    ///
    /// # Errors
    ///
    /// As [`check_pattern`].
    pub(crate) fn new(pattern: &str) -> Result<Self> {
        check_pattern(pattern)?;
        Ok(Self {
            tokens: pattern.split('.').map(str::to_owned).collect(),
        })
    }

    /// Whether a (publish) subject matches.
    pub(crate) fn matches(&self, subject: &str) -> bool {
        let mut tokens = subject.split('.');
        for expected in &self.tokens {
            let Some(token) = tokens.next() else {
                return false;
            };
            match expected.as_str() {
                ">" => return true,
                "*" => {}
                literal if literal == token => {}
                _ => return false,
            }
        }
        tokens.next().is_none()
    }

    /// Whether every subject this pattern matches is also matched by `wider`
    /// (so a stream listening on `wider` stores what this pattern filters).
    #[cfg(feature = "nats")]
    pub(crate) fn is_covered_by(&self, wider: &Pattern) -> bool {
        for (at, token) in wider.tokens.iter().enumerate() {
            let Some(mine) = self.tokens.get(at) else {
                return false;
            };
            match (token.as_str(), mine.as_str()) {
                (">", _) => return true,
                (_, ">") => return false,
                ("*", _) => {}
                (theirs, mine) if theirs == mine => {}
                _ => return false,
            }
        }
        self.tokens.len() == wider.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_subjects_are_remembered_only_when_good() {
        const GOOD: &str = "orders.created";
        const BAD: &str = "orders.*";
        const EMPTY_TOKEN: &str = "orders..created";
        for _ in 0..3 {
            assert!(check_static_publish(GOOD).is_ok());
            // A refused subject is never remembered: refused every time.
            let refused = check_static_publish(BAD).unwrap_err();
            assert!(refused.to_string().contains("wildcards"), "{refused}");
            assert!(check_static_publish(EMPTY_TOKEN).is_err());
        }
        // Remembered by address and length: a prefix of a good subject at the
        // same address is checked on its own.
        assert!(check_static_publish(GOOD).is_ok());
        assert!(check_static_publish(&GOOD[..7]).is_err());
        assert!(check_static_publish("").is_err());
    }

    #[test]
    fn wildcards_match_whole_tokens() {
        let star = Pattern::new("orders.*.created").unwrap();
        assert!(star.matches("orders.eu.created"));
        assert!(!star.matches("orders.eu.west.created"));
        assert!(!star.matches("orders.created"));
        let rest = Pattern::new("orders.>").unwrap();
        assert!(rest.matches("orders.eu"));
        assert!(rest.matches("orders.eu.created"));
        assert!(!rest.matches("orders"));
        let exact = Pattern::new("orders.created").unwrap();
        assert!(exact.matches("orders.created"));
        assert!(!exact.matches("orders.created.late"));
    }

    #[test]
    fn malformed_subjects_are_invalid_arguments() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a.>.b", "a.b*"] {
            let err = check_pattern(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
        for bad in [
            "", "a..b", ".a", "a.", "a b", "a\tb", "a\u{a0}b", "a.*.b", "a>",
        ] {
            assert!(check_publish(bad).is_err(), "{bad:?}");
        }
        check_publish("commandes.créées").unwrap();
        assert!(check_publish("orders.*").is_err());
        assert!(check_publish("orders.>").is_err());
        check_publish("orders.created").unwrap();
        check_pattern("orders.>").unwrap();
        check_pattern(">").unwrap();
    }

    #[test]
    #[cfg(feature = "nats")]
    fn coverage_follows_the_wildcards() {
        let covered = |narrow: &str, wide: &str| {
            Pattern::new(narrow)
                .unwrap()
                .is_covered_by(&Pattern::new(wide).unwrap())
        };
        assert!(covered("orders.created", "orders.>"));
        assert!(covered("orders.*", "orders.>"));
        assert!(covered("orders.created", "orders.*"));
        assert!(!covered("orders.>", "orders.*"));
        assert!(!covered("orders", "orders.>"));
        assert!(!covered("users.created", "orders.>"));
    }

    /// The rule [`is_plain`] computes with its table, spelled out byte by byte.
    fn is_plain_bytewise(subject: &[u8]) -> bool {
        let mut token_empty = true;
        for &byte in subject {
            if byte == b'.' {
                if token_empty {
                    return false;
                }
                token_empty = true;
            } else if (0x21..0x7f).contains(&byte) && byte != b'*' && byte != b'>' {
                token_empty = false;
            } else {
                return false;
            }
        }
        !token_empty
    }

    #[test]
    fn the_word_wise_scan_agrees_with_the_bytewise_rule() {
        // Every byte value at every position of every length up to 24, in a
        // plain subject and next to a dot; then pseudo-random mixes of the
        // bytes that matter.
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    let mut subject = vec![b'a'; len];
                    subject[at] = byte;
                    assert_eq!(
                        is_plain(&subject),
                        is_plain_bytewise(&subject),
                        "{subject:?}"
                    );
                    if at + 1 < len {
                        subject[at + 1] = b'.';
                        assert_eq!(
                            is_plain(&subject),
                            is_plain_bytewise(&subject),
                            "{subject:?}"
                        );
                    }
                }
            }
        }
        let alphabet = [
            b'a', b'.', b'.', b'*', b'>', b' ', b'!', b'~', 0x7f, 0x20, 0x80, 0xff,
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..100_000 {
            let len = usize::try_from(next() % 40).unwrap();
            let subject: Vec<u8> = (0..len)
                .map(|_| alphabet[usize::try_from(next() % 12).unwrap()])
                .collect();
            assert_eq!(
                is_plain(&subject),
                is_plain_bytewise(&subject),
                "{subject:?}"
            );
        }
    }

    #[test]
    fn names_are_single_tokens() {
        check_name("queue group", "workers").unwrap();
        assert!(check_name("queue group", "a.b").is_err());
        assert!(check_name("queue group", "").is_err());
    }

    #[test]
    fn subjects_and_names_past_their_length_are_refused_before_nats_sees_them() {
        let longest = format!("orders.{}", "x".repeat(MAX_SUBJECT_BYTES - 7));
        assert_eq!(longest.len(), MAX_SUBJECT_BYTES);
        check_publish(&longest).unwrap();
        check_pattern(&longest).unwrap();
        let long = format!("{longest}x");
        for err in [check_publish(&long), check_pattern(&long)] {
            let err = err.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            assert!(
                err.to_string().contains("1025 bytes long, at most 1024"),
                "{err}"
            );
            assert!(
                err.to_string().len() < 300,
                "the message repeats the subject"
            );
        }
        let leaked: &'static str = Box::leak(long.into_boxed_str());
        assert!(check_static_publish(leaked).is_err());
        check_name("durable", &"d".repeat(MAX_NAME_BYTES)).unwrap();
        check_name("queue group", "a/b").unwrap();
        for stored in ["a/b", "a\\b"] {
            let err = check_stored_name("stream name", stored).unwrap_err();
            assert!(err.message().contains("JetStream refuses"), "{err}");
        }
        check_stored_name("stream name", "ORDERS_v2-eu").unwrap();
        let err = check_name("durable", &"é".repeat(MAX_NAME_BYTES)).unwrap_err();
        assert!(err.to_string().contains("at most 255"), "{err}");
    }
}
