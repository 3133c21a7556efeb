//! The REST API's request and response bodies and query parameters: the
//! gateway's own types (not the prost messages), validated with garde by the
//! rules the `.proto` comments state, and described for OpenAPI by utoipa.
//!
//! Request bodies refuse unknown fields; string lengths count characters
//! (Unicode scalar values), as JSON Schema's `maxLength` does.

use garde::Validate;
use serde::{Deserialize, Serialize};
use shop_proto::{auth::v1 as auth, products::v1 as products, users::v1 as users};
use utoipa::{IntoParams, ToSchema};

use super::extract::check_id;

/// The largest price, in cents (`products.v1`: 0 to 100 000 000 00).
pub(crate) const MAX_PRICE_CENTS: i64 = 10_000_000_000;

/// An email has exactly one `@` (`auth.v1.SignUpRequest`).
fn valid_email<C>(value: &str, _context: &C) -> garde::Result {
    crate::rules::email_problem(value).map_or(Ok(()), |problem| Err(garde::Error::new(problem)))
}

fn display_name<C>(value: &str, _context: &C) -> garde::Result {
    crate::rules::name_problem(value.trim(), 100)
        .map_or(Ok(()), |problem| Err(garde::Error::new(problem)))
}

/// A product's name besides its length (checked on its own): not only
/// spaces, no control or format characters but those of written text (the products service's rule,
/// [`crate::rules::name_problem`]).
fn product_name<C>(value: &str, _context: &C) -> garde::Result {
    if value.chars().all(crate::rules::is_space) {
        return Err(garde::Error::new("must not be only spaces"));
    }
    single_line(Some(value))?;
    if value
        .chars()
        .any(|c| crate::rules::is_format(c) && !crate::rules::joins(c))
    {
        return Err(garde::Error::new(crate::rules::FORMAT_PROBLEM));
    }
    Ok(())
}

/// A change of a product names at least one field to change.
fn something_to_change<C>(body: &UpdateProductBody, _context: &C) -> garde::Result {
    if body.name.is_none() && body.description.is_none() && body.price_cents.is_none() {
        return Err(garde::Error::new(
            "nothing to change: name at least one of `name`, `description` and `price_cents`",
        ));
    }
    Ok(())
}

/// Text with line breaks and tabs but no other control character.
fn multiline<C>(value: &str, _context: &C) -> garde::Result {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(garde::Error::new(
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

/// Text without control characters.
fn single_line(value: Option<&str>) -> garde::Result {
    if value.is_some_and(|value| value.chars().any(char::is_control)) {
        return Err(garde::Error::new("must not contain control characters"));
    }
    Ok(())
}

/// A field that may be left out but not given as `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A JSON number with no fractional part as an `i64`: JSON Schema's
/// `integer` admits `12.0`, serde's `i64` does not.
fn whole<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    whole_number(&number).ok_or_else(|| serde::de::Error::custom("expected a whole number"))
}

/// As [`whole`], for a field that may be left out but not be `null`.
fn present_whole<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    whole(deserializer).map(Some)
}

fn whole_number(number: &serde_json::Number) -> Option<i64> {
    if let Some(value) = number.as_i64() {
        return Some(value);
    }
    // A float: whole when its shortest form is `<digits>.0` (no exponent).
    let text = number.to_string();
    let (whole, fraction) = text.split_once('.')?;
    if fraction.bytes().all(|b| b == b'0') {
        whole.parse().ok()
    } else {
        None
    }
}

/// An owner id, when given, is a well-formed id.
fn valid_owner(value: Option<&str>) -> garde::Result {
    value.map_or(Ok(()), |id| {
        check_id("owner_id", id).map_err(garde::Error::new)
    })
}

// ---- auth -----------------------------------------------------------------

/// `POST /v1/auth/signup`: a new account.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignUpBody {
    /// The login: unique, 3 to 254 characters, one `@` between a name and
    /// a domain with a dot, no spaces, control or format characters
    /// ([`crate::rules::EMAIL_PATTERN`]).
    #[garde(custom(valid_email))]
    #[schema(min_length = 3, max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// 8 to 128 characters.
    #[garde(length(chars, min = 8, max = 128))]
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
    /// The name shown for the user, 1 to 100 characters, not only spaces,
    /// no control or format characters ([`crate::rules::NAME_PATTERN`]).
    #[garde(length(chars, min = 1, max = 100), custom(display_name))]
    #[schema(min_length = 1, max_length = 100, example = "Ada")]
    pub name: String,
}

