//! The gateway's extractors: the caller's bearer token, a resource id from
//! the path and validated query parameters, each refusing bad input with a
//! problem document (JSON bodies use the framework's
//! [`Valid`](room619::middleware::validation::Valid)).

use axum::extract::{FromRequestParts, Path, Query};
use http::{header::AUTHORIZATION, request::Parts};
use room619::middleware::validation::validate;
use serde::de::DeserializeOwned;
use tonic::metadata::AsciiMetadataValue;

use super::error::ApiError;

/// The longest resource id.
const MAX_ID: usize = 64;
/// The most characters of a parser's message quoted in a problem.
const MAX_QUOTED: usize = 200;

/// Whether `value` is a well-formed resource id: 1 to 64 ASCII letters,
/// digits, `-` or `_` (the OpenAPI document's `^[A-Za-z0-9_-]{1,64}$`).
///
/// # Errors
///
/// What is wrong with it, naming `field`.
pub(crate) fn check_id(field: &str, value: &str) -> Result<(), String> {
    let well_formed = (1..=MAX_ID).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "`{field}` must be 1 to {MAX_ID} ASCII letters, digits, `-` or `_`"
        ))
    }
}

/// The caller's `Authorization: Bearer` token, forwarded to the services in
/// the gRPC `authorization` metadata. Missing or malformed: `401`.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(AsciiMetadataValue);

impl Bearer {
    /// `message` as a gRPC request carrying the caller's token.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        request
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "this route needs `Authorization: Bearer <token>`",
            ));
        };
        let malformed =
            || ApiError::unauthenticated("the Authorization header must be `Bearer <token>`");
        let text = value.to_str().map_err(|_| malformed())?;
        let (scheme, token) = text.trim().split_once(' ').ok_or_else(malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(malformed());
        }
        let value = format!("Bearer {token}")
            .parse::<AsciiMetadataValue>()
            .map_err(|_| malformed())?;
        Ok(Self(value))
    }
}

/// The `{id}` of a route's path, checked with [`check_id`]: `400` otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Id(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(format!(
                    "the path is invalid: {}",
                    quoted(&rejection.body_text())
                ))
            })?;
        check_id("id", &id).map_err(ApiError::bad_request)?;
        Ok(Self(id))
    }
}

/// Query parameters as a `T`, validated with garde: `400` when they do not
/// parse (unknown names included), `422` with every field error when they
/// fail validation.
#[derive(Debug, Clone)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::try_from_uri(&parts.uri).map_err(|rejection| {
            ApiError::bad_request(format!(
                "the query string is invalid: {}",
                quoted(&rejection.body_text())
            ))
        })?;
        validate(&value)?;
        Ok(Self(value))
    }
}

/// A parser's message, without axum's prefix and cut to a sane length.
fn quoted(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .or_else(|| text.strip_prefix("Invalid URL: "))
        .unwrap_or(text);
    text.chars().take(MAX_QUOTED).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_plain() {
        assert!(check_id("id", "01HZX3-abc_9").is_ok());
        assert!(check_id("id", &"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "é", &"a".repeat(65)] {
            let err = check_id("id", bad).unwrap_err();
            assert!(err.contains("`id`"), "{err}");
        }
    }
}
