//! The input rules the services and the gateway share, so that a value the
//! gateway's OpenAPI document calls valid is valid all the way down (and
//! schemathesis holds the document to it).

/// An email: 3 to 254 characters, no spaces or control characters, one `@`
/// between a name and a domain of dot-separated, non-empty labels with at
/// least one dot. The OpenAPI pattern of [`email_problem`] (its length is
/// the schema's `minLength`/`maxLength`).
pub const EMAIL_PATTERN: &str = r"^[^@\s\u0000-\u001F\u007F-\u009F]+@[^@.\s\u0000-\u001F\u007F-\u009F]+(\.[^@.\s\u0000-\u001F\u007F-\u009F]+)+$";

/// A display name: at least one character that is not a space, and no
/// control characters. The OpenAPI pattern of [`name_problem`].
pub const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

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
    name.chars()
        .any(char::is_control)
        .then(|| "must not contain control characters".to_owned())
}

/// Whether `c` is a space as the patterns' `\s` has it (ECMAScript's,
/// which readers of the OpenAPI document use): Unicode's white space and
/// U+FEFF, which Rust's `char::is_whitespace` (and so `trim`) leaves out.
#[must_use]
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

#[cfg(test)]
mod tests {
    use super::{email_problem, name_problem};

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

    #[test]
    fn names_are_short_and_printable() {
        assert_eq!(name_problem("Ada", 100), None);
        assert!(name_problem("", 100).is_some());
        assert!(name_problem(&"x".repeat(101), 100).is_some());
        assert!(name_problem("A\u{1d}da", 100).is_some());
        // Spaces as the OpenAPI pattern's `\s` counts them.
        assert!(name_problem("\u{feff}", 100).is_some());
        assert!(name_problem("\u{feff} \u{3000}", 100).is_some());
        assert_eq!(name_problem("Ada\u{feff}", 100), None);
    }
}
