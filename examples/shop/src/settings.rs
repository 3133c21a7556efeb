//! `[app.shop]`: the shop's own settings.
//!
//! PLACEHOLDER (H2): H1 owns this module; this minimal version has exactly
//! the fields the auth service relies on (`data_dir`, `database_url`, and
//! `auth`, which the real one must keep).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::auth::AuthSettings;

/// The `[app.shop]` section (env `ROOM619_APP__SHOP__<KEY>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShopSettings {
    /// Where the shop keeps its files (the SQLite database, the auth
    /// signing key). Default: `data`.
    pub data_dir: PathBuf,
    /// A database URL (`postgres://...`, `sqlite://...`); overrides the
    /// SQLite file in `data_dir`. Default: unset (`DATABASE_URL` if set).
    pub database_url: Option<String>,
    /// `[app.shop.auth]`: the auth service's settings.
    pub auth: AuthSettings,
}

impl Default for ShopSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: None,
            auth: AuthSettings::default(),
        }
    }
}

impl ShopSettings {
    /// The settings of `[app.shop]` in `config`.
    ///
    /// # Errors
    ///
    /// `Config` naming the key when the section does not parse.
    pub fn from_config(config: &room619::config::Config) -> room619::Result<Self> {
        config
            .app::<Self>("shop")
            .map_err(|err| room619::Error::config(err.to_string()))
    }
}
