//! The users service: profiles, in two API versions over one table.
//!
//! - `users` 1.0.0 serves `users.v1.Users`, `users` 2.0.0 serves
//!   `users.v2.Users` (the name became `display_name`); the registry hosts
//!   both majors of one service side by side, and `ctx.client(.., "users",
//!   "^1")` / `"^2"` picks one.
//! - Every method needs an authenticated caller; `CreateUser` needs the
//!   scope `users:create` (the auth service's own token); a caller may update
//!   or delete only the profile whose id is their token's subject
//!   (`PERMISSION_DENIED` otherwise), but for that token, which may delete
//!   any (auth removes the user of a sign-up that failed after users may
//!   have made it).
//! - `users.created` and `users.deleted` (a `users.v1.UserEvent`) are
//!   published through a transactional outbox (the `outbox` module): the
//!   change and its event commit together, a relay started with the service
//!   publishes them and deletes each once the bus accepted it.
//!
//! ```no_run
//! # async fn demo(db: shop::store::Db) -> room619::Result<()> {
//! let node = room619::Node::builder();
//! let node = shop::users::services(db)?
//!     .into_iter()
//!     .fold(node, room619::NodeBuilder::service);
//! # let _ = node;
//! # Ok(()) }
//! ```

mod outbox;
mod repo;
mod v1;
mod v2;

use std::sync::Arc;

use room619::{ServiceBuilder, middleware::auth::Requirement, service::BuiltService};
use shop_proto::users::{
    v1::users_server::UsersServer as V1Server, v2::users_server::UsersServer as V2Server,
};

use outbox::Outbox;
pub use outbox::{CREATED, DELETED};
use repo::{CREATE_SCOPE, UserStore};

use crate::store::Db;

/// The two versions of the users service over `db`: `users` 1.0.0
/// (`users.v1.Users`) and `users` 2.0.0 (`users.v2.Users`). Each runs an
/// outbox relay while it is up.
///
/// # Errors
///
/// Only if a service definition is invalid (a bug).
pub fn services(db: Db) -> room619::Result<Vec<BuiltService>> {
    let store = UserStore::new(db, Arc::new(Outbox::default()));
    Ok(vec![
        builder("1.0.0", "User profiles (users.v1)", &store)?
            .grpc(V1Server::new(v1::V1(store.clone())))
            .require("/users.v1.Users/{*method}", Requirement::authenticated())
            .require(
                "/users.v1.Users/CreateUser",
                Requirement::scopes([CREATE_SCOPE]),
            )
            .build()?,
        builder("2.0.0", "User profiles (users.v2: display_name)", &store)?
            .grpc(V2Server::new(v2::V2(store.clone())))
            .require("/users.v2.Users/{*method}", Requirement::authenticated())
            .require(
                "/users.v2.Users/CreateUser",
                Requirement::scopes([CREATE_SCOPE]),
            )
            .build()?,
    ])
}

/// What both versions share: reflection, the database check, the relay.
fn builder(version: &str, description: &str, store: &UserStore) -> room619::Result<ServiceBuilder> {
    let db = store.db().clone();
    let relay_db = db.clone();
    let final_db = db.clone();
    let outbox = Arc::clone(store.outbox());
    let final_outbox = Arc::clone(&outbox);
    Ok(ServiceBuilder::new("users", version)?
        .description(description)
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .dependency("database", move || db.health())
        .on_start(move |ctx| {
            let relay = outbox::run(ctx, relay_db.clone(), Arc::clone(&outbox));
            async move {
                tokio::spawn(relay);
                Ok(())
            }
        })
        .on_stop(move |ctx| {
            let db = final_db.clone();
            let outbox = Arc::clone(&final_outbox);
            async move {
                outbox::final_pass(ctx.bus(), &db, &outbox).await;
                Ok(())
            }
        }))
}
