//! The shop's database: SQLite by default, PostgreSQL when configured.
//!
//! PLACEHOLDER (H2): H1 owns this module; this minimal version has exactly
//! the API the auth service codes against (`Db::connect`, `Db::pool`).

use std::path::Path;

use sqlx::{AnyPool, any::AnyPoolOptions, migrate::Migrator};

use crate::settings::ShopSettings;

/// A handle on the shop's database (cheap to clone).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
}

impl Db {
    /// Connects to `DATABASE_URL`, `database_url` or the SQLite file
    /// `<data_dir>/shop.db`, and runs every migration of `migrations/`.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the database cannot be reached, `Internal` when a
    /// migration fails.
    pub async fn connect(settings: &ShopSettings) -> room619::Result<Self> {
        sqlx::any::install_default_drivers();
        let configured = std::env::var("DATABASE_URL")
            .ok()
            .or_else(|| settings.database_url.clone());
        let url = if let Some(url) = configured {
            url
        } else {
            std::fs::create_dir_all(&settings.data_dir)?;
            format!(
                "sqlite://{}?mode=rwc",
                settings.data_dir.join("shop.db").display()
            )
        };
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .map_err(|err| {
                room619::Error::unavailable("cannot connect to the database").with_source(err)
            })?;
        let migrations = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"));
        let migrator = Migrator::new(migrations).await.map_err(|err| {
            room619::Error::internal("cannot read the migrations").with_source(err)
        })?;
        migrator
            .run(&pool)
            .await
            .map_err(|err| room619::Error::internal("a migration failed").with_source(err))?;
        Ok(Self { pool })
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
