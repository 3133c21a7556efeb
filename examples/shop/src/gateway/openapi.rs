//! The gateway's OpenAPI 3.1 document, generated from the handlers with
//! utoipa and served at `GET /openapi.json`.
//!
//! Success responses are declared on each handler; the error responses,
//! which follow from what an operation takes (a body, path or query
//! parameters, a token), are added by [`Errors`] so that every operation
//! lists every status the node can answer it with, each an
//! `application/problem+json` [`Problem`](room619::error::Problem). The
//! patterns of emails and names are [`crate::rules`]' own, set by
//! [`add_rules`].

use utoipa::{
    Modify, OpenApi,
    openapi::{
        ArrayBuilder, ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Response,
        ResponseBuilder, Schema, Type,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::{auth, products, users};
use crate::rules::{EMAIL_PATTERN, NAME_PATTERN};

/// The media type of every error body.
const PROBLEM_JSON: &str = room619::error::PROBLEM_JSON;

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "room619 shop API",
        version = "1.0.0",
        description = "The demo shop's REST API: the `gateway` service in front of the `auth`, \
                       `users` and `products` gRPC services. Errors are RFC 9457 problem \
                       documents (`application/problem+json`)."
    ),
    paths(
        auth::sign_up,
        auth::login,
        auth::refresh,
        auth::logout,
        users::list,
        users::get,
        users::update,
        users::delete,
        products::list,
        products::create,
        products::get,
        products::update,
        products::delete,
    ),
    modifiers(&Errors),
    tags(
        (name = "auth", description = "Sign-up, login and tokens (public)"),
        (name = "users", description = "User profiles"),
        (name = "products", description = "The catalog"),
    )
)]
pub(crate) struct ApiDoc;

/// The document as JSON, with the [`LINKS`] between operations and the
/// rules [`add_rules`] sets.
///
/// # Errors
///
/// `Internal` if it does not serialize (a bug).
pub(crate) fn document() -> room619::Result<String> {
    let failed = |err| room619::Error::internal("the OpenAPI document").with_source(err);
    let mut document = serde_json::to_value(ApiDoc::openapi()).map_err(failed)?;
    add_links(&mut document);
    add_rules(&mut document);
    serde_json::to_string(&document).map_err(failed)
}

/// The fields [`crate::rules`] checks and their patterns: (schema, field,
/// pattern).
const PATTERNS: &[(&str, &str, &str)] = &[
    ("SignUpBody", "email", EMAIL_PATTERN),
    ("SignUpBody", "name", NAME_PATTERN),
    ("UpdateUserBody", "name", NAME_PATTERN),
    ("CreateProductBody", "name", NAME_PATTERN),
    ("UpdateProductBody", "name", NAME_PATTERN),
];

/// Sets the [`PATTERNS`] (made of constants, which utoipa's attributes do
/// not take), and the `minProperties: 1` of `UpdateProductBody`, a change
/// that must name something to change (utoipa 5's `min_properties` writes
/// `maxProperties`).
fn add_rules(document: &mut serde_json::Value) {
    for (schema, field, pattern) in PATTERNS {
        if let Some(property) = document
            .pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            property.insert("pattern".to_owned(), (*pattern).into());
        }
    }
    if let Some(update) = document
        .pointer_mut("/components/schemas/UpdateProductBody")
        .and_then(serde_json::Value::as_object_mut)
    {
        update.insert("minProperties".to_owned(), 1.into());
    }
}

/// Adds [`LINKS`] to the serialized document (utoipa 5 writes a link's
/// `operationId` as `operation_id`, so its `Link` type cannot be used).
fn add_links(document: &mut serde_json::Value) {
    let Some(paths) = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for (from, status, pointer, targets) in LINKS {
            let Some(response) = operation
                .pointer_mut(&format!("/responses/{status}"))
                .and_then(serde_json::Value::as_object_mut)
                .filter(|_| *from == id)
            else {
                continue;
            };
            let links: serde_json::Map<String, serde_json::Value> = targets
                .iter()
                .map(|target| {
                    let link = serde_json::json!({
                        "operationId": target,
                        "parameters": { "id": pointer },
                    });
                    ((*target).to_owned(), link)
                })
                .collect();
            response.insert("links".to_owned(), links.into());
        }
    }
}

/// The error responses: (component name, status, description).
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "BadRequest",
        "400",
        "Malformed input: a body that is not JSON or not of this shape (unknown fields \
         included), a bad path id or query string, or a request the service refused",
    ),
    (
        "Unauthorized",
        "401",
        "No valid bearer token, or wrong credentials",
    ),
    (
        "Forbidden",
        "403",
        "The token does not allow this (not the owner)",
    ),
    ("NotFound", "404", "No such resource"),
    ("Conflict", "409", "The resource exists already"),
    (
        "PreconditionFailed",
        "412",
        "`If-Match` names no version the resource is at (it changed since it was read), or \
         `If-None-Match` names the one it is at (or is `*`)",
    ),
    (
        "PayloadTooLarge",
        "413",
        "The body is larger than the node's limit",
    ),
    (
        "UnsupportedMediaType",
        "415",
        "The body is not `application/json`",
    ),
    (
        "UnprocessableContent",
        "422",
        "Fields failed validation; `errors` lists each",
    ),
    (
        "TooManyRequests",
        "429",
        "A rate limit was hit; retry after `Retry-After` seconds",
    ),
    ("InternalError", "500", "An unexpected failure"),
    (
        "Unavailable",
        "503",
        "A service is unavailable or cannot take the call now; retry after `Retry-After` seconds",
    ),
    (
        "GatewayTimeout",
        "504",
        "A service did not answer within the deadline",
    ),
];

