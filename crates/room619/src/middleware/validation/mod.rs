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

    fn summary(&self) -> String {
        match self.violations.len() {
            1 => "1 field failed validation".to_owned(),
            n => format!("{n} fields failed validation"),
        }
    }
}

impl From<Invalid> for tonic::Status {
    fn from(invalid: Invalid) -> Self {
        let mut details = ErrorDetails::new();
        for violation in &invalid.violations {
            details.add_bad_request_violation(&violation.field, &violation.detail);
        }
        tonic::Status::with_error_details(tonic::Code::InvalidArgument, invalid.summary(), details)
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
        let body = ValidationProblem {
            problem: Problem::new(StatusCode::UNPROCESSABLE_ENTITY, self.summary()),
            errors: &self.violations,
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
}
