//! The room619 demo shop as a library: its services, settings and storage.
//! The `room619` binary (`src/main.rs`) hosts them; the tests in `tests/`
//! start them on real nodes.
//!
//! | module | what |
//! |---|---|
//! | [`auth`] | `auth` 1.0.0 (`auth.v1.Auth`): sign-up, login, EdDSA access tokens, refresh rotation, the JWKS |
//! | [`echo`] | `echo` 1.0.0: echoes messages over gRPC and REST |
//! | [`users`] | `users` 1.0.0 (`users.v1.Users`) and 2.0.0 (`users.v2.Users`): profiles, `users.*` events through an outbox |
//! | [`gateway`] | `gateway` 1.0.0: the REST/JSON API under `/v1` over the services, its OpenAPI document at `/openapi.json` |
//! | [`products`] | `products` 1.0.0 (`products.v1.Products`): the catalog; archives a deleted user's products |
//! | [`store`] | [`store::Db`]: SQLite or PostgreSQL, migrations, error mapping, pagination |
//! | [`settings`] | [`settings::ShopSettings`]: the `[app.shop]` section |

mod access;
pub mod auth;
pub mod echo;
pub mod gateway;
pub mod products;
pub mod settings;
pub mod store;
pub mod users;
