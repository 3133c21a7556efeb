//! Authentication and authorization.
//!
//! **Authentication** ([`Authenticator`]): a request proves who it is with
//! `Authorization: Bearer <JWT>` or an `x-api-key` header.
//!
//! - JWTs are verified with the keys of `[auth]`: inline or file PEM keys and
//!   HS256 secrets, and a JWKS document (file or `http://` URL) reloaded every
//!   `auth.jwks.refresh` and selected by `kid` (a URL that does not answer
//!   when the node starts is retried with backoff; tokens are refused until
//!   it loads). Accepted algorithms: `HS256`,
//!   `RS256`, `ES256`, `EdDSA`. Each key verifies exactly one algorithm, so a token
//!   cannot pick `alg: none` or use an RSA public key as an HMAC secret.
//!   `exp` and `sub` are required, `nbf` is honoured, `iss` and `aud` are
//!   required and checked when `auth.issuer` / `auth.audience` are set —
//!   set them. `auth.leeway` (default 30 s) absorbs clock skew.
//! - A verified token is remembered until it expires (bounded, emptied on
//!   every JWKS reload), so a client reusing its token pays for the
//!   signature check once.
//! - API keys are configured as SHA-256 hashes and compared in constant time.
//!
//! **Authorization** ([`Requirement`], [`AccessPolicy`]): each service
//! declares on its builder what its gRPC methods and HTTP routes need; with
//! `[auth]` configured, everything else needs an authenticated caller.
//! Health, reflection and `/metrics` are public.
//!
//! | outcome | HTTP | gRPC |
//! |---|---|---|
//! | no or invalid credentials | `401` + `WWW-Authenticate: Bearer` | `UNAUTHENTICATED` |
//! | valid but insufficient | `403` problem+json | `PERMISSION_DENIED` |
//!
//! The caller only learns a generic reason; the precise one is logged at
//! debug level under the `room619::auth` target.
//!
//! ```
//! use axum::routing::delete;
//! use room619::{ServiceBuilder, middleware::auth::Requirement};
//!
//! let service = ServiceBuilder::new("users", "1.0.0")
//!     .unwrap()
//!     .route("/v1/users/{id}", delete(|| async { "deleted" }))
//!     .require("/v1/users/{id}", Requirement::scopes(["users:write"]))
//!     .require("/users.v1.Users/Delete", Requirement::roles(["admin"]))
//!     .public("/auth.v1.Auth/Login")
//!     .build()
//!     .unwrap();
//! # let _ = service;
//! ```

mod authenticator;
mod cache;
mod config;
pub(crate) mod jwks;
mod keys;
mod layer;
mod principal;
mod requirement;

pub use authenticator::Authenticator;
pub use config::{ApiKeyConfig, AuthConfig, JwksConfig, JwtAlgorithm, JwtKeyConfig};
pub use layer::{AUTH_TARGET, Auth, AuthLayer};
pub use principal::{Credential, Principal};
pub(crate) use requirement::AccessTable;
pub use requirement::{AccessPolicy, Requirement};
