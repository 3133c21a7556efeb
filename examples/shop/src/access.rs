//! Who is calling: the authenticated principal of a gRPC request.

use room619::{Error, middleware::auth::Principal};

/// The caller of a request, proved by the framework's auth layer.
///
/// # Errors
///
/// `Unauthenticated` when the request carries no principal (no `[auth]`
/// on the node, or a public route).
pub(crate) fn caller(extensions: &tonic::Extensions) -> room619::Result<Principal> {
    Principal::of(extensions)
        .cloned()
        .ok_or_else(|| Error::unauthenticated("this method needs an access token"))
}

/// Checks that a required id field is set.
///
/// # Errors
///
/// `InvalidArgument` naming `field` when `value` is empty.
pub(crate) fn required<'a>(field: &str, value: &'a str) -> room619::Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid_argument(format!("{field} is required")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value)
}
