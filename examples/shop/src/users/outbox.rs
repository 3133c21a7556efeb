//! The transactional outbox of the users service.
//!
//! A change and the event announcing it are written in one transaction
//! ([`enqueue`]): the event row exists exactly when the change does. Each
//! event takes the next number of a counter row in that transaction, whose
//! lock the transaction holds to its commit: numbers follow the order of the
//! commits, and a number is visible only once every smaller one is. The
//! relay ([`run`]) publishes the rows by number on the bus, with the row id
//! as message id (JetStream drops a republished duplicate), and deletes each
//! once the bus accepted it. A crash, or a failed publish or delete, stops
//! the pass; the next one starts again from the lowest number, so events
//! go out at least once and in order. Nothing is lost before publishing.
//!
//! Several relays share the table (both API versions, several instances):
//! a pass runs only while its relay holds the one lease row of
//! `users_outbox_relay`, and stops publishing once half the lease is used,
//! so that no other relay takes the lease while it publishes. The relays of
//! one process take turns on a lock and share one lease holder id, so a
//! relay woken while the other passes runs right after it; another
//! instance's relay finds the lease taken and looks again at its next poll.

use std::{sync::Arc, time::Duration};

use room619::{
    ServiceContext,
    bus::{MessageBus, OutgoingMessage},
};
use shop_proto::users::v1::UserEvent;
use sqlx::{Any, Row as _, Transaction, any::AnyRow};
use tokio::sync::{Mutex, Notify};

use crate::store::{Db, db_error, new_id, timestamp, unix_millis};

/// Published when a user is created.
pub const CREATED: &str = "users.created";
/// Published when a user is deleted.
pub const DELETED: &str = "users.deleted";

/// The most rows one relay pass publishes.
const BATCH: i64 = 100;
/// How long the lease lasts before another relay may take it.
const LEASE_MS: i64 = 30_000;
/// How much of the lease a pass leaves unused: it publishes no more once
/// less than this is left, well before another relay may take the lease.
const LEASE_SPARE_MS: i64 = LEASE_MS / 2;
/// How often the relay looks for rows nobody woke it for (written by other
/// instances, left by a crash, or after the bus failed).
const POLL: Duration = Duration::from_secs(1);
/// The longest the final pass at shutdown may take.
const FINAL_PASS: Duration = Duration::from_secs(5);

/// Wakes the relay when a request committed an event, and lets the relays
/// of this process take turns.
#[derive(Debug)]
pub(crate) struct Outbox {
    pending: Notify,
    /// Held for the length of a pass.
    turn: Mutex<()>,
    /// This process's name on the lease.
    holder: String,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            pending: Notify::new(),
            turn: Mutex::new(()),
            holder: new_id(),
        }
    }
}

impl Outbox {
    /// Tells a relay that rows are waiting.
    pub(crate) fn wake(&self) {
        self.pending.notify_one();
    }
}

/// Queues the event `subject` about `user_id` inside the caller's
/// transaction, as its last write.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'static, Any>,
    subject: &str,
    user_id: &str,
    email: &str,
) -> room619::Result<()> {
    // The counter row stays locked until the transaction ends: the caller
    // writes nothing after this.
    let seq: i64 = sqlx::query_scalar(
        "UPDATE users_outbox_sequence SET last = last + 1 WHERE name = 'users' RETURNING last",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO users_outbox (id, subject, user_id, email, created_at, seq) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(subject)
    .bind(user_id)
    .bind(email)
    .bind(timestamp())
    .bind(seq)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// One queued event.
struct Pending {
    id: String,
    subject: String,
    event: UserEvent,
}

impl Pending {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            subject: row.try_get("subject")?,
            event: UserEvent {
                user_id: row.try_get("user_id")?,
                email: row.try_get("email")?,
            },
        })
    }
}

