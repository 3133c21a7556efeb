//! The checks of a sign-up: every bad field is reported, as a
//! `google.rpc.BadRequest` in an `INVALID_ARGUMENT` status.

use shop_proto::auth::v1::SignUpRequest;

use crate::rules::{email_problem, name_problem};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// Password length bounds, in characters.
pub(crate) const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;
/// The longest name, in characters.
const MAX_NAME: usize = 100;

/// A sign-up that passed the checks: the email normalized (trimmed,
/// lowercase), the name trimmed.
#[derive(Debug)]
pub(crate) struct SignUp {
    pub(crate) email: String,
    pub(crate) password: String,
    pub(crate) name: String,
}

/// The login form of an email: trimmed and lowercase.
pub(crate) fn normalize_email(email: &str) -> String {
    crate::rules::normalize_email(email)
}

/// Checks a sign-up request.
pub(crate) fn sign_up(request: SignUpRequest) -> Result<SignUp, Status> {
    let email = normalize_email(&request.email);
    let name = request.name.trim().to_owned();
    let mut violations = Vec::new();
    if let Some(problem) = email_problem(&email) {
        violations.push(("email", problem));
    }
    let password_chars = request.password.chars().count();
    if !PASSWORD_CHARS.contains(&password_chars) {
        violations.push((
            "password",
            format!(
                "must be {} to {} characters long (got {password_chars})",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            ),
        ));
    }
    if let Some(problem) = name_problem(&name, MAX_NAME) {
        violations.push(("name", problem));
    }
    if violations.is_empty() {
        return Ok(SignUp {
            email,
            password: request.password,
            name,
        });
    }
    let summary = violations
        .iter()
        .map(|(field, problem)| format!("{field}: {problem}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for (field, problem) in &violations {
        details.add_bad_request_violation(*field, problem);
    }
    Err(Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid sign-up: {summary}"),
        details,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(email: &str, password: &str, name: &str) -> SignUpRequest {
        SignUpRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn a_good_sign_up_is_normalized() {
        let ok = sign_up(request(" Ada@Example.COM ", "correct horse", " Ada ")).unwrap();
        assert_eq!(ok.email, "ada@example.com");
        assert_eq!(ok.name, "Ada");
        assert_eq!(ok.password, "correct horse");
    }

    #[test]
    fn every_bad_field_is_reported() {
        let status = sign_up(request("no-at-sign", "short", "  ")).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(fields, ["email", "password", "name"]);
        for email in ["a@b@c", "@b.c", "a@", "a b@c.d", "a@.c", "a@c..d", "ab"] {
            assert!(email_problem(email).is_some(), "{email}");
        }
        let long = "p".repeat(129);
        assert!(sign_up(request("a@b.c", &long, "A")).is_err());
        assert!(sign_up(request("a@b.c", &"p".repeat(128), &"n".repeat(100))).is_ok());
        assert!(sign_up(request("a@b.c", "12345678", &"n".repeat(101))).is_err());
    }

    /// An address or a name with an invisible format character would look
    /// like another's (`ada@example.com`, `Ada`) and be another account.
    #[test]
    fn invisible_format_characters_are_refused() {
        let status = sign_up(request(
            "ad\u{200b}a@example.com",
            "correct horse",
            "A\u{2060}da",
        ))
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = status.get_details_bad_request().unwrap().field_violations;
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "name"]);
        assert!(
            violations
                .iter()
                .all(|v| v.description.contains("invisible format characters")),
            "{violations:?}"
        );
        // Trimming does not take them away: they are not spaces.
        assert!(sign_up(request("ada@example.com\u{feff}", "correct horse", "Ada")).is_err());
        assert!(sign_up(request("ada@example.com", "correct horse", "\u{2060}Ada")).is_err());
    }
}
