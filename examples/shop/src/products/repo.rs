//! The products table: validation and queries.

use room619::{Error, ErrorKind, middleware::auth::Principal};

use crate::rules;
use sqlx::{Row as _, any::AnyRow};

use crate::store::{
    Db, db_error, new_id,
    page::{self, Cursor},
    timestamp,
};

/// The longest name, in characters.
const MAX_NAME: usize = 200;
/// The longest description, in characters.
const MAX_DESCRIPTION: usize = 2_000;
/// The highest price, in cents.
const MAX_PRICE_CENTS: i64 = 10_000_000_000;
/// The longest search query, in characters.
const MAX_QUERY: usize = 200;

const COLUMNS: &str =
    "id, owner_id, name, description, price_cents, archived, created_at, updated_at, version";

/// One product, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProductRow {
    pub(crate) id: String,
    pub(crate) owner_id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) price_cents: i64,
    pub(crate) archived: bool,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    /// 1 when created, one more with every change.
    pub(crate) version: i64,
}

impl ProductRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            price_cents: row.try_get("price_cents")?,
            archived: row.try_get::<i64, _>("archived")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at.clone(),
            id: self.id.clone(),
        }
    }
}

/// What a listing asks for.
#[derive(Debug, Default)]
pub(crate) struct Filter<'a> {
    pub(crate) page_size: u32,
    pub(crate) page_token: &'a str,
    pub(crate) query: &'a str,
    pub(crate) owner_id: &'a str,
    pub(crate) include_archived: bool,
}

/// The fields an update sets (`None`: left as it is).
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) price_cents: Option<i64>,
    /// The version the product must still be at, if any.
    pub(crate) expected_version: Option<i64>,
}

/// The catalog's data.
#[derive(Debug, Clone)]
pub(crate) struct ProductStore {
    db: Db,
}

