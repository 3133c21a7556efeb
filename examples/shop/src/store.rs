//! The shop's storage: one [`Db`] over SQLite or PostgreSQL, its migrations,
//! and the one place database errors become [`room619::Error`]s.
//!
//! [`Db::connect`] opens `<data_dir>/shop.db` (SQLite, WAL mode, foreign keys
//! on) unless a PostgreSQL URL is given (`DATABASE_URL` or
//! `[app.shop] database_url`), then runs every migration of
//! `examples/shop/migrations/` (files `NNNN_<what>.sql`: auth 0100-0199,
//! users 0200-0299, products 0300-0399). The SQL the services run is written
//! once for both databases: `$1` placeholders, `TEXT` ids and timestamps,
//! `BIGINT` numbers.
//!
//! ```no_run
//! # async fn demo() -> room619::Result<()> {
//! use shop::{settings::ShopSettings, store::Db};
//!
//! let db = Db::connect(&ShopSettings::default()).await?; // ./data/shop.db
//! let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
//!     .fetch_one(db.pool())
//!     .await
//!     .map_err(shop::store::db_error)?;
//! # let _ = count;
//! # Ok(()) }
//! ```

pub mod page;

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::future::BoxFuture;
use room619::{Error, ErrorKind, service::Health};
use sqlx::{
    AnyConnection, AnyPool, Connection as _,
    any::AnyPoolOptions,
    error::{BoxDynError, ErrorKind as DbErrorKind},
    migrate::{Migration, MigrationSource, MigrationType, Migrator},
};

use crate::settings::ShopSettings;

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// How long a request waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The shop's database: a pool of connections, migrated. Cheap to clone;
/// clones share the pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens the database `settings` name: PostgreSQL when
    /// [`ShopSettings::effective_database_url`] is set, else SQLite in
    /// `<data_dir>/shop.db` (the directory is created); then runs every
    /// migration.
    ///
    /// # Errors
    ///
    /// `Config` for a malformed URL; `Unavailable` when the database cannot
    /// be reached or the directory cannot be created; `Internal` when a
    /// migration fails.
    pub async fn connect(settings: &ShopSettings) -> room619::Result<Self> {
        match settings.effective_database_url() {
            Some(url) => Self::connect_url(&url).await,
            None => Self::open_sqlite(&settings.sqlite_path()).await,
        }
    }

    /// Opens the SQLite database file `path`, creating it and its directory
    /// when missing, and migrates it.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn open_sqlite(path: &Path) -> room619::Result<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|err| {
                Error::unavailable(format!(
                    "cannot create the data directory {}: {err}",
                    dir.display()
                ))
            })?;
        }
        let path = path.to_str().ok_or_else(|| {
            Error::config(format!(
                "the database path {} is not valid UTF-8",
                path.display()
            ))
        })?;
        if path.contains(['?', '#']) {
            return Err(Error::config(format!(
                "the database path `{path}` must not contain `?` or `#`"
            )));
        }
        Self::connect_url(&format!("sqlite://{path}?mode=rwc")).await
    }

    /// Opens the database at `url` (`postgres://...` or `sqlite://...`) and
    /// migrates it.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_url(url: &str) -> room619::Result<Self> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(Error::config(
                "the database URL must start with `postgres://`, `postgresql://` or `sqlite:`",
            ));
        };
        sqlx::any::install_default_drivers();
        // One connection first: the pool would retry an unreachable server
        // until its timeout and report only that.
        let probe = AnyConnection::connect(url)
            .await
            .map_err(|err| connect_error(backend, err))?;
        if let Err(err) = probe.close().await {
            tracing::debug!(error = %err, "the probe connection did not close cleanly");
        }
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL".to_owned(),
                            "PRAGMA foreign_keys = ON".to_owned(),
                            "PRAGMA synchronous = NORMAL".to_owned(),
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"),
                        ] {
                            sqlx::query(&pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        let pool = options
            .connect(url)
            .await
            .map_err(|err| connect_error(backend, err))?;
        let db = Self { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    /// Runs the migrations not applied yet, in version order.
    async fn migrate(&self) -> room619::Result<()> {
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|err| Error::internal(format!("cannot read the migrations: {err}")))?;
        migrator.run(&self.pool).await.map_err(|err| {
            Error::internal(format!("the database migration failed: {err}")).with_source(err)
        })
    }

    /// The connection pool, for queries.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; queries after this fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers (for
    /// [`ServiceBuilder::dependency`](room619::ServiceBuilder::dependency)).
    #[must_use]
    pub fn health(&self) -> BoxFuture<'static, Health> {
        let pool = self.pool.clone();
        Box::pin(async move {
            match sqlx::query("SELECT 1").execute(&pool).await {
                Ok(_) => Health::Healthy,
                Err(err) => Health::Unhealthy(format!("the database does not answer: {err}")),
            }
        })
    }
}

/// The migrations embedded at build time.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

