//! The axum side of the codecs: [`Decoded`], [`Accepted`] and [`Encoded`].

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header, request::Parts};
use serde::{Serialize, de::DeserializeOwned};

use super::Format;
use crate::Error;

/// Extracts a message decoded from the body by its `Content-Type`.
///
/// Rejections: `415` for a content type other than JSON or protobuf, a
/// `Content-Encoding` (the body is read as sent) or a JSON charset other
/// than UTF-8; `400` for a body that is not a valid message (never quoting
/// it); `413` over the body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoded<T>(pub T);

impl<T, S> FromRequest<S> for Decoded<T>
where
    T: DeserializeOwned + prost::Message + Default,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(format) = Format::from_media_type(&content_type) else {
            let shown = if content_type.is_empty() {
                "none"
            } else {
                "another"
            };
            return Err(Error::unsupported_media_type(format!(
                "this route reads application/json or application/x-protobuf; the request has {shown}"
            ))
            .into_response());
        };
        if let Some(unreadable) = super::format::unreadable_body(request.headers(), format) {
            return Err(unreadable.into_response());
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        format
            .decode(&body)
            .map(Decoded)
            .map_err(IntoResponse::into_response)
    }
}

/// Extracts the [`Format`] to answer in, from the `Accept` header.
#[derive(Debug, Clone, Copy)]
pub struct Accepted(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Accepted {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Format::from_headers(&parts.headers)
            .map(Accepted)
            .map_err(IntoResponse::into_response)
    }
}

/// An answer encoded in a chosen [`Format`], with its `Content-Type`.
#[derive(Debug, Clone)]
pub struct Encoded<T> {
    format: Format,
    status: StatusCode,
    value: T,
}

impl<T> Encoded<T> {
    /// `200 OK` with `value` in `format`.
    pub fn new(format: Format, value: T) -> Self {
        Self {
            format,
            status: StatusCode::OK,
            value,
        }
    }

    /// The same answer with another status (e.g. `201 Created`).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl<T: Serialize + prost::Message> IntoResponse for Encoded<T> {
    fn into_response(self) -> Response {
        match self.format.encode(&self.value) {
            Ok(body) => {
                let mut response = (self.status, body).into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.format.media_type()),
                );
                // The format was chosen by `Accept`: caches must not serve
                // this answer to a request that accepts another.
                headers.append(header::VARY, HeaderValue::from_static("accept"));
                response
            }
            Err(err) => err.into_response(),
        }
    }
}