impl ProductStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Creates a product owned by the caller.
    pub(crate) async fn create(
        &self,
        caller: &Principal,
        name: &str,
        description: &str,
        price_cents: i64,
    ) -> room619::Result<ProductRow> {
        let name = check_name(name)?;
        check_description(description)?;
        check_price(price_cents)?;
        let row = ProductRow {
            id: new_id(),
            owner_id: caller.subject().to_owned(),
            name,
            description: description.to_owned(),
            price_cents,
            archived: false,
            created_at: timestamp(),
            updated_at: String::new(),
            version: 1,
        };
        let mut tx = self.db.pool().begin().await.map_err(db_error)?;
        if claim_owner(&mut tx, &row.owner_id, false).await? {
            return Err(Error::permission_denied(format!(
                "user {} was deleted: it can no longer create products",
                row.owner_id
            )));
        }
        sqlx::query(
            "INSERT INTO products (id, owner_id, name, name_folded, description, price_cents, \
             archived, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7, 1)",
        )
        .bind(&row.id)
        .bind(&row.owner_id)
        .bind(&row.name)
        .bind(row.name.to_lowercase())
        .bind(&row.description)
        .bind(row.price_cents)
        .bind(&row.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(ProductRow {
            updated_at: row.created_at.clone(),
            ..row
        })
    }

    /// One product, archived or not; `NotFound` when there is none.
    pub(crate) async fn get(&self, id: &str) -> room619::Result<ProductRow> {
        let id = crate::access::required("id", id)?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => ProductRow::from_row(&row).map_err(db_error),
            None => Err(not_found(id)),
        }
    }

    /// A page of products in creation order, and the next page's token.
    pub(crate) async fn list(
        &self,
        filter: &Filter<'_>,
    ) -> room619::Result<(Vec<ProductRow>, String)> {
        let size = page::page_size(filter.page_size)?;
        let cursor = Cursor::decode(filter.page_token)?;
        let query_length = filter.query.chars().count();
        if query_length > MAX_QUERY {
            return Err(Error::invalid_argument(format!(
                "query must be at most {MAX_QUERY} characters (got {query_length})"
            )));
        }
        if filter.query.chars().any(char::is_control) {
            return Err(Error::invalid_argument(
                "query must not contain control characters",
            ));
        }
        if !filter.owner_id.is_empty() {
            crate::access::required("owner_id", filter.owner_id)?;
        }
        let (sql, args) = listing_sql(filter, cursor, size + 1);
        let query = args
            .iter()
            .fold(sqlx::query(&sql), |query, arg| query.bind(arg.as_str()));
        let rows = query.fetch_all(self.db.pool()).await.map_err(db_error)?;
        let rows = rows
            .iter()
            .map(ProductRow::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        Ok(page::split(rows, size, ProductRow::cursor))
    }

    /// Sets the `changes` of the caller's own product, if it is still at
    /// their expected version. Changes that set nothing are refused
    /// (`INVALID_ARGUMENT`): they would make a new version of the same
    /// product.
    pub(crate) async fn update(
        &self,
        caller: &Principal,
        id: &str,
        changes: Changes,
    ) -> room619::Result<ProductRow> {
        let id = crate::access::required("id", id)?;
        if changes.name.is_none() && changes.description.is_none() && changes.price_cents.is_none()
        {
            return Err(Error::invalid_argument(
                "nothing to change: set at least one of name, description and price_cents",
            ));
        }
        let name = changes.name.as_deref().map(check_name).transpose()?;
        if let Some(description) = &changes.description {
            check_description(description)?;
        }
        if let Some(price_cents) = changes.price_cents {
            check_price(price_cents)?;
        }
        check_version(changes.expected_version)?;
        let folded = name.as_ref().map(|name| name.to_lowercase());
        let row = sqlx::query(&format!(
            "UPDATE products SET name = COALESCE($3, name), name_folded = COALESCE($4, name_folded), \
             description = COALESCE($5, description), price_cents = COALESCE($6, price_cents), \
             updated_at = $7, version = version + 1 \
             WHERE id = $1 AND owner_id = $2 AND archived = 0 AND version = COALESCE($8, version) \
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(caller.subject())
        .bind(name)
        .bind(folded)
        .bind(changes.description)
        .bind(changes.price_cents)
        .bind(timestamp())
        .bind(changes.expected_version)
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => ProductRow::from_row(&row).map_err(db_error),
            None => Err(self
                .refusal(caller, id, "change", changes.expected_version)
                .await),
        }
    }

    /// Deletes the caller's own product, if it is at `expected_version`
    /// (when given).
    pub(crate) async fn delete(
        &self,
        caller: &Principal,
        id: &str,
        expected_version: Option<i64>,
    ) -> room619::Result<()> {
        let id = crate::access::required("id", id)?;
        check_version(expected_version)?;
        let deleted = sqlx::query(
            "DELETE FROM products WHERE id = $1 AND owner_id = $2 AND archived = 0 \
             AND version = COALESCE($3, version)",
        )
        .bind(id)
        .bind(caller.subject())
        .bind(expected_version)
        .execute(self.db.pool())
        .await
        .map_err(db_error)?;
        if deleted.rows_affected() == 0 {
            return Err(self.refusal(caller, id, "delete", expected_version).await);
        }
        Ok(())
    }

    /// Why a change of product `id` by `caller` touched nothing: it does
    /// not exist (`NotFound`), belongs to someone else, or was archived with
    /// its owner's deletion (`PermissionDenied`: the departed owner's tokens
    /// live on until they expire), or is no longer at the version expected
    /// (`FailedPrecondition`).
    async fn refusal(
        &self,
        caller: &Principal,
        id: &str,
        what: &str,
        expected_version: Option<i64>,
    ) -> Error {
        let found = sqlx::query("SELECT owner_id, archived, version FROM products WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await
            .and_then(|row| {
                row.map(|row| {
                    Ok::<_, sqlx::Error>((
                        row.try_get::<String, _>("owner_id")?,
                        row.try_get::<i64, _>("archived")? != 0,
                        row.try_get::<i64, _>("version")?,
                    ))
                })
                .transpose()
            });
        match found {
            Ok(Some((owner, _, _))) if owner != caller.subject() => {
                Error::permission_denied(format!("only the owner of product {id} may {what} it"))
            }
            Ok(Some((_, true, _))) => Error::permission_denied(format!(
                "product {id} was archived when its owner was deleted: no one may {what} it"
            )),
            Ok(Some((_, false, version))) => match expected_version {
                Some(expected) if expected != version => Error::failed_precondition(format!(
                    "product {id} is at version {version}, not {expected}: it changed since it \
                     was read; read it again before you {what} it"
                )),
                // It matched by the time it was read again: it changed
                // between the two statements.
                _ => Error::new(
                    ErrorKind::Aborted,
                    format!("product {id} changed while this {what} ran; try again"),
                ),
            },
            Ok(None) => not_found(id),
            Err(err) => db_error(err),
        }
    }

    /// Archives every product of `owner_id`, whose user was deleted, and
    /// refuses it new ones; the count archived (0 when they were archived
    /// already).
    pub(crate) async fn archive_owned_by(&self, owner_id: &str) -> room619::Result<u64> {
        let mut tx = self.db.pool().begin().await.map_err(db_error)?;
        claim_owner(&mut tx, owner_id, true).await?;
        let archived = sqlx::query(
            "UPDATE products SET archived = 1, updated_at = $2, version = version + 1 \
             WHERE owner_id = $1 AND archived = 0",
        )
        .bind(owner_id)
        .bind(timestamp())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(archived.rows_affected())
    }
}

/// Writes the row of `owner_id` in `products_owners` (marking it deleted
/// when `deleted`), which holds it until `tx` ends: a creation and an archive
/// of the same owner go one after the other. Whether the owner is deleted.
async fn claim_owner(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner_id: &str,
    deleted: bool,
) -> room619::Result<bool> {
    let deleted: i64 = sqlx::query_scalar(
        "INSERT INTO products_owners (owner_id, deleted) VALUES ($1, $2) \
         ON CONFLICT (owner_id) DO UPDATE SET deleted = \
         CASE WHEN $2 = 1 THEN 1 ELSE products_owners.deleted END \
         RETURNING deleted",
    )
    .bind(owner_id)
    .bind(i64::from(deleted))
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(deleted != 0)
}

/// The `SELECT` of a listing (at most `limit` rows) and its arguments, in
/// placeholder order.
fn listing_sql(filter: &Filter<'_>, cursor: Option<Cursor>, limit: i64) -> (String, Vec<String>) {
    let mut conditions = Vec::new();
    let mut args: Vec<String> = Vec::new();
    if !filter.include_archived {
        conditions.push("archived = 0".to_owned());
    }
    if !filter.owner_id.is_empty() {
        args.push(filter.owner_id.to_owned());
        conditions.push(format!("owner_id = ${}", args.len()));
    }
    if !filter.query.is_empty() {
        args.push(format!("%{}%", escape_like(&filter.query.to_lowercase())));
        conditions.push(format!("name_folded LIKE ${} ESCAPE '\\'", args.len()));
    }
    if let Some(cursor) = cursor {
        args.push(cursor.created_at);
        args.push(cursor.id);
        // A range of `products_by_creation`, or of `products_by_owner`
        // after its `owner_id`.
        conditions.push(page::after(args.len() - 1, args.len()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql =
        format!("SELECT {COLUMNS} FROM products{filter} ORDER BY created_at, id LIMIT {limit}");
    (sql, args)
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("no product with id {id}"))
}

/// `text` with the `LIKE` wildcards `%` and `_` (and the escape `\`) escaped.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A name of 1 to 200 characters once trimmed, without control characters
/// (the rule of every display name, [`rules::name_problem`]).
fn check_name(name: &str) -> room619::Result<String> {
    let name = name.trim();
    match rules::name_problem(name, MAX_NAME) {
        Some(problem) => Err(Error::invalid_argument(format!("name {problem}"))),
        None => Ok(name.to_owned()),
    }
}

/// At most 2 000 characters; line breaks and tabs allowed, other control
/// characters (NUL, which PostgreSQL cannot store, escapes) not.
fn check_description(description: &str) -> room619::Result<()> {
    let length = description.chars().count();
    if length > MAX_DESCRIPTION {
        return Err(Error::invalid_argument(format!(
            "description must be at most {MAX_DESCRIPTION} characters (got {length})"
        )));
    }
    if description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid_argument(
            "description must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

fn check_version(expected_version: Option<i64>) -> room619::Result<()> {
    match expected_version {
        Some(version) if version < 1 => Err(Error::invalid_argument(format!(
            "expected_version must be 1 or more (got {version}); leave it unset for no check"
        ))),
        _ => Ok(()),
    }
}

fn check_price(price_cents: i64) -> room619::Result<()> {
    if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(Error::invalid_argument(format!(
            "price_cents must be 0 to {MAX_PRICE_CENTS} (got {price_cents})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A later page starts where the cursor is in the index, after the
    /// other conditions: `(created_at, id) > (..)`, not an `OR` that makes
    /// the database read every row before it.
    #[test]
    fn a_later_page_is_a_range_of_the_index() {
        let cursor = || {
            Some(Cursor {
                created_at: "2026-11-26T05:00:00.000000Z".to_owned(),
                id: "p1".to_owned(),
            })
        };
        let filter = Filter {
            owner_id: "ada",
            query: "pot",
            ..Filter::default()
        };
        let (sql, args) = listing_sql(&filter, cursor(), 21);
        assert!(
            sql.ends_with(
                " FROM products WHERE archived = 0 AND owner_id = $1 AND name_folded LIKE $2 \
                 ESCAPE '\\' AND (created_at, id) > ($3, $4) ORDER BY created_at, id LIMIT 21"
            ),
            "{sql}"
        );
        assert_eq!(args, ["ada", "%pot%", "2026-11-26T05:00:00.000000Z", "p1"]);
        let (sql, args) = listing_sql(&Filter::default(), cursor(), 3);
        assert!(
            sql.ends_with(
                " WHERE archived = 0 AND (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT 3"
            ),
            "{sql}"
        );
        assert_eq!(args.len(), 2);
        assert!(!sql.contains(" OR "), "{sql}");
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(escape_like("plain"), "plain");
    }
}
