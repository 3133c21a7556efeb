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

use std::sync::Arc;

use room619::{config::Config, service::BuiltService};

/// The names of the shop's services (registry names; `users` is two
/// versions).
pub const SERVICES: &[&str] = &["echo", "auth", "users", "products", "gateway"];

/// The shop's services, and the changes it makes to the node's
/// configuration.
pub struct Shop {
    /// Every service the node may host, in start order.
    pub services: Vec<BuiltService>,
    adjust: Arc<dyn Fn(&mut Config) + Send + Sync>,
}

impl Shop {
    /// Makes the shop's changes (see [`services`]) to `config`, as to the
    /// configuration it started with: for a reloaded one
    /// ([`room619::NodeBuilder::adjust_reloads`]), which would otherwise
    /// lose them.
    pub fn adjust(&self, config: &mut Config) {
        (self.adjust)(config);
    }

    /// [`adjust`](Self::adjust) as a closure of its own.
    pub fn adjuster(&self) -> impl Fn(&mut Config) + Send + Sync + 'static {
        let adjust = Arc::clone(&self.adjust);
        move |config| adjust(config)
    }
}

/// Every service of the shop, in start order; `node.services`
/// (`room619 serve --services ...`) picks the ones that run, and only what
/// those need is opened: the database for auth, users and products, the
/// signing key for auth.
///
/// It changes `config` (and [`Shop::adjust`] makes the same changes to a
/// reloaded configuration):
/// - when the gateway runs and `[rate_limit]` has no rules, it gets
///   [`gateway::default_rate_limits`];
/// - when auth runs in this process its public keys are added to
///   `config.auth`, so every service here verifies the tokens it issues
///   without fetching its JWKS; elsewhere, `[auth.jwks] url` points at it.
///
/// # Errors
///
/// `Config` for a bad `[app.shop]` section; `Unavailable` when the database
/// cannot be opened; whatever a service's definition reports.
pub async fn services(config: &mut Config) -> room619::Result<Shop> {
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
        Some(auth::Keys::load_or_create(&settings)?)
    } else {
        None
    };
    let adjust = {
        let (trusted, auth_settings, gateway) =
            (keys.clone(), settings.auth.clone(), wanted("gateway"));
        move |config: &mut Config| {
            if let Some(keys) = &trusted {
                keys.trust(&mut config.auth, &auth_settings);
            }
            if gateway && config.rate_limit.rules.is_empty() {
                config.rate_limit.rules = gateway::default_rate_limits();
            }
        }
    };
    adjust(config);
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
    services.push(gateway::service()?);
    Ok(Shop {
        services,
        adjust: Arc::new(adjust),
    })
}
