//! The input rules the services and the gateway share, so that a value the
//! gateway's OpenAPI document calls valid is valid all the way down (and
//! schemathesis holds the document to it).

/// The characters no email or name may hold, as the inside of a regular
/// expression's character class: the control characters (Unicode's `Cc`,
/// [`char::is_control`]) and the format characters (`Cf`, [`is_format`]).
/// Those of the Basic Multilingual Plane are `\uXXXX` escapes, which
/// ECMAScript, Python and Rust read alike; the others are the characters
/// themselves, as no escape for them reads the same in all three (`\u{..}`
/// is ECMAScript's, `\U........` Python's).
macro_rules! unseen {
    () => {
        concat!(
            r"\u0000-\u001F\u007F-\u009F",
            r"\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u180E\u200B-\u200F",
            r"\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB",
            "\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}",
            "\u{E0001}\u{E0020}-\u{E007F}",
        )
    };
}

/// As [`unseen!`], for names: without the format characters that belong in
/// written text ([`joins`]: the zero-width non-joiner and joiner).
macro_rules! unseen_in_names {
    () => {
        concat!(
            r"\u0000-\u001F\u007F-\u009F",
            r"\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u180E\u200B\u200E-\u200F",
            r"\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB",
            "\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}",
            "\u{E0001}\u{E0020}-\u{E007F}",
        )
    };
}

/// An email: 3 to 254 characters, no spaces, control or format characters,
/// one `@` between a name and a domain of dot-separated, non-empty labels
/// with at least one dot. The OpenAPI pattern of [`email_problem`] (its
/// length is the schema's `minLength`/`maxLength`).
pub const EMAIL_PATTERN: &str = concat!(
    r"^[^@\s",
    unseen!(),
    r"]+@[^@.\s",
    unseen!(),
    r"]+(\.[^@.\s",
    unseen!(),
    r"]+)+$"
);

/// A display name: at least one character that is not a space, and no
/// control or format characters but those of written text ([`joins`]).
/// The OpenAPI pattern of [`name_problem`].
pub const NAME_PATTERN: &str = concat!(
    r"^[^",
    unseen_in_names!(),
    r"]*[^\s",
    unseen_in_names!(),
    r"][^",
    unseen_in_names!(),
    r"]*$"
);

/// What [`email_problem`] and [`name_problem`] say of a format character.
pub const FORMAT_PROBLEM: &str = "must not contain invisible format characters (such as \
     U+200B ZERO WIDTH SPACE, U+00AD SOFT HYPHEN or U+202E RIGHT-TO-LEFT OVERRIDE)";

/// The shortest and longest email, in characters.
pub const EMAIL_CHARS: std::ops::RangeInclusive<usize> = 3..=254;

/// An email as the shop stores and compares it: trimmed, lower-cased and
/// in Unicode normal form C, so that `josé` typed with one code point or
/// with `e` and a combining accent is one address, not two accounts that
/// look the same.
#[must_use]
pub fn normalize_email(email: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    email.trim().to_lowercase().nfc().collect()
}

/// What is wrong with `email` (already trimmed), if anything.
#[must_use]
pub fn email_problem(email: &str) -> Option<String> {
    let chars = email.chars().count();
    if !EMAIL_CHARS.contains(&chars) {
        return Some(format!(
            "must be {} to {} characters long (got {chars})",
            EMAIL_CHARS.start(),
            EMAIL_CHARS.end()
        ));
    }
    if email.chars().any(|c| is_space(c) || c.is_control()) {
        return Some("must not contain spaces or control characters".to_owned());
    }
    // Invisible, they would make addresses that look like another's.
    if email.chars().any(is_format) {
        return Some(FORMAT_PROBLEM.to_owned());
    }
    let well_formed = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty())
    });
    (!well_formed)
        .then(|| "must look like name@example.com: one `@`, then a domain with a dot".to_owned())
}

