//! Authentication and authorization.
//!
//! **Authentication** ([`Authenticator`]): a request proves who it is with
//! `Authorization: Bearer <JWT>` or an `x-api-key` header.
//!
//! - JWTs are verified with the keys of `[auth]`: inline or file PEM keys and
//!   HS256 secrets, and a JWKS document (file or `http://` URL) reloaded every
//!   `auth.jwks.refresh`. A token naming a `kid` is checked with the keys of
//!   that id, a token without one with every key that has none, each key
//!   for its own algorithm only. A token naming a `kid` no key has makes a
//!   JWKS URL be fetched out of turn, at most once per 30 s, and waits for
//!   that fetch (at most 2 s), so keys an identity provider rotates in work
//!   at once; a token arriving while a fetch asked for is under way waits
//!   for it too, any other is refused at once, and so is one past the 32
//!   already waiting (a token's key id is read before its signature is
//!   checked, so anyone can send one). Accepted
//!   algorithms: `HS256`, `RS256`, `ES256`, `EdDSA`. Each key verifies
//!   exactly one algorithm, so a token cannot pick `alg: none` or use an
//!   RSA public key as an HMAC secret.
//!   `exp` and `sub` are required, `nbf` is honoured, `iss` and `aud` are
//!   required and checked when `auth.issuer` / `auth.audience` are set —
//!   set them. `auth.leeway` (default 30 s) absorbs clock skew. Scopes are
//!   read from `scope` and `scp`, roles from `roles`, each a list of strings
//!   or one string of space-separated words.
//! - A JWKS not loaded yet (its URL did not answer when the node started, or
//!   answered a document with no usable key) is fetched again with backoff;
//!   meanwhile a token no configured key verifies is answered `503` /
//!   `UNAVAILABLE` with `Retry-After: 1`, not as an invalid token (an OAuth
//!   client would throw a valid token away).
//! - A verified token is remembered until it expires (bounded, emptied
//!   when a JWKS reload adds, removes or changes a key, kept when it loads
//!   the same keys), so a client reusing its token pays for the signature
//!   check once.
//! - API keys are configured as SHA-256 hashes and compared in constant time.
//!
//! **Authorization** ([`Requirement`], [`AccessPolicy`]): each service
//! declares on its builder what its gRPC methods and HTTP routes need; with
//! `[auth]` configured, everything else needs an authenticated caller.
//! Health, reflection and the admin endpoints (`/metrics`, `/registry`)
//! served beside the services are public unless a service rule names them.
//! Rules are matched against the full path of a request (a nested router's
//! prefix included), most specific pattern first, the node's own routes and
//! gRPC services among the patterns: a broad rule such as
//! `.public("/{*path}")` only covers what no more specific route or rule
//! claims. A rule declared twice for the same path and method is refused,
//! and so is one that names nothing its service serves (nor a built-in
//! path).
//!
//! **Upgrading:** a nested router's rules were once written relative to its
//! prefix (`.nest("/admin", router).require("/users", ..)`); they now name
//! the full path (`/admin/users`). A relative rule is refused when the
//! service is built, with the full path to write.
//!
//! | outcome | HTTP | gRPC |
//! |---|---|---|
//! | no or invalid credentials | `401` + `WWW-Authenticate: Bearer` | `UNAUTHENTICATED` |
//! | valid but insufficient | `403` problem+json | `PERMISSION_DENIED` |
//! | signing keys (JWKS) not loaded yet | `503` + `Retry-After: 1` | `UNAVAILABLE` |
//!
//! The caller only learns a generic reason; the precise one is logged at
//! debug level under the `room619::auth` target.
//!
//! gRPC methods are named by their path (`/users.v1.Users/Delete`, or a
//! whole service as `/users.v1.Users/{*method}`), HTTP routes by their
//! template, with a nested router's prefix:
//!
//! ```
//! use axum::{
//!     Router,
//!     routing::{delete, get, post},
//! };
//! use room619::{ServiceBuilder, middleware::auth::Requirement};
//!
//! let service = ServiceBuilder::new("users", "1.0.0")
//!     .unwrap()
//!     .route("/v1/users/{id}", delete(|| async { "deleted" }))
//!     .route("/v1/login", post(|| async { "token" }))
//!     .nest("/v1/admin", Router::new().route("/stats", get(|| async { "stats" })))
//!     .require("/v1/users/{id}", Requirement::scopes(["users:write"]))
//!     .require("/v1/admin/stats", Requirement::roles(["admin"]))
//!     .public("/v1/login")
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
mod refetch;
mod requirement;
mod served;
mod table;

pub use authenticator::Authenticator;
pub use config::{ApiKeyConfig, AuthConfig, JwksConfig, JwtAlgorithm, JwtKeyConfig};
pub use layer::{AUTH_TARGET, Auth, AuthLayer};
pub use principal::{Credential, Principal};
pub use requirement::{AccessPolicy, Requirement};
pub(crate) use served::ServedPaths;
pub(crate) use table::AccessTable;
