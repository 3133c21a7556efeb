//! [`Valid`]: a JSON body, parsed and validated.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;

use super::validate;
use crate::Error;

/// An axum extractor: the JSON body as a `T`, validated with garde.
///
/// Rejections: `415` without a JSON content type, or with a
/// `Content-Encoding` or a charset other than UTF-8, `400` for a body that is
/// not JSON or not a `T` (never quoting the input), `413` over the body
/// limit, `422` with every field error when validation fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct Valid<T>(pub T);

impl<S, T> FromRequest<S> for Valid<T>
where
    S: Send + Sync,
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(crate::rpc::codec::Format::from_media_type)
            == Some(crate::rpc::codec::Format::Json);
        // Another content type is axum's rejection, which says so.
        if json
            && let Some(unreadable) = crate::rpc::codec::unreadable_body(
                request.headers(),
                crate::rpc::codec::Format::Json,
            )
        {
            return Err(unreadable.into_response());
        }
        let Json(value) = Json::<T>::from_request(request, state)
            .await
            .map_err(|rejection| malformed(&rejection).into_response())?;
        validate(&value).map_err(IntoResponse::into_response)?;
        Ok(Self(value))
    }
}

/// The answer to a body that could not be read as JSON, without its text.
fn malformed(rejection: &JsonRejection) -> Error {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Error::unsupported_media_type("the body must be `application/json`")
        }
        JsonRejection::JsonSyntaxError(_) => Error::invalid_argument("the body is not valid JSON"),
        JsonRejection::JsonDataError(_) => Error::invalid_argument(
            "the JSON body does not have the fields and types this route expects",
        ),
        other if other.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
            Error::payload_too_large("the body is larger than the limit")
        }
        _ => Error::invalid_argument("the body could not be read"),
    }
}
