//! The auth service: sign-up, login and tokens (`auth.v1.Auth`).
//!
//! - Accounts (email, argon2id password hash) live in the shop database
//!   (`auth_accounts`); refresh tokens are stored as SHA-256 digests only
//!   (`auth_refresh_tokens`), are single use (Refresh rotates them) and a
//!   reused one revokes its whole family, as OAuth 2.1 recommends. A
//!   family (one login) ends `session_ttl` after the login however often
//!   it was rotated; the rows of ended families are removed. `Logout`
//!   revokes a family (or every family of the account); rotations and
//!   logouts of one account are serialized on its row.
//! - Access tokens are `EdDSA` JWTs signed with the service's Ed25519 key
//!   ([`Keys`]); the public keys are served as a JWKS document at
//!   `GET /.well-known/jwks.json`, which other nodes name in
//!   `[auth.jwks] url`. A node hosting this service trusts the keys directly
//!   ([`Keys::trust`]).
//! - `SignUp` creates the account, then the `users.v1.User` of the same id,
//!   calling the users service with a short-lived token of its own (scope
//!   `users:create`); when that fails the account is removed again.
//! - A `users.deleted` event removes the account and its refresh tokens.

mod accounts;
mod grpc;
mod keys;
mod password;
mod tokens;
mod validate;

use std::{path::PathBuf, time::Duration};

use axum::{Json, http::header::CACHE_CONTROL, routing::get};
use room619::{ServiceBuilder, ServiceContext, bus::Event, service::BuiltService};
use serde::{Deserialize, Serialize};
use shop_proto::{auth::v1::auth_server::AuthServer, users::v1::UserEvent};

pub use keys::Keys;
pub use tokens::{AccessClaims, SERVICE_SCOPE};

use crate::{settings::ShopSettings, store::Db};

/// The path of the JWKS document.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The durable consumer of `users.deleted`.
pub const USERS_DELETED_CONSUMER: &str = "auth-users-deleted";

/// `[app.shop.auth]`: the auth service's settings.
///
/// ```toml
/// [app.shop.auth]
/// signing_key_file = "/etc/shop/ed25519.pem"  # default: <data_dir>/auth/ed25519.pem, made at first start
/// issuer = "room619-shop-auth"
/// audience = "room619-shop"
/// access_token_ttl = "15m"
/// refresh_token_ttl = "30days"
/// session_ttl = "90days"
/// scope = "shop"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// A PKCS#8 PEM file holding the Ed25519 signing key. Default: unset
    /// (the key at `<data_dir>/auth/ed25519.pem`, generated at first start).
    pub signing_key_file: Option<PathBuf>,
    /// The `iss` of the tokens. Default: `room619-shop-auth`.
    pub issuer: String,
    /// The `aud` of the tokens. Default: `room619-shop`.
    pub audience: String,
    /// How long an access token is valid. Default: `15m`.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// How long a refresh token is valid. Default: `30days`.
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// How long a login lasts: its refresh tokens, however often rotated,
    /// stop working this long after the login, which must then be made
    /// again, so a stolen token family cannot be kept alive for ever. The
    /// stored tokens of ended logins are removed (at start, then hourly).
    /// Default: `90days`.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The `scope` of the users' access tokens (space-separated).
    /// Default: `shop`.
    pub scope: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            issuer: "room619-shop-auth".to_owned(),
            audience: "room619-shop".to_owned(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_ttl: Duration::from_secs(90 * 24 * 3600),
            scope: "shop".to_owned(),
        }
    }
}

/// How often the stored tokens of ended logins are removed.
const REMOVE_ENDED_EVERY: Duration = Duration::from_secs(3600);

/// Removes the stored tokens of ended logins now, then every
/// [`REMOVE_ENDED_EVERY`], until the service stops.
async fn remove_ended_families(accounts: accounts::Accounts, ctx: ServiceContext) {
    let mut every = tokio::time::interval(REMOVE_ENDED_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown_signal() => return,
            _ = every.tick() => {}
        }
        match accounts.remove_ended_families().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed the refresh tokens of ended logins"),
            Err(err) => {
                tracing::warn!(error = %err, "could not remove the refresh tokens of ended logins");
            }
        }
    }
}

/// Builds the auth service (`auth` 1.0.0): gRPC `auth.v1.Auth` (public),
/// `GET /.well-known/jwks.json` (public) and the `users.deleted`
/// subscriber.
///
/// # Errors
///
/// `Config` when a token lifetime is zero or too long for a JWT; otherwise
/// only if the service definition itself is invalid (a bug).
pub fn service(db: Db, keys: Keys, settings: &ShopSettings) -> room619::Result<BuiltService> {
    let jwks = keys.jwks();
    let issuer = tokens::Issuer::new(keys, &settings.auth)?;
    let accounts = accounts::Accounts::new(db);
    let passwords = password::Passwords::default();
    let warm = passwords.clone();
    let deleted = accounts.clone();
    let ended = accounts.clone();
    ServiceBuilder::new("auth", "1.0.0")?
        .description("Signs people up, logs them in and issues their tokens")
        .grpc(AuthServer::new(grpc::AuthService::new(
            accounts, issuer, passwords,
        )))
        // The dummy hash that unknown emails are checked against, made
        // before the first login so that one costs no more than others.
        .on_start(move |_ctx| {
            let warm = warm.clone();
            async move { warm.warm().await }
        })
        .on_start(move |ctx| {
            tokio::spawn(remove_ended_families(ended.clone(), ctx));
            async { Ok(()) }
        })
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .public("/auth.v1.Auth/{*method}")
        .route(
            JWKS_PATH,
            get(move || {
                let jwks = jwks.clone();
                // Verifiers reload it on their own interval; caches may keep it a while.
                async move { ([(CACHE_CONTROL, "public, max-age=300")], Json(jwks)) }
            }),
        )
        .public(JWKS_PATH)
        .durable_subscribe(
            "users.deleted",
            USERS_DELETED_CONSUMER,
            move |_ctx, event: Event<UserEvent>| {
                let accounts = deleted.clone();
                async move {
                    let user_id = &event.body().user_id;
                    if accounts.delete(user_id).await? {
                        tracing::info!(user_id, "account removed: its user was deleted");
                    }
                    Ok(())
                }
            },
        )
        .build()
}