/// `POST /v1/auth/login`: an email and password.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    /// The login, at most 254 characters.
    #[garde(length(chars, min = 1, max = 254))]
    #[schema(min_length = 1, max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// The password, at most 128 characters.
    #[garde(length(chars, min = 1, max = 128))]
    #[schema(min_length = 1, max_length = 128, example = "correct horse battery")]
    pub password: String,
}

/// `POST /v1/auth/refresh`: a refresh token to exchange.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshBody {
    /// A refresh token from a previous sign-up, login or refresh (single use).
    #[garde(length(chars, min = 1, max = 4096))]
    #[schema(min_length = 1, max_length = 4096)]
    pub refresh_token: String,
}

/// `POST /v1/auth/logout`: the refresh token of the login to end.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogoutBody {
    /// A refresh token of the login (any one of it, used or not).
    #[garde(length(chars, min = 1, max = 4096))]
    #[schema(min_length = 1, max_length = 4096)]
    pub refresh_token: String,
    /// End every login of the account, not only this one; the token must
    /// then be one that could still be refreshed.
    #[serde(default)]
    #[garde(skip)]
    pub everywhere: bool,
}

/// What a logout ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct LogoutReply {
    /// How many logins ended (0 when the token was unknown or its login had
    /// ended already).
    pub ended: u32,
}

/// An access token and its refresh token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct TokenPairBody {
    /// A JWT for `Authorization: Bearer ...`.
    pub access_token: String,
    /// Opaque; single use.
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u32,
}

impl From<auth::TokenPair> for TokenPairBody {
    fn from(pair: auth::TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: pair.token_type,
            expires_in: pair.expires_in,
        }
    }
}

/// The new account and its tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SignUpReply {
    /// The new user's id (the `sub` of its tokens).
    pub user_id: String,
    /// Tokens for the new user, already logged in.
    pub tokens: TokenPairBody,
}

// ---- users ----------------------------------------------------------------

/// A user's profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UserBody {
    /// The user's id.
    pub id: String,
    /// The login: on the caller's own profile only (absent on others').
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub email: Option<String>,
    /// The display name.
    pub name: String,
    /// When the profile was created (RFC 3339, UTC).
    pub created_at: String,
}

impl From<users::User> for UserBody {
    fn from(user: users::User) -> Self {
        Self {
            id: user.id,
            email: (!user.email.is_empty()).then_some(user.email),
            name: user.name,
            created_at: user.created_at,
        }
    }
}

/// A page of users.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UserPage {
    /// The users of this page, in creation order.
    pub users: Vec<UserBody>,
    /// The `page_token` of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_page_token: Option<String>,
}

/// `PATCH /v1/users/{id}`: the caller's new name.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUserBody {
    /// The new display name, 1 to 100 characters, not only spaces, no
    /// control or format characters ([`crate::rules::NAME_PATTERN`]).
    #[garde(length(chars, min = 1, max = 100), custom(display_name))]
    #[schema(min_length = 1, max_length = 100, example = "Ada L.")]
    pub name: String,
}

/// `GET /v1/users` query parameters.
#[derive(Debug, Clone, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListUsersQuery {
    /// Users per page, 1 to 100 (default 20).
    #[garde(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page; absent for the first page.
    #[garde(length(chars, max = 512))]
    #[param(max_length = 512)]
    pub page_token: Option<String>,
}

// ---- products -------------------------------------------------------------

/// A product of the catalog.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProductBody {
    /// The product's id.
    pub id: String,
    /// The id of the user who created it.
    pub owner_id: String,
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The price in cents.
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: i64,
    /// True once its owner is deleted: it stays readable but leaves listings.
    pub archived: bool,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
    /// 1 when created, one more with every change: its `ETag` is this
    /// number quoted, such as `"3"`.
    #[schema(minimum = 1)]
    pub version: i64,
}

impl From<products::Product> for ProductBody {
    fn from(product: products::Product) -> Self {
        Self {
            id: product.id,
            owner_id: product.owner_id,
            name: product.name,
            description: product.description,
            price_cents: product.price_cents,
            archived: product.archived,
            created_at: product.created_at,
            updated_at: product.updated_at,
            version: product.version,
        }
    }
}

/// A page of products.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProductPage {
    /// The products of this page, in creation order.
    pub products: Vec<ProductBody>,
    /// The `page_token` of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_page_token: Option<String>,
}