/// Links from the operations that create something to those that take its
/// id: (operation, status, where the id is, the operations it feeds).
const LINKS: &[(&str, &str, &str, &[&str])] = &[
    (
        "signUp",
        "201",
        "$response.body#/user_id",
        &["getUser", "updateUser", "deleteUser"],
    ),
    (
        "createProduct",
        "201",
        "$response.body#/id",
        &["getProduct", "updateProduct", "deleteProduct"],
    ),
];

/// Adds the problem schema, the bearer scheme and every operation's error
/// responses.
struct Errors;

impl Modify for Errors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert("Problem".to_owned(), problem_schema());
        components
            .schemas
            .insert("FieldError".to_owned(), field_error_schema());
        components.security_schemes.insert(
            "bearer".to_owned(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from `/v1/auth/*`"))
                    .build(),
            ),
        );
        for (name, status, description) in ERRORS {
            components.responses.insert(
                (*name).to_owned(),
                RefOr::T(problem_response(status, description)),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for (operation, read) in [
                (&mut item.get, true),
                (&mut item.post, false),
                (&mut item.patch, false),
                (&mut item.delete, false),
            ] {
                if let Some(operation) = operation.as_mut() {
                    add_errors(operation, read);
                }
            }
        }
    }
}

/// The statuses an operation can fail with, from what it takes; `read` for
/// a `GET` (whose `If-None-Match` is answered `304`, not `412`).
fn add_errors(operation: &mut Operation, read: bool) {
    let mut statuses = vec!["400", "429", "500", "503", "504"];
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    if operation.request_body.is_some() {
        statuses.extend(["413", "415", "422"]);
    }
    if parameters
        .iter()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
    {
        statuses.push("422");
    }
    if parameters
        .iter()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path))
    {
        statuses.push("404");
    }
    if operation.security.is_some() {
        statuses.extend(["401", "403"]);
    }
    if parameters.iter().any(|p| {
        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Header)
            && (p.name.eq_ignore_ascii_case("if-match")
                || (!read && p.name.eq_ignore_ascii_case("if-none-match")))
    }) {
        statuses.push("412");
    }
    match operation.operation_id.as_deref() {
        Some("signUp") => statuses.push("409"),
        Some("login" | "refresh" | "logout") => statuses.push("401"),
        _ => {}
    }
    for status in statuses {
        if let Some((name, _, _)) = ERRORS.iter().find(|(_, s, _)| *s == status) {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
        }
    }
}

fn problem_response(status: &str, description: &str) -> Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content);
    match status {
        "401" => {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(string())
                    .description(Some("The scheme to authenticate with: `Bearer`"))
                    .build(),
            );
        }
        "429" | "503" => {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(string())
                    .description(Some("Seconds until a retry may succeed"))
                    .build(),
            );
        }
        _ => {}
    }
    response.build()
}

fn string() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::String).build())
}

fn problem_schema() -> RefOr<Schema> {
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    let errors = ArrayBuilder::new()
        .items(Ref::from_schema_name("FieldError"))
        .description(Some("Every field that failed validation (`422` only)"));
    let object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "An RFC 9457 problem document: the body of every error",
        ))
        .property("type", text("A URI reference naming the problem type"))
        .property("title", text("The status's reason phrase"))
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599))
                .description(Some("The HTTP status code")),
        )
        .property("detail", text("What was wrong with this request"))
        .property("instance", text("The request path, when known"))
        .property("errors", errors)
        .required("type")
        .required("title")
        .required("status")
        .required("detail");
    RefOr::T(Schema::Object(object.build()))
}

fn field_error_schema() -> RefOr<Schema> {
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    let object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("One field that failed validation"))
        .property("field", text("The path of the field, such as `name`"))
        .property("detail", text("What is wrong with it"))
        .required("field")
        .required("detail");
    RefOr::T(Schema::Object(object.build()))
}

#[cfg(test)]
mod tests {
    use crate::rules::{EMAIL_PATTERN, NAME_PATTERN};

    #[test]
    fn the_document_states_the_rules_the_services_apply() {
        let document: serde_json::Value =
            serde_json::from_str(&super::document().unwrap()).unwrap();
        let schemas = &document["components"]["schemas"];
        for (schema, field, pattern) in [
            ("SignUpBody", "email", EMAIL_PATTERN),
            ("SignUpBody", "name", NAME_PATTERN),
            ("UpdateUserBody", "name", NAME_PATTERN),
            ("CreateProductBody", "name", NAME_PATTERN),
            ("UpdateProductBody", "name", NAME_PATTERN),
        ] {
            let property = &schemas[schema]["properties"][field];
            assert_eq!(property["pattern"], pattern, "{schema}.{field}");
            assert_eq!(property["type"], "string", "{schema}.{field}");
        }
        // A change names at least one field; no more is required.
        let update = &schemas["UpdateProductBody"];
        assert_eq!(update["minProperties"], 1);
        assert!(update.get("maxProperties").is_none(), "{update}");
        assert!(update.get("required").is_none(), "{update}");
    }
}
