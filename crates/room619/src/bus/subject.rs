//! Subjects: dot-separated tokens (`orders.created`), checked before anything
//! is sent, and the NATS wildcard rules the in-memory backend matches with.
//!
//! A subscription's subject may use wildcards as whole tokens: `*` matches
//! exactly one token, `>` (last token only) matches one or more. A publish
//! subject has none.

use crate::{Error, Result};

/// Checks a subject to publish to: non-empty tokens, no wildcards, no
/// whitespace.
///
/// # Errors
///
/// `InvalidArgument` naming the subject and what is wrong with it.
#[inline]
pub(crate) fn check_publish(subject: &str) -> Result<()> {
    // This runs on every publish: one pass over the bytes, eight at a time,
    // decides; only a subject that fails it is looked at again, to say what
    // is wrong (and to judge non-ASCII text exactly).
    if is_plain(subject.as_bytes()) {
        Ok(())
    } else {
        check_publish_closely(subject)
    }
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

/// `0x01` in every byte.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// The high bit of every byte: the bit the masks below mark a byte with.
const HIGH: u64 = ONES * 0x80;
/// The low seven bits of every byte.
const LOW: u64 = ONES * 0x7f;
/// Eight plain bytes (`a`), to fill a short word with.
const PADDING: u64 = ONES * 0x61;

/// Whether `subject` is non-empty tokens of visible ASCII but `*` and `>`,
/// separated by single dots: what nearly every publish subject is. `false`
/// says nothing more (the subject may still be valid Unicode).
///
/// Eight bytes at a time (SWAR): in each mask below the high bit of a byte
/// tells about that byte alone (no sum carries into the next byte).
#[inline]
fn is_plain(subject: &[u8]) -> bool {
    if subject.first().is_none_or(|&first| first == b'.') || subject.last() == Some(&b'.') {
        return false;
    }
    let (words, rest) = subject.as_chunks::<8>();
    let mut plain = HIGH;
    // The high bit of byte 0 set when the byte before the word is a dot.
    let mut dot_before = 0;
    let mut scan = |word: u64| {
        let (token_bytes, dots) = classify(word);
        plain &= token_bytes & !(dots & ((dots << 8) | dot_before));
        dot_before = dots >> 56;
    };
    for word in words {
        scan(u64::from_le_bytes(*word));
    }
    if !rest.is_empty() {
        // The last bytes, in the low bytes of a word padded with plain ones:
        // read as the subject's last eight bytes when it has that many.
        let word = match subject.last_chunk::<8>() {
            Some(last) => {
                let shift = 8 * (8 - rest.len());
                (u64::from_le_bytes(*last) >> shift) | (PADDING << (64 - shift))
            }
            None => rest
                .iter()
                .rev()
                .fold(PADDING, |word, &byte| (word << 8) | u64::from(byte)),
        };
        scan(word);
    }
    plain == HIGH
}

/// The high bit of every byte of `word` that may stand in a token or is a
/// dot (visible ASCII, `0x21..=0x7e`, but `*` and `>`), and that of every
/// dot; bytes above `0x7f` are neither.
#[inline]
fn classify(word: u64) -> (u64, u64) {
    // On bytes below 0x80 (the others are ruled out by `ascii`) these sums
    // stay within the byte.
    let low = word & LOW;
    let ascii = !word;
    let from_0x21 = low + ONES * (0x80 - 0x21);
    let below_0x7f = !(low + ONES);
    // A byte's high bit is clear after `(byte ^ c) + 0x7f` only when it was `c`.
    let differs = |byte: u8| (low ^ (ONES * u64::from(byte))) + LOW;
    let token_bytes = ascii & from_0x21 & below_0x7f & differs(b'*') & differs(b'>') & HIGH;
    let dots = !differs(b'.') & token_bytes;
    (token_bytes, dots)
}

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
/// consumer, a stream): non-empty, no whitespace, no `.`, `*` or `>`.
///
/// # Errors
///
/// `InvalidArgument` saying what `what` may not contain.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
    {
        return Err(Error::invalid_argument(format!(
            "`{name}` is not a valid {what}: it must be non-empty, without whitespace, `.`, `*` or `>`"
        )));
    }
    Ok(())
}

fn check_tokens(
    subject: &str,
    mut token_rule: impl FnMut(&str) -> Result<(), &'static str>,
) -> Result<()> {
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

    /// The byte-at-a-time rule [`is_plain`] computes eight bytes at a time.
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
}
