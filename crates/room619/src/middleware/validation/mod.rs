//! Declarative request validation with [`garde`], answered the same way on
//! both protocols (feature `validate`).
//!
//! Request types derive `garde::Validate`. A failure lists every field:
//!
//! - gRPC: `INVALID_ARGUMENT` with a `google.rpc.BadRequest` in the status
//!   details (one field violation per error; read it with
//!   `tonic_types::StatusExt::get_details_bad_request`);
//! - HTTP: `422` problem+json with an `errors` array of `{field, detail}`.
//!
//! An answer lists at most [`MAX_LISTED`] violations and about 4 KiB of
//! their text (gRPC peers refuse trailers past 8 KiB by default); its
//! message says how many failed in all and how many are listed.
//!
//! A body that is not JSON, or JSON of the wrong shape, answers `400` with a
//! generic detail that never quotes the input.
//!
//! axum handlers take [`Valid<T>`] instead of `Json<T>`; tonic handlers call
//! [`validated`] on their request. For prost messages, add the derive and
//! rules with `tonic_prost_build`'s `type_attribute` / `field_attribute`.
//!
//! ```
//! use garde::Validate;
//! use room619::middleware::validation::{Valid, validated};
//!
//! #[derive(Debug, serde::Deserialize, Validate)]
//! struct NewUser {
//!     #[garde(length(min = 1, max = 64))]
//!     name: String,
//!     #[garde(range(min = 18))]
//!     age: u8,
//! }
//!
//! async fn create(Valid(user): Valid<NewUser>) -> String {
//!     user.name
//! }
//! let _: axum::routing::MethodRouter = axum::routing::post(create);
//!
//! // In a tonic handler: `let user = validated(request)?;`
//! let err = validated(tonic::Request::new(NewUser { name: String::new(), age: 3 })).unwrap_err();
//! assert_eq!(err.code(), tonic::Code::InvalidArgument);
//! ```

mod extract;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header::CONTENT_TYPE};
use serde::Serialize;
use tonic_types::{ErrorDetails, StatusExt as _};

pub use extract::Valid;

use crate::error::{PROBLEM_JSON, Problem};

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldViolation {
    /// The path of the field, such as `address.city` or `items[2].sku`.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The most violations an answer lists.
pub const MAX_LISTED: usize = 50;

/// The most bytes of field paths and details an answer lists, so that a
/// gRPC status's details stay inside the 8 KiB of metadata peers accept.
const LISTED_BYTES: usize = 4096;

/// The longest field path or detail listed, in bytes; longer ones (a path
/// through a map with long keys) are cut at a character boundary.
const LISTED_TEXT: usize = 256;

/// A request that failed validation: every field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    violations: Vec<FieldViolation>,
}

impl Invalid {
    /// The violations of a garde report.
    #[must_use]
    pub fn from_report(report: &garde::Report) -> Self {
        Self {
            violations: report
                .iter()
                .map(|(path, error)| FieldViolation {
                    field: path.to_string(),
                    detail: error.message().to_owned(),
                })
                .collect(),
        }
    }

    /// A failure listing `violations`, for checks garde does not express
    /// (a service's own rules, a uniqueness check).
    #[must_use]
    pub fn new(violations: Vec<FieldViolation>) -> Self {
        Self { violations }
    }

    /// The field violations an `INVALID_ARGUMENT` status from a peer carries
    /// in a `google.rpc.BadRequest`, so a gateway can answer `422` with them;
    /// `None` for any other status, or one without violations.
    #[must_use]
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        if status.code() != tonic::Code::InvalidArgument {
            return None;
        }
        let violations: Vec<FieldViolation> = status
            .get_details_bad_request()?
            .field_violations
            .into_iter()
            .map(|violation| FieldViolation {
                field: violation.field,
                detail: violation.description,
            })
            .collect();
        (!violations.is_empty()).then_some(Self { violations })
    }

    /// The field violations.
    #[must_use]
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    /// The violations an answer lists: the first ones, up to [`MAX_LISTED`]
    /// and [`LISTED_BYTES`] of text, each path and detail cut at
    /// [`LISTED_TEXT`] bytes.
    fn listed(&self) -> Vec<FieldViolation> {
        let mut budget = LISTED_BYTES;
        let mut listed = Vec::new();
        for violation in self.violations.iter().take(MAX_LISTED) {
            let field = cut(&violation.field);
            let detail = cut(&violation.detail);
            let Some(left) = budget.checked_sub(field.len() + detail.len()) else {
                break;
            };
            budget = left;
            listed.push(FieldViolation {
                field: field.to_owned(),
                detail: detail.to_owned(),
            });
        }
        listed
    }

    fn summary(&self, listed: usize) -> String {
        match (self.violations.len(), listed) {
            (1, _) => "1 field failed validation".to_owned(),
            (total, listed) if listed == total => format!("{total} fields failed validation"),
            (total, listed) => {
                format!("{total} fields failed validation; the first {listed} are listed")
            }
        }
    }
}

