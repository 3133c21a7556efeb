//! RFC 9457 problem details: the body of every HTTP error room619 sends.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
///
/// ```
/// use room619::error::Problem;
///
/// let problem = Problem::new(http::StatusCode::NOT_FOUND, "no route for GET /nope");
/// let json = serde_json::to_value(&problem).unwrap();
/// assert_eq!(json["status"], 404);
/// assert_eq!(json["title"], "Not Found");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// The short summary of the problem type (the status's reason phrase).
    pub title: Cow<'static, str>,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: Cow<'static, str>,
    /// A URI reference to this occurrence (usually the request path).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub instance: Option<String>,
}

impl Problem {
    /// A problem of type `about:blank` for `status`, with `detail`.
    #[must_use]
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: Cow::Borrowed("about:blank"),
            title: Cow::Borrowed(status.canonical_reason().unwrap_or("Error")),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
        }
    }

    /// Names the occurrence, usually the request path.
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}
