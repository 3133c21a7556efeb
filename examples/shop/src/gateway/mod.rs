//! The `gateway` service (1.0.0): the shop's public REST/JSON API, in front
//! of the `auth`, `users` and `products` gRPC services.
//!
//! | route | forwards to |
//! |---|---|
//! | `POST /v1/auth/signup`, `/login`, `/refresh`, `/logout` (public) | `auth.v1.Auth` |
//! | `GET /v1/users`, `GET`/`PATCH`/`DELETE /v1/users/{id}` | `users.v1.Users` |
//! | `GET`/`POST /v1/products`, `GET`/`PATCH`/`DELETE /v1/products/{id}` | `products.v1.Products` |
//! | `GET /openapi.json` (public) | the OpenAPI 3.1 document of all of the above |
//!
//! Every other route needs `Authorization: Bearer <token>`; the gateway
//! forwards the token to the service in the gRPC `authorization` metadata
//! and the service authorizes by its subject. When the node configures
//! `[auth]`, the token is also verified at the gateway. The services are
//! reached with the framework's typed clients (`ctx.client`), in-process when
//! they share the node, over the network otherwise.
//!
//! A product's version is its `ETag` (`"3"`): `GET /v1/products/{id}`
//! answers `304` to an `If-None-Match` naming it, and `PATCH` or `DELETE`
//! with `If-Match` apply only while the product is at a version named, with
//! `If-None-Match` only while it is not at one named (`*`: never, as the
//! product exists); `412` otherwise, so two edits from one read cannot both
//! land.
//!
//! Answers carrying tokens (sign-up, login, refresh) say
//! `Cache-Control: no-store` and `Pragma: no-cache`: no cache keeps them.
//!
//! Bodies are JSON with unknown fields refused and validated by the rules of
//! the `.proto` comments. Every error is `application/problem+json`: `400`
//! for malformed input, `401` (with `WWW-Authenticate: Bearer`), `403`,
//! `404`, `409`, `412`, `413`, `415`, `422` with the field errors (the gateway's
//! validation or a service's `google.rpc.BadRequest`), `429` (with
//! `Retry-After`), `503` (with `Retry-After: 1`) when a service is
//! unavailable or cannot take the call now, and `504` when it misses the
//! deadline: the client's (`x-request-timeout`) but at most
//! [`MAX_TIMEOUT`] away, or else [`DEFAULT_TIMEOUT`], so a service that is
//! up but stuck cannot hold the gateway's requests, and no client can make
//! it wait longer. Rate limits are per route in `[rate_limit]`, for example:
//!
//! ```toml
//! [[rate_limit.rules]]
//! route = "/v1/auth/login"
//! method = "POST"
//! limit = 10
//! period = "1m"
//! ```

mod auth;
mod conditional;
mod dto;
mod error;
mod extract;
mod openapi;
mod products;
mod users;

use axum::{
    response::IntoResponse as _,
    routing::{MethodRouter, get, post},
};
use http::{HeaderValue, header::CONTENT_TYPE};
use room619::{ServiceBuilder, rpc::deadline::Deadline, service::BuiltService};

/// The registry name of the auth service.
const AUTH: &str = "auth";
/// The registry name of the users service.
const USERS: &str = "users";
/// The registry name of the products service.
const PRODUCTS: &str = "products";
/// The versions of the services the gateway speaks (their v1 contracts).
const REQUIREMENT: &str = "^1";
/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// The deadline of a request whose client sent none.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The furthest deadline a request keeps: a client's longer
/// `x-request-timeout` (up to `99999999H`, eleven thousand years) is cut to
/// it, so that no client holds the gateway's calls to the services, and
/// theirs to the databases, open longer.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `route` with a deadline, which its calls to the services carry and obey:
/// its request's own, at most [`MAX_TIMEOUT`] away, or [`DEFAULT_TIMEOUT`]
/// when it has none.
fn bounded(route: MethodRouter) -> MethodRouter {
    route.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            let limit = if Deadline::current().is_some() {
                MAX_TIMEOUT
            } else {
                DEFAULT_TIMEOUT
            };
            // The earlier of the two: a request's nearer deadline is kept.
            Deadline::after(limit).scope(next.run(request)).await
        },
    ))
}

/// Builds the gateway service: the REST routes and `GET /openapi.json`, with
/// the auth routes and the document public.
///
/// # Errors
///
/// Only if the service definition itself is invalid (a bug).
pub fn service() -> room619::Result<BuiltService> {
    let document: axum::body::Bytes = openapi::document()?.into();
    let openapi = get(move || {
        let document = document.clone();
        async move {
            (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                document,
            )
                .into_response()
        }
    });
    ServiceBuilder::new("gateway", "1.0.0")?
        .description("The shop's REST/JSON API in front of auth, users and products")
        .route("/v1/auth/signup", bounded(post(auth::sign_up)))
        .route("/v1/auth/login", bounded(post(auth::login)))
        .route("/v1/auth/refresh", bounded(post(auth::refresh)))
        .route("/v1/auth/logout", bounded(post(auth::logout)))
        .route("/v1/users", bounded(get(users::list)))
        .route(
            "/v1/users/{id}",
            bounded(get(users::get).patch(users::update).delete(users::delete)),
        )
        .route(
            "/v1/products",
            bounded(get(products::list).post(products::create)),
        )
        .route(
            "/v1/products/{id}",
            bounded(
                get(products::get)
                    .patch(products::update)
                    .delete(products::delete),
            ),
        )
        .route(OPENAPI_PATH, openapi)
        .public("/v1/auth/signup")
        .public("/v1/auth/login")
        .public("/v1/auth/refresh")
        .public("/v1/auth/logout")
        .public(OPENAPI_PATH)
        .build()
}