/// What is wrong with a display name of at most `max` characters (already
/// trimmed), if anything.
#[must_use]
pub fn name_problem(name: &str, max: usize) -> Option<String> {
    let chars = name.chars().count();
    if chars == 0 || chars > max {
        return Some(format!(
            "must be 1 to {max} characters long, not counting surrounding spaces (got {chars})"
        ));
    }
    if name.chars().all(is_space) {
        return Some("must contain a character that is not a space".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters".to_owned());
    }
    // Invisible, they would make names that look empty or like another's
    // (or, reversing the text after them, say something else); the joiners
    // are part of how some names are written.
    name.chars()
        .any(|c| is_format(c) && !joins(c))
        .then(|| FORMAT_PROBLEM.to_owned())
}

/// Whether `c` is a format character that belongs in written text: the
/// zero-width non-joiner (U+200C, Persian and Indic spelling) and the
/// zero-width joiner (U+200D, emoji sequences such as a family or a rainbow
/// flag). Not the tags (U+E0020–U+E007F): outside the few subdivision
/// flags they spell hidden text.
#[must_use]
pub fn joins(c: char) -> bool {
    matches!(c, '\u{200c}' | '\u{200d}')
}

/// Whether `c` is a space as the patterns' `\s` has it (ECMAScript's,
/// which readers of the OpenAPI document use): Unicode's white space and
/// U+FEFF, which Rust's `char::is_whitespace` (and so `trim`) leaves out.
#[must_use]
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// Whether `c` is a format character, Unicode's general category `Cf`
/// (Unicode 15): invisible characters that change how the text around them
/// is shown, such as zero-width spaces and joiners, the soft hyphen,
/// bidirectional overrides and isolates, and tags.
#[must_use]
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::{EMAIL_PATTERN, NAME_PATTERN, email_problem, is_format, joins, name_problem};

    #[test]
    fn emails_are_compared_trimmed_lower_cased_and_composed() {
        let composed = super::normalize_email(" Jos\u{e9}@Example.com ");
        let decomposed = super::normalize_email("JOSE\u{301}@example.COM");
        assert_eq!(composed, "jos\u{e9}@example.com");
        assert_eq!(decomposed, composed);
    }

    #[test]
    fn emails_need_a_name_one_at_and_a_dotted_domain() {
        for good in ["a@b.c", "ada.lovelace+shop@example.co.uk"] {
            assert_eq!(email_problem(good), None, "{good}");
        }
        let long = format!("a@{}.com", "b".repeat(250));
        for bad in [
            "ab",
            "@b.c",
            "a@b",
            "a@b..c",
            "a@.b",
            "a@@b.c",
            "a b@c.d",
            "a@b.c\u{7}",
            "a\u{feff}@b.c",
            &long,
        ] {
            assert!(email_problem(bad).is_some(), "{bad}");
        }
    }

    /// Invisible characters would make an address that looks like
    /// another's: `ada@example.com` with a zero-width space is another
    /// account to the database, not to a person.
    #[test]
    fn emails_with_invisible_format_characters_are_refused() {
        for invisible in [
            "ad\u{200b}a@example.com",
            "ada\u{200c}@example.com",
            "ada@exa\u{200d}mple.com",
            "ada@example.com\u{2060}",
            "a\u{ad}da@example.com",
            "\u{202e}moc.elpmaxe@ada",
            "ada\u{2066}@example.com",
            "ada@example.com\u{e0001}",
        ] {
            let problem = email_problem(invisible);
            assert!(
                problem.as_deref().is_some_and(|p| p.contains("format")),
                "{invisible:?}: {problem:?}"
            );
        }
    }

    #[test]
    fn names_are_short_and_printable() {
        assert_eq!(name_problem("Ada", 100), None);
        assert!(name_problem("", 100).is_some());
        assert!(name_problem(&"x".repeat(101), 100).is_some());
        assert!(name_problem("A\u{1d}da", 100).is_some());
        // Spaces as the OpenAPI pattern's `\s` counts them.
        assert!(name_problem("\u{feff}", 100).is_some());
        assert!(name_problem("\u{feff} \u{3000}", 100).is_some());
        // U+FEFF is a format character too.
        assert!(name_problem("Ada\u{feff}", 100).is_some());
        // Letters of any script, combining accents and emoji are fine.
        assert_eq!(
            name_problem("Jos\u{e9} \u{5f20}\u{4f1f} e\u{301} \u{1f600}", 100),
            None
        );
        // So are the joiners of written text: a Persian name with its
        // non-joiner, a family emoji.
        for written in [
            "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}",
            "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}",
        ] {
            assert_eq!(name_problem(written, 100), None, "{written:?}");
        }
    }

    /// Names that look empty, or like another's, or that reverse the text
    /// shown after them.
    #[test]
    fn names_with_invisible_format_characters_are_refused() {
        for invisible in [
            "\u{200b}",
            "\u{200b}\u{200c}\u{200d}",
            "Ada\u{2060}",
            "A\u{ad}da",
            "Ada \u{202e}nimda",
            "\u{2067}Ada\u{2069}",
            "Ada\u{e0001}",
        ] {
            let problem = name_problem(invisible, 100);
            assert!(
                problem.as_deref().is_some_and(|p| p.contains("format")),
                "{invisible:?}: {problem:?}"
            );
        }
    }

    /// The ranges of `Cf` [`is_format`] lists, at their edges.
    #[test]
    fn format_characters_are_unicodes_cf() {
        let cf = "\u{ad}\u{600}\u{605}\u{61c}\u{6dd}\u{70f}\u{890}\u{891}\u{8e2}\u{180e}\u{200b}\
                  \u{200f}\u{202a}\u{202e}\u{2060}\u{2064}\u{2066}\u{206f}\u{feff}\u{fff9}\
                  \u{fffb}\u{110bd}\u{110cd}\u{13430}\u{1343f}\u{1bca0}\u{1bca3}\u{1d173}\
                  \u{1d17a}\u{e0001}\u{e0020}\u{e007f}";
        for c in cf.chars() {
            assert!(is_format(c), "U+{:04X}", u32::from(c));
        }
        let other = "a \u{0}\u{ac}\u{ae}\u{606}\u{200a}\u{2010}\u{2065}\u{fefe}\u{fffc}\u{e0000}\
                     \u{e0080}\u{1f600}";
        for c in other.chars() {
            assert!(!is_format(c), "U+{:04X}", u32::from(c));
        }
    }

    /// The class of the patterns, read back: `(first, last)` ranges.
    fn class(fragment: &str) -> Vec<(char, char)> {
        fn one(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> char {
            let c = chars.next().unwrap();
            if c != '\\' {
                return c;
            }
            assert_eq!(chars.next(), Some('u'), "only `\\u` escapes are written");
            let hex: String = chars.by_ref().take(4).collect();
            char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
        }
        let mut chars = fragment.chars().peekable();
        let mut ranges = Vec::new();
        while chars.peek().is_some() {
            let first = one(&mut chars);
            let last = if chars.peek() == Some(&'-') {
                chars.next();
                one(&mut chars)
            } else {
                first
            };
            assert!(first <= last, "{first:?}-{last:?}");
            ranges.push((first, last));
        }
        ranges
    }

    /// The patterns refuse exactly the characters the services refuse:
    /// control and format characters, every one of them.
    #[test]
    fn the_patterns_refuse_what_the_rules_refuse() {
        let ranges = class(unseen!());
        for c in '\0'..=char::MAX {
            let in_class = ranges
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&c));
            assert_eq!(
                in_class,
                c.is_control() || is_format(c),
                "U+{:04X}",
                u32::from(c)
            );
        }
        let name_ranges = class(unseen_in_names!());
        for c in '\0'..=char::MAX {
            let in_class = name_ranges
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&c));
            assert_eq!(
                in_class,
                c.is_control() || (is_format(c) && !joins(c)),
                "U+{:04X} in names",
                u32::from(c)
            );
        }
        assert_eq!(EMAIL_PATTERN.matches(unseen!()).count(), 3);
        assert_eq!(NAME_PATTERN.matches(unseen_in_names!()).count(), 3);
        assert!(EMAIL_PATTERN.starts_with(r"^[^@\s\u0000-\u001F"));
        assert!(NAME_PATTERN.ends_with("]*$"));
    }
}