/// `POST /v1/products`: a new product, owned by the caller.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProductBody {
    /// 1 to 200 characters, not only spaces, no control or format
    /// characters ([`crate::rules::NAME_PATTERN`]).
    #[garde(length(chars, min = 1, max = 200), custom(product_name))]
    #[schema(min_length = 1, max_length = 200, example = "Teapot")]
    pub name: String,
    /// At most 2000 characters (default empty); line breaks and tabs but
    /// no other control characters.
    #[serde(default)]
    #[garde(length(chars, max = 2000), custom(multiline))]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$",
        example = "Short and stout"
    )]
    pub description: String,
    /// The price in cents, 0 to 10 000 000 000.
    #[serde(deserialize_with = "whole")]
    #[garde(range(min = 0, max = MAX_PRICE_CENTS))]
    #[schema(minimum = 0, maximum = 10_000_000_000_i64, example = 1250)]
    pub price_cents: i64,
}

/// `PATCH /v1/products/{id}`: the fields to change, one at least; absent
/// ones stay (`null` is refused).
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(custom(something_to_change))]
pub(crate) struct UpdateProductBody {
    /// A new name, 1 to 200 characters, not only spaces, no control or
    /// format characters ([`crate::rules::NAME_PATTERN`]).
    #[serde(default, deserialize_with = "present")]
    #[garde(
        length(chars, min = 1, max = 200),
        custom(|value: &Option<String>, (): &()| value.as_deref().map_or(Ok(()), |name| product_name(name, &())))
    )]
    #[schema(min_length = 1, max_length = 200, nullable = false)]
    pub name: Option<String>,
    /// A new description, at most 2000 characters; line breaks and tabs but
    /// no other control characters.
    #[serde(default, deserialize_with = "present")]
    #[garde(
        length(chars, max = 2000),
        custom(|value: &Option<String>, (): &()| value.as_deref().map_or(Ok(()), |text| multiline(text, &())))
    )]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$",
        nullable = false
    )]
    pub description: Option<String>,
    /// A new price in cents, 0 to 10 000 000 000.
    #[serde(default, deserialize_with = "present_whole")]
    #[garde(range(min = 0, max = MAX_PRICE_CENTS))]
    #[schema(minimum = 0, maximum = 10_000_000_000_i64, nullable = false)]
    pub price_cents: Option<i64>,
}

/// `GET /v1/products` query parameters.
#[derive(Debug, Clone, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListProductsQuery {
    /// Products per page, 1 to 100 (default 20).
    #[garde(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page; absent for the first page.
    #[garde(length(chars, max = 512))]
    #[param(max_length = 512)]
    pub page_token: Option<String>,
    /// Only products whose name contains this (case-insensitive), at most
    /// 200 characters, no control characters.
    #[garde(
        length(chars, max = 200),
        custom(|value: &Option<String>, (): &()| single_line(value.as_deref()))
    )]
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub q: Option<String>,
    /// Only this user's products.
    #[garde(custom(|value: &Option<String>, (): &()| valid_owner(value.as_deref())))]
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub owner_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_whole_numbers_in_any_json_form() {
        let parse = |json: &str| serde_json::from_str::<CreateProductBody>(json);
        for (json, cents) in [
            (r#"{"name":"a","price_cents":12}"#, 12),
            (r#"{"name":"a","price_cents":12.0}"#, 12),
            (r#"{"name":"a","price_cents":-0.0}"#, 0),
            (r#"{"name":"a","price_cents":1.5e3}"#, 1500),
        ] {
            assert_eq!(parse(json).unwrap().price_cents, cents, "{json}");
        }
        for json in [
            r#"{"name":"a","price_cents":12.5}"#,
            r#"{"name":"a","price_cents":"12"}"#,
            r#"{"name":"a","price_cents":1e300}"#,
            r#"{"name":"a","price_cents":null}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
        let patch = |json: &str| serde_json::from_str::<UpdateProductBody>(json);
        assert_eq!(
            patch(r#"{"price_cents":7.0}"#).unwrap().price_cents,
            Some(7)
        );
        assert_eq!(patch("{}").unwrap().price_cents, None);
        assert!(garde::Validate::validate(&patch("{}").unwrap()).is_err());
        assert!(garde::Validate::validate(&patch(r#"{"description":""}"#).unwrap()).is_ok());
        assert!(patch(r#"{"price_cents":null}"#).is_err());
        assert!(patch(r#"{"name":null}"#).is_err());
    }
}