/// Success answers.
mod reply {
    use axum::{
        Json,
        response::{IntoResponse as _, Response},
    };
    use http::{
        HeaderValue, StatusCode,
        header::{CACHE_CONTROL, LOCATION, PRAGMA},
    };
    use serde::Serialize;

    /// `200` with `body`.
    pub(crate) fn ok<T: Serialize>(body: &T) -> Response {
        Json(body).into_response()
    }

    /// `response`, which carries tokens, marked for no cache to keep:
    /// `Cache-Control: no-store` (RFC 6749 §5.1), and `Pragma: no-cache` for
    /// older caches.
    pub(crate) fn uncached(mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }

    /// `201` with `body` and `Location: location`.
    pub(crate) fn created<T: Serialize>(location: &str, body: &T) -> Response {
        let mut response = (StatusCode::CREATED, Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(location) {
            response.headers_mut().insert(LOCATION, value);
        }
        response
    }

    /// `204`.
    pub(crate) fn no_content() -> Response {
        StatusCode::NO_CONTENT.into_response()
    }

    /// A page token, absent when empty (the last page).
    pub(crate) fn token(token: String) -> Option<String> {
        (!token.is_empty()).then_some(token)
    }
}

/// The gateway's default rate limits, applied when the node's
/// `[rate_limit]` lists no rules: sign-up, login, refresh and logout take at most 10
/// requests a minute (plus a burst of 10) per client IP, which stops
/// password guessing without getting in a person's way. They hold on both
/// protocols the node's port speaks: the gateway's REST routes and the auth
/// service's gRPC methods (`/auth.v1.Auth/Login`, ...), each with a bucket of
/// its own; the gateway's own calls to auth are in-process and not limited.
/// Any `[[rate_limit.rules]]` in the configuration replace them.
#[must_use]
pub fn default_rate_limits() -> Vec<room619::middleware::rate_limit::RateLimitRule> {
    [
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/auth.v1.Auth/SignUp",
        "/auth.v1.Auth/Login",
        "/auth.v1.Auth/Refresh",
        "/auth.v1.Auth/Logout",
    ]
    .into_iter()
    .map(|route| room619::middleware::rate_limit::RateLimitRule {
        route: route.to_owned(),
        method: Some("POST".to_owned()),
        limit: 10,
        period: std::time::Duration::from_secs(60),
        burst: 10,
        key: room619::middleware::rate_limit::RateLimitKey::Ip,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, body::Body};
    use tower::ServiceExt as _;

    use super::*;

    /// The time left that a bounded route's handler sees.
    async fn left(scoped: Option<Duration>) -> Duration {
        let route = bounded(get(|| async {
            Deadline::current()
                .map_or(0, |deadline| deadline.remaining().as_millis())
                .to_string()
        }));
        let app = Router::new().route("/", route);
        let call = app.oneshot(http::Request::new(Body::empty()));
        let answer = match scoped {
            Some(timeout) => Deadline::after(timeout).scope(call).await,
            None => call.await,
        }
        .unwrap();
        let body = axum::body::to_bytes(answer.into_body(), 64).await.unwrap();
        Duration::from_millis(std::str::from_utf8(&body).unwrap().parse().unwrap())
    }

    #[test]
    fn the_default_rate_limits_cover_every_auth_route_on_both_protocols() {
        let routes: Vec<String> = default_rate_limits()
            .into_iter()
            .map(|rule| rule.route)
            .collect();
        for (rest, grpc) in [
            ("signup", "SignUp"),
            ("login", "Login"),
            ("refresh", "Refresh"),
            ("logout", "Logout"),
        ] {
            assert!(routes.contains(&format!("/v1/auth/{rest}")), "{rest}");
            assert!(routes.contains(&format!("/auth.v1.Auth/{grpc}")), "{grpc}");
        }
    }

    #[tokio::test]
    async fn a_request_without_a_deadline_gets_the_default_one_and_keeps_its_own() {
        let default = left(None).await;
        assert!(
            default > DEFAULT_TIMEOUT.checked_sub(Duration::from_secs(1)).unwrap(),
            "{default:?}"
        );
        assert!(default <= DEFAULT_TIMEOUT, "{default:?}");
        let own = left(Some(Duration::from_secs(2))).await;
        assert!(own <= Duration::from_secs(2), "{own:?}");
        assert!(own > Duration::from_secs(1), "{own:?}");
        let longer = left(Some(Duration::from_secs(20))).await;
        assert!(
            longer > DEFAULT_TIMEOUT && longer <= Duration::from_secs(20),
            "a client's longer deadline within the maximum is its own: {longer:?}"
        );
    }

    /// `x-request-timeout: 99999999H` does not hold the gateway (and the
    /// services behind it) for eleven thousand years: the maximum does.
    #[tokio::test]
    async fn a_deadline_further_than_the_maximum_is_cut_to_it() {
        let floor = MAX_TIMEOUT.checked_sub(Duration::from_secs(1)).unwrap();
        for asked in [
            Duration::from_secs(60),
            Duration::from_secs(99_999_999 * 60 * 60),
        ] {
            let left = left(Some(asked)).await;
            assert!(left <= MAX_TIMEOUT, "{asked:?}: {left:?}");
            assert!(left > floor, "{asked:?}: {left:?}");
        }
    }
}
