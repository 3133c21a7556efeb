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
//! | [`rules`] | the input rules (email, names) the services and the gateway's OpenAPI document share |
//! | [`settings`] | [`settings::ShopSettings`]: the `[app.shop]` section |

mod access;
pub mod auth;
pub mod echo;
pub mod gateway;
pub mod products;
pub mod rules;
pub mod settings;
pub mod store;
pub mod users;

use room619::{config::Config, service::BuiltService};

/// The names of the shop's services (registry names; `users` is two
/// versions).
pub const SERVICES: &[&str] = &["echo", "auth", "users", "products", "gateway"];

/// Every service of the shop, in start order; `node.services`
/// (`room619 serve --services ...`) picks the ones that run, and only what
/// those need is opened: the database for auth, users and products, the
/// signing key for auth.
///
/// When the gateway runs and `[rate_limit]` has no rules, it gets
/// [`gateway::default_rate_limits`].
///
/// When auth runs in this process its public keys are added to
/// `config.auth`, so every service here verifies the tokens it issues
/// without fetching its JWKS; elsewhere, `[auth.jwks] url` points at it.
///
/// # Errors
///
/// `Config` for a bad `[app.shop]` section; `Unavailable` when the database
/// cannot be opened; whatever a service's definition reports.
pub async fn services(config: &mut Config) -> room619::Result<Vec<BuiltService>> {
    let settings = settings::ShopSettings::from_config(config)?;
    let selected = config.node.services.clone();
    if let Some(unknown) = selected
        .iter()
        .find(|name| !SERVICES.contains(&name.as_str()))
    {
        return Err(room619::config::ConfigError::new(
            "node.services",
            format!(
                "no service called `{unknown}` (known: {})",
                SERVICES.join(", ")
            ),
        )
        .into());
    }
    let wanted = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
    let mut services = vec![echo::service()?];
    let keys = if wanted("auth") {
        let keys = auth::Keys::load_or_create(&settings)?;
        keys.trust(&mut config.auth, &settings.auth);
        Some(keys)
    } else {
        None
    };
    if wanted("auth") || wanted("users") || wanted("products") {
        let db = store::Db::connect(&settings).await?;
        if let Some(keys) = keys {
            services.push(auth::service(db.clone(), keys, &settings)?);
        }
        if wanted("users") {
            services.extend(users::services(db.clone())?);
        }
        if wanted("products") {
            services.push(products::service(db)?);
        }
    }
    if wanted("gateway") && config.rate_limit.rules.is_empty() {
        config.rate_limit.rules = gateway::default_rate_limits();
    }
    services.push(gateway::service()?);
    Ok(services)
}
