//! The storage layer itself: migrations, SQLite's settings, error mapping.

use room619::ErrorKind;
use shop::{
    settings::ShopSettings,
    store::{Backend, Db, db_error, page},
};
use sqlx::Row as _;

use crate::{
    both,
    support::{Kind, TestDb, schema_url, unique},
};

const INSERT_USER: &str =
    "INSERT INTO users (id, email, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)";

async fn insert_user(db: &Db, id: &str, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_USER)
        .bind(id)
        .bind(email)
        .bind("Name")
        .bind(shop::store::timestamp())
        .execute(db.pool())
        .await
        .map(|_| ())
}

async fn versions(db: &Db) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn migrations_run_once(kind: Kind) {
    let test = TestDb::new(kind).await;
    let applied = versions(&test.db).await;
    for version in [200, 201, 202, 300] {
        assert!(applied.contains(&version), "{version} not in {applied:?}");
    }
    for table in ["users", "users_outbox", "products"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
    insert_user(&test.db, "u1", "u1@example.com").await.unwrap();

    // Opening the same database again applies nothing twice and keeps the data.
    let again = match kind {
        Kind::Sqlite => {
            let path = test.dir.as_ref().unwrap().join("shop.db");
            Db::open_sqlite(&path).await.unwrap()
        }
        Kind::Postgres => Db::connect_url(&schema_url(test.schema.as_ref().unwrap()))
            .await
            .unwrap(),
    };
    assert_eq!(versions(&again).await, applied);
    assert_eq!(test.count("users").await, 1);
    again.close().await;
    test.finish().await;
}
both!(
    migrations_run_once_and_keep_data,
    super::migrations_run_once
);

async fn errors_map_to_kinds(kind: Kind) {
    let test = TestDb::new(kind).await;
    let db = &test.db;
    insert_user(db, "u1", "u1@example.com").await.unwrap();

    let duplicate = insert_user(db, "u2", "u1@example.com").await.unwrap_err();
    assert_eq!(db_error(duplicate).kind(), ErrorKind::AlreadyExists);
    let duplicate = insert_user(db, "u1", "other@example.com")
        .await
        .unwrap_err();
    assert_eq!(db_error(duplicate).kind(), ErrorKind::AlreadyExists);

    let null = sqlx::query(INSERT_USER)
        .bind("u3")
        .bind(None::<String>)
        .bind("Name")
        .bind(shop::store::timestamp())
        .execute(db.pool())
        .await
        .unwrap_err();
    assert_eq!(db_error(null).kind(), ErrorKind::InvalidArgument);

    let missing = sqlx::query_scalar::<_, String>("SELECT id FROM users WHERE id = $1")
        .bind("nobody")
        .fetch_one(db.pool())
        .await
        .unwrap_err();
    let missing = db_error(missing);
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    let broken = sqlx::query("SELEC nonsense")
        .execute(db.pool())
        .await
        .unwrap_err();
    let broken = db_error(broken);
    assert_eq!(broken.kind(), ErrorKind::Internal);
    assert_eq!(
        broken.message(),
        "the database failed",
        "no SQL details for callers"
    );

    // A database too busy to answer now says nothing of the request:
    // unavailable (503), not a server error.
    let mut holder = db.pool().acquire().await.unwrap();
    let mut waiter = db.pool().acquire().await.unwrap();
    let busy = match kind {
        Kind::Sqlite => {
            // Another connection holds the write lock, and this one does
            // not wait for it: SQLITE_BUSY.
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *holder)
                .await
                .unwrap();
            sqlx::query("PRAGMA busy_timeout = 0")
                .execute(&mut *waiter)
                .await
                .unwrap();
            sqlx::query("DELETE FROM users WHERE id = 'nobody'")
                .execute(&mut *waiter)
                .await
                .unwrap_err()
        }
        Kind::Postgres => {
            // A statement cut by its timeout (57014).
            sqlx::query("SET statement_timeout = 50")
                .execute(&mut *waiter)
                .await
                .unwrap();
            sqlx::query("SELECT pg_sleep(5)")
                .execute(&mut *waiter)
                .await
                .unwrap_err()
        }
    };
    let busy = db_error(busy);
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy:?}");
    assert_eq!(busy.message(), "the database is unavailable");
    // Neither connection goes back to the pool with its change.
    holder.close().await.unwrap();
    waiter.close().await.unwrap();

    // A transaction dropped before commit leaves nothing.
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query(INSERT_USER)
        .bind("u4")
        .bind("u4@example.com")
        .bind("Name")
        .bind(shop::store::timestamp())
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(test.count("users").await, 1);

    db.close().await;
    let closed = insert_user(db, "u5", "u5@example.com").await.unwrap_err();
    assert_eq!(db_error(closed).kind(), ErrorKind::Unavailable);
    test.finish().await;
}
both!(
    database_errors_map_to_error_kinds,
    super::errors_map_to_kinds
);