/// The relay loop: publishes pending events until the node shuts down. It
/// waits before its first pass, so the node's subscribers are listening
/// when rows left from a previous run go out.
pub(crate) async fn run(ctx: ServiceContext, db: Db, outbox: Arc<Outbox>) {
    let mut more = false;
    loop {
        if !more {
            tokio::select! {
                biased;
                () = ctx.shutdown_signal() => break,
                () = outbox.pending.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        more = match pass(ctx.bus(), &db, &outbox).await {
            Ok(published) => published == BATCH,
            Err(err) => {
                tracing::warn!(error = %err, "the users outbox relay could not publish; retrying");
                false
            }
        };
    }
}

/// The pass at shutdown, after the requests drained: what they queued goes
/// out now rather than at the next start.
pub(crate) async fn final_pass(bus: &MessageBus, db: &Db, outbox: &Outbox) {
    let result = tokio::time::timeout(FINAL_PASS, async {
        loop {
            match pass(bus, db, outbox).await {
                Ok(published) if published == BATCH => {}
                other => return other,
            }
        }
    })
    .await;
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "events stay in the users outbox until the next start");
        }
        Err(_) => tracing::warn!("the final outbox pass timed out; events stay queued"),
    }
}

/// Takes the lease, publishes up to [`BATCH`] rows ([`publish_batch`]) and
/// hands the lease back; the count published, 0 when another instance's
/// relay holds the lease.
///
/// # Errors
///
/// The database's or the bus's error.
pub(crate) async fn pass(bus: &MessageBus, db: &Db, outbox: &Outbox) -> room619::Result<i64> {
    let _turn = outbox.turn.lock().await;
    let now = unix_millis();
    let lease_until = now + LEASE_MS;
    // One row, so PostgreSQL serialises two relays on its lock and checks
    // `held_until` again on the row the first one wrote: one of them wins.
    let taken = sqlx::query(
        "UPDATE users_outbox_relay SET holder = $1, held_until = $2 \
         WHERE name = 'users' AND (held_until < $3 OR holder = $1)",
    )
    .bind(&outbox.holder)
    .bind(lease_until)
    .bind(now)
    .execute(db.pool())
    .await
    .map_err(db_error)?;
    if taken.rows_affected() == 0 {
        return Ok(0);
    }
    let published = publish_batch(bus, db, lease_until).await;
    if let Err(err) = sqlx::query(
        "UPDATE users_outbox_relay SET held_until = 0 WHERE name = 'users' AND holder = $1",
    )
    .bind(&outbox.holder)
    .execute(db.pool())
    .await
    {
        tracing::debug!(error = %err, "the outbox lease stays until it expires");
    }
    published
}

/// Publishes up to [`BATCH`] rows, lowest number first, and deletes each
/// once the bus accepted it, while the lease (held until `lease_until`) has
/// more than [`LEASE_SPARE_MS`] left; the count published.
///
/// # Errors
///
/// The database's or the bus's error, which ends the pass: the next one
/// starts again at the row that failed (republishing it if only its delete
/// failed), so no event goes out before one written earlier.
async fn publish_batch(bus: &MessageBus, db: &Db, lease_until: i64) -> room619::Result<i64> {
    let rows = sqlx::query(&format!(
        "SELECT id, subject, user_id, email FROM users_outbox \
         ORDER BY seq, created_at, id LIMIT {BATCH}"
    ))
    .fetch_all(db.pool())
    .await
    .map_err(db_error)?;
    let mut published = 0;
    for row in &rows {
        if unix_millis() > lease_until - LEASE_SPARE_MS {
            // The rest waits for the next pass, under a fresh lease.
            break;
        }
        let row = Pending::from_row(row).map_err(db_error)?;
        publish(bus, &row).await?;
        sqlx::query("DELETE FROM users_outbox WHERE id = $1")
            .bind(&row.id)
            .execute(db.pool())
            .await
            .map_err(db_error)?;
        published += 1;
    }
    Ok(published)
}

async fn publish(bus: &MessageBus, row: &Pending) -> room619::Result<()> {
    let message = OutgoingMessage::encode(row.subject.clone(), &row.event, bus.format())?
        .message_id(row.id.clone());
    bus.publish_message(message).await
}