/// `text` up to [`LISTED_TEXT`] bytes, cut at a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(LISTED_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl From<Invalid> for tonic::Status {
    fn from(invalid: Invalid) -> Self {
        let listed = invalid.listed();
        let mut details = ErrorDetails::new();
        for violation in &listed {
            details.add_bad_request_violation(&violation.field, &violation.detail);
        }
        tonic::Status::with_error_details(
            tonic::Code::InvalidArgument,
            invalid.summary(listed.len()),
            details,
        )
    }
}

#[derive(Serialize)]
struct ValidationProblem<'a> {
    #[serde(flatten)]
    problem: Problem,
    errors: &'a [FieldViolation],
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let listed = self.listed();
        let body = ValidationProblem {
            problem: Problem::new(StatusCode::UNPROCESSABLE_ENTITY, self.summary(listed.len())),
            errors: &listed,
        };
        let mut response = (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::to_vec(&body).unwrap_or_default(),
        )
            .into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// Validates `value`.
///
/// # Errors
///
/// [`Invalid`] listing every field that failed.
pub fn validate<T>(value: &T) -> Result<(), Invalid>
where
    T: garde::Validate,
    T::Context: Default,
{
    value
        .validate()
        .map_err(|report| Invalid::from_report(&report))
}

/// The message of a tonic request, validated.
///
/// # Errors
///
/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` listing every field
/// that failed.
pub fn validated<T>(request: tonic::Request<T>) -> Result<T, tonic::Status>
where
    T: garde::Validate,
    T::Context: Default,
{
    let message = request.into_inner();
    validate(&message)?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_survive_a_trip_through_a_grpc_status() {
        let sent = Invalid::new(vec![FieldViolation {
            field: "name".to_owned(),
            detail: "too long".to_owned(),
        }]);
        let status = tonic::Status::from(sent.clone());
        assert_eq!(Invalid::from_status(&status), Some(sent));
    }

    #[test]
    fn other_statuses_carry_no_violations() {
        assert_eq!(
            Invalid::from_status(&tonic::Status::invalid_argument("bad")),
            None
        );
        let details = tonic::Status::from(Invalid::new(vec![FieldViolation {
            field: "x".to_owned(),
            detail: "y".to_owned(),
        }]));
        let other = tonic::Status::with_details(
            tonic::Code::NotFound,
            "gone",
            details.details().to_vec().into(),
        );
        assert_eq!(Invalid::from_status(&other), None);
    }

    fn many(count: usize, detail: &str) -> Invalid {
        Invalid::new(
            (0..count)
                .map(|i| FieldViolation {
                    field: format!("items[{i}].sku"),
                    detail: detail.to_owned(),
                })
                .collect(),
        )
    }

    #[test]
    fn an_answer_lists_a_bounded_number_of_violations_and_says_how_many_failed() {
        let invalid = many(10_000, "length is lower than 1");
        assert_eq!(
            invalid.violations().len(),
            10_000,
            "the value keeps them all"
        );

        let status = tonic::Status::from(invalid.clone());
        let listed = Invalid::from_status(&status).map(|i| i.violations().len());
        assert_eq!(listed, Some(MAX_LISTED));
        assert_eq!(
            status.message(),
            format!("10000 fields failed validation; the first {MAX_LISTED} are listed")
        );
        assert!(
            status.details().len() < 8 * 1024 * 3 / 4,
            "{}",
            status.details().len()
        );

        let response = invalid.into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn long_details_are_listed_within_the_byte_budget_cut_at_a_character_boundary() {
        let invalid = many(40, &"é".repeat(1000));
        let status = tonic::Status::from(invalid);
        let listed = Invalid::from_status(&status).map(|i| i.violations().to_vec());
        let listed = listed.unwrap_or_default();
        assert!(!listed.is_empty() && listed.len() < 40, "{}", listed.len());
        for violation in &listed {
            assert!(
                violation.detail.len() <= LISTED_TEXT,
                "{}",
                violation.detail.len()
            );
            assert!(violation.detail.chars().all(|c| c == 'é'));
        }
        let text: usize = listed.iter().map(|v| v.field.len() + v.detail.len()).sum();
        assert!(text <= LISTED_BYTES, "{text}");
        assert_eq!(
            status.message(),
            format!(
                "40 fields failed validation; the first {} are listed",
                listed.len()
            )
        );
    }

    #[test]
    fn a_short_list_is_answered_whole() {
        let status = tonic::Status::from(many(3, "bad"));
        assert_eq!(status.message(), "3 fields failed validation");
        assert_eq!(
            Invalid::from_status(&status).map(|i| i.violations().len()),
            Some(3)
        );
    }
}