fn connect_error(backend: Backend, err: sqlx::Error) -> Error {
    let name = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let kind = match &err {
        sqlx::Error::Configuration(_) => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("cannot open the {name} database: {err}")).with_source(err)
}

/// The one mapping of database errors to [`room619::Error`]: a unique
/// violation is `AlreadyExists`, a foreign-key one `FailedPrecondition`, a
/// not-null or check one `InvalidArgument`, no row `NotFound`, an unreachable,
/// busy, restarting or saturated database `Unavailable`, a transaction lost
/// to a conflict `Aborted`, anything else `Internal`. The message
/// is generic (the caller sees it); the cause is kept as the source for the
/// logs. Callers that know better reword it (see [`db_error_with`]).
#[must_use]
pub fn db_error(err: sqlx::Error) -> Error {
    let (kind, message) = match &err {
        sqlx::Error::Database(db) => match db.kind() {
            DbErrorKind::UniqueViolation => (ErrorKind::AlreadyExists, "the record already exists"),
            DbErrorKind::ForeignKeyViolation => (
                ErrorKind::FailedPrecondition,
                "the record refers to one that does not exist",
            ),
            DbErrorKind::NotNullViolation | DbErrorKind::CheckViolation => {
                (ErrorKind::InvalidArgument, "the record is not valid")
            }
            // PostgreSQL's character_not_in_repertoire: a NUL in a text
            // value. The services refuse control characters first; this is
            // the backstop, so that such input is never a server error.
            _ if db.code().as_deref() == Some("22021") => (
                ErrorKind::InvalidArgument,
                "the text holds a character the database cannot store (NUL)",
            ),
            _ => db
                .code()
                .as_deref()
                .and_then(passing_failure)
                .unwrap_or((ErrorKind::Internal, "the database failed")),
        },
        sqlx::Error::RowNotFound => (ErrorKind::NotFound, "no such record"),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => (ErrorKind::Unavailable, "the database is unavailable"),
        _ => (ErrorKind::Internal, "the database failed"),
    };
    if kind == ErrorKind::Internal || kind == ErrorKind::Unavailable {
        tracing::error!(error = %err, "database error");
    }
    Error::new(kind, message).with_source(err)
}

/// A database error that says nothing of the request, by its code: the
/// database busy, restarting or out of connections (`Unavailable`, worth a
/// retry elsewhere or later), or a transaction given up to a conflict with
/// another (`Aborted`, worth a retry of the whole call). PostgreSQL's codes
/// are SQLSTATEs of five characters; SQLite's are numbers, extended codes
/// keeping the primary one in their low byte.
fn passing_failure(code: &str) -> Option<(ErrorKind, &'static str)> {
    const UNAVAILABLE: (ErrorKind, &str) = (ErrorKind::Unavailable, "the database is unavailable");
    const CONFLICT: (ErrorKind, &str) = (
        ErrorKind::Aborted,
        "the change conflicted with another one; try again",
    );
    if code.len() == 5 {
        return match code {
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => Some(CONFLICT),
            // query_canceled (a statement timeout), admin_shutdown,
            // crash_shutdown, cannot_connect_now
            "57014" | "57P01" | "57P02" | "57P03" => Some(UNAVAILABLE),
            // connection exceptions, insufficient resources (too many
            // connections, out of memory or disk)
            _ if code.starts_with("08") || code.starts_with("53") => Some(UNAVAILABLE),
            _ => None,
        };
    }
    // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
    let primary = code.parse::<u32>().ok()? & 0xff;
    matches!(primary, 5 | 6).then_some(UNAVAILABLE)
}

/// As [`db_error`], with `message` for the caller when the error is of
/// `kind` (`db_error_with(err, ErrorKind::AlreadyExists, "email taken")`).
#[must_use]
pub fn db_error_with(err: sqlx::Error, kind: ErrorKind, message: impl Into<String>) -> Error {
    let mapped = db_error(err);
    if mapped.kind() == kind {
        Error::new(kind, message.into()).with_source(mapped)
    } else {
        mapped
    }
}

/// Now as RFC 3339 UTC with microseconds (`2026-11-26T05:00:00.123456Z`):
/// fixed width, so timestamps sort as text in time order.
#[must_use]
pub fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Now in milliseconds since the Unix epoch.
#[must_use]
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A fresh random id (a UUID v4, hyphenated).
#[must_use]
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_failures_are_told_by_their_code() {
        for code in ["57014", "57P01", "08006", "53300", "5", "517", "6", "262"] {
            let (kind, _) = passing_failure(code).unwrap();
            assert_eq!(kind, ErrorKind::Unavailable, "{code}");
        }
        for code in ["40001", "40P01"] {
            let (kind, _) = passing_failure(code).unwrap();
            assert_eq!(kind, ErrorKind::Aborted, "{code}");
        }
        for code in ["42601", "23505", "1", "19", "2067", "", "x"] {
            assert!(passing_failure(code).is_none(), "{code}");
        }
    }
}