#[tokio::test]
async fn sqlite_lives_in_the_data_dir_in_wal_mode_with_foreign_keys() {
    let data_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(unique("shop"))
        .join("nested");
    let settings = ShopSettings {
        data_dir: data_dir.clone(),
        database_url: None,
        ..ShopSettings::default()
    };
    let db = Db::connect(&settings).await.unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    assert!(data_dir.join("shop.db").is_file());
    let mut conn = db.pool().acquire().await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode.to_lowercase(), "wal");
    let foreign_keys: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign_keys, 1);
    drop(conn);
    db.close().await;
    std::fs::remove_dir_all(data_dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn unusable_urls_are_reported_clearly() {
    let err = Db::connect_url("mysql://localhost/shop").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("postgres://"), "{}", err.message());

    let err = Db::connect_url("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("PostgreSQL"), "{}", err.message());

    let settings = ShopSettings {
        data_dir: "/proc/no/such/dir".into(),
        database_url: None,
        ..ShopSettings::default()
    };
    let err = Db::connect(&settings).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().contains("/proc/no/such/dir"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn postgres_is_chosen_by_the_database_url() {
    let test = TestDb::new(Kind::Postgres).await;
    assert_eq!(test.db.backend(), Backend::Postgres);
    let settings = ShopSettings {
        data_dir: "/nonexistent".into(),
        database_url: Some(schema_url(test.schema.as_ref().unwrap())),
        ..ShopSettings::default()
    };
    let db = Db::connect(&settings).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    let schema: String = sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(Some(&schema), test.schema.as_ref());
    db.close().await;
    test.finish().await;
}

const CONFIGURED_URL: &str = "postgres://configured.invalid/shop";

/// Run with the suite: the configured URL is the one used. Run again by
/// [`the_database_url_variable_wins_over_the_configuration`] with
/// `DATABASE_URL` set: that URL wins and [`Db::connect`] reaches it.
#[tokio::test]
async fn database_url_child() {
    let settings = ShopSettings {
        data_dir: "/nonexistent".into(),
        database_url: Some(CONFIGURED_URL.to_owned()),
        ..ShopSettings::default()
    };
    match std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        None => assert_eq!(
            settings.effective_database_url().as_deref(),
            Some(CONFIGURED_URL)
        ),
        Some(url) => {
            assert_eq!(settings.effective_database_url(), Some(url));
            let db = Db::connect(&settings).await.unwrap();
            assert_eq!(db.backend(), Backend::Postgres);
            db.close().await;
        }
    }
}

#[tokio::test]
async fn the_database_url_variable_wins_over_the_configuration() {
    let test = TestDb::new(Kind::Postgres).await;
    let url = schema_url(test.schema.as_ref().unwrap());
    // The environment is the process's: the check runs in a child process.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["storage::database_url_child", "--exact", "--nocapture"])
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    test.finish().await;
}

/// A later page is a range of its index, starting at the cursor: with the
/// planner held to index scans (the empty tables would not make it pick one
/// on its own), the cursor's condition is the index scan's, not a filter of
/// every row before it.
#[tokio::test]
async fn a_later_page_starts_at_its_cursor_in_the_index_on_postgres() {
    let test = TestDb::new(Kind::Postgres).await;
    let mut conn = test.db.pool().acquire().await.unwrap();
    for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
        sqlx::query(&format!("SET {setting} = off"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let at = "2026-11-26T05:00:00.000000Z";
    let listings = [
        (
            format!(
                "SELECT id FROM users WHERE {} ORDER BY created_at, id LIMIT 21",
                page::after(1, 2)
            ),
            vec![at, "u1"],
            "users_by_creation",
        ),
        (
            format!(
                "SELECT id FROM products WHERE archived = 0 AND {} ORDER BY created_at, id LIMIT 21",
                page::after(1, 2)
            ),
            vec![at, "p1"],
            "products_by_creation",
        ),
        (
            format!(
                "SELECT id FROM products WHERE archived = 0 AND owner_id = $1 AND {} \
                 ORDER BY created_at, id LIMIT 21",
                page::after(2, 3)
            ),
            vec!["ada", at, "p1"],
            "products_by_owner",
        ),
    ];
    for (sql, args, index) in listings {
        let explain = format!("EXPLAIN {sql}");
        let query = args
            .iter()
            .fold(sqlx::query_scalar::<_, String>(&explain), |query, arg| {
                query.bind(*arg)
            });
        let plan = query.fetch_all(&mut *conn).await.unwrap().join("\n");
        assert!(plan.contains(&format!("Scan using {index} ")), "{plan}");
        let range = plan
            .lines()
            .find(|line| line.trim_start().starts_with("Index Cond:"));
        assert!(
            range.is_some_and(|line| line.contains("ROW(created_at, id) > ROW(")),
            "{plan}"
        );
        assert!(
            !plan
                .lines()
                .any(|line| line.contains("Filter:") && line.contains("created_at")),
            "{plan}"
        );
    }
    drop(conn);
    test.finish().await;
}
