//! [`ShopSettings`]: the shop's own section of the configuration,
//! `[app.shop]` (environment `ROOM619_APP__SHOP__<KEY>`).
//!
//! ```toml
//! [app.shop]
//! data_dir = "/var/lib/shop"                       # SQLite lives here
//! database_url = "postgres://shop@db.internal/shop" # or PostgreSQL
//! ```

use std::path::PathBuf;

use room619::config::{Config, ConfigError};
use serde::Deserialize;

/// The environment variable that, when set and not empty, names the database
/// and wins over `[app.shop] database_url`.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// `[app.shop]`: where the shop keeps its data. Every field has a default,
/// an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopSettings {
    /// The directory of the SQLite database `shop.db` (created when
    /// missing), used when no database URL is given. Default: `./data`.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://user@host:5432/db`); SQLite in
    /// `data_dir` when unset. The `DATABASE_URL` environment variable wins
    /// (see [`ShopSettings::effective_database_url`]). Default: unset.
    pub database_url: Option<String>,
    /// `[app.shop.auth]`: the auth service's keys, issuer, audience and
    /// token lifetimes.
    pub auth: crate::auth::AuthSettings,
}

impl Default for ShopSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            auth: crate::auth::AuthSettings::default(),
        }
    }
}

impl ShopSettings {
    /// The `[app.shop]` section of `config` (the defaults when it is absent).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key under `app.shop` for an unknown key or a value of
    /// the wrong type.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        config.app("shop")
    }

    /// The database URL to use: `DATABASE_URL` when it is set and not empty,
    /// else `database_url`; `None` means SQLite in `data_dir`.
    #[must_use]
    pub fn effective_database_url(&self) -> Option<String> {
        std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.trim().is_empty())
            .or_else(|| self.database_url.clone())
            .filter(|url| !url.trim().is_empty())
    }

    /// The SQLite database file: `<data_dir>/shop.db`.
    #[must_use]
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("shop.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_optional_and_typos_are_errors() {
        let config = Config::from_toml_str("").unwrap();
        let settings = ShopSettings::from_config(&config).unwrap();
        assert_eq!(settings, ShopSettings::default());
        assert_eq!(settings.sqlite_path(), PathBuf::from("./data/shop.db"));

        let config = Config::from_toml_str(
            "[app.shop]\ndata_dir = \"/srv/shop\"\ndatabase_url = \"postgres://db/shop\"",
        )
        .unwrap();
        let settings = ShopSettings::from_config(&config).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/srv/shop"));
        assert_eq!(settings.database_url.as_deref(), Some("postgres://db/shop"));

        let config = Config::from_toml_str("[app.shop]\ndata_dri = \"x\"").unwrap();
        let err = ShopSettings::from_config(&config).unwrap_err();
        assert_eq!(err.key(), "app.shop.data_dri");
        assert!(err.problem().contains("data_dri"), "{}", err.problem());
    }
}
