//! Postgres backend, for production and for several instances sharing one database.
//!
//! A commit group is one transaction of three round trips whatever its size: `BEGIN` with the
//! lock of the group's store rows (`FOR UPDATE`, in id order) and the read of their heads; one
//! statement that takes the change-log positions, inserts every event of every store (all stores
//! share the `events` table, keyed by `(store_id, seq)`) and the change-log rows, and moves the
//! heads; `COMMIT`. The row locks serialize appends to one store across processes; stores not in
//! the group are untouched.
//!
//! The committer has a connection of its own, outside the pool: a pooled connection costs a
//! ping (one more round trip) every time it is taken, and the committer takes one for every
//! group. A commit that fails closes that connection, which rolls back whatever it held; the
//! next group connects anew.

use std::collections::HashMap;
use std::sync::Arc;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    AppendRequest, ConnectError, GroupFailed, GroupOutcome, Restored, Snapshot, StoreResult, change_from_row,
    change_mark_from_row, decide, event_from_row, locked_head, materialize, restored_batch, snapshot_from_row,
    store_info, stores_in_lock_order, to_i64,
};
use crate::config::{Durability, StoreConfig};
use crate::eventlog::{
    Change, ChangeMark, ChangePos, CommittedBatch, Event, SeqNum, StoreId, StoreInfo, StoreKey, new_backend_id,
    now_rfc3339,
};

pub struct PostgresStore {
    pool: PgPool,
    /// The committer's connection; `None` after a failed commit, until the next group.
    committer: Mutex<Option<PgConnection>>,
    options: Box<PgConnectOptions>,
    timeout: Duration,
    /// `host:port/database`, for the log.
    location: String,
}

/// The committer's connection, held for one group. If the group's future is dropped halfway (or
/// fails), the connection is dropped with it, which ends its transaction, instead of going back
/// to the slot inside it.
struct CommitterConnection<'a> {
    slot: MutexGuard<'a, Option<PgConnection>>,
    done: bool,
}

impl Drop for CommitterConnection<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.take();
        }
    }
}

impl PostgresStore {
    /// Connects once on its own first: a pool retries a failing connect until its timeout and
    /// then reports only that it timed out, where an operator needs the host and the reason.
    pub async fn connect(config: &StoreConfig) -> Result<PostgresStore, ConnectError> {
        let mut options = PgConnectOptions::from_str(&config.url)?;
        if config.durability == Durability::Process {
            // The commit returns once the WAL record is written, before it is flushed: a crash
            // of Junction or of the Postgres process loses nothing, a power loss can lose the
            // last few hundred milliseconds (wal_writer_delay times three at most).
            options = options.options([("synchronous_commit", "off")]);
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let unreachable = |reason: String| ConnectError::Unreachable {
            place: format!("{}:{}", options.get_host(), options.get_port()),
            reason,
        };
        let first = match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
            Ok(Ok(first)) => first,
            Ok(Err(sqlx::Error::Io(error))) => return Err(unreachable(error.to_string())),
            Ok(Err(other)) => return Err(other.into()),
            Err(_) => return Err(unreachable(format!("no answer within {} ms", config.timeout_ms))),
        };
        let location =
            format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(timeout)
            .connect_with(options.clone())
            .await?;
        Ok(PostgresStore { pool, committer: Mutex::new(Some(first)), options: Box::new(options), timeout, location })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await
    }

    pub fn location(&self) -> String {
        self.location.clone()
    }

    pub async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        // No table yet reads as nothing applied.
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .or_else(|error| match &error {
                sqlx::Error::Database(e) if e.code().as_deref() == Some("42P01") => Ok(Vec::new()),
                _ => Err(error),
            })?;
        Ok(super::not_applied(&sqlx::migrate!("./migrations/postgres"), &applied))
    }

    pub async fn find_store(&self, key: &StoreKey) -> StoreResult<Option<StoreId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM stores WHERE protocol = $1 AND name = $2")
            .bind(key.protocol.as_str())
            .bind(&key.name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(id.map(StoreId))
    }

    pub async fn ensure_store(&self, key: &StoreKey) -> StoreResult<StoreId> {
        if let Some(id) = self.find_store(key).await? {
            return Ok(id);
        }
        // A concurrent creator of the same store (here or in another instance) takes the
        // DO NOTHING branch and reads the winner's row.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO stores (protocol, name, backend_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (protocol, name) DO NOTHING RETURNING id",
        )
        .bind(key.protocol.as_str())
        .bind(&key.name)
        .bind(new_backend_id())
        .bind(now_rfc3339())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(id) = inserted {
            return Ok(StoreId(id));
        }
        self.find_store(key).await?.ok_or(sqlx::Error::RowNotFound)
    }

    pub async fn info(&self, id: StoreId) -> StoreResult<StoreInfo> {
        let row = sqlx::query("SELECT protocol, name, head, backend_id, event_count FROM stores WHERE id = $1")
            .bind(id.0)
            .fetch_one(&self.pool)
            .await?;
        store_info(id, &row)
    }

    pub async fn list_stores(&self, after: StoreId, limit: u32) -> StoreResult<Vec<StoreInfo>> {
        let rows = sqlx::query(
            "SELECT id, protocol, name, head, backend_id, event_count FROM stores WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.0)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| store_info(StoreId(row.try_get("id")?), row)).collect()
    }

    pub async fn read_changes(&self, after: ChangePos, limit: u32) -> StoreResult<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT c.position, s.protocol, s.name, c.first_seq, c.last_seq, CAST(c.event_count AS BIGINT) AS event_count, \
             c.created_at FROM changes c JOIN stores s ON s.id = c.store_id WHERE c.position > $1 \
             ORDER BY c.position LIMIT $2",
        )
        .bind(after.0 as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    pub async fn change_log_head(&self) -> StoreResult<ChangePos> {
        let position: i64 =
            sqlx::query_scalar("SELECT position FROM change_log_head WHERE id = 1").fetch_one(&self.pool).await?;
        Ok(ChangePos(position as u64))
    }

    pub async fn read_change_marks(
        &self,
        after: ChangePos,
        up_to: ChangePos,
        limit: u32,
    ) -> StoreResult<Vec<ChangeMark>> {
        let rows = sqlx::query(
            "SELECT c.position, c.store_id, c.last_seq, s.backend_id FROM changes c JOIN stores s ON s.id = c.store_id \
             WHERE c.position > $1 AND c.position <= $2 ORDER BY c.position LIMIT $3",
        )
        .bind(after.0 as i64)
        .bind(up_to.0 as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_mark_from_row).collect()
    }

    pub async fn commit_group(&self, group: &[&AppendRequest]) -> Result<GroupOutcome, GroupFailed> {
        let mut committer = CommitterConnection { slot: self.committer.lock().await, done: false };
        for attempt in 0..2 {
            if committer.slot.is_none() {
                let connect = PgConnection::connect_with(&self.options);
                let connected =
                    tokio::time::timeout(self.timeout, connect).await.map_err(|_| sqlx::Error::PoolTimedOut);
                *committer.slot = Some(connected??);
            }
            let conn = committer.slot.as_mut().expect("connected above");
            match commit_group_on(conn, group).await {
                Ok(outcome) => {
                    committer.done = true;
                    return Ok(outcome);
                }
                // The first round trip never reached a live server (the connection died while
                // idle, e.g. Postgres restarted): nothing was begun, so try once more on a new
                // connection, as the pool's ping would have.
                Err(Failed::Connection(_)) if attempt == 0 => {
                    committer.slot.take();
                }
                Err(Failed::Connection(error) | Failed::Group(GroupFailed::RolledBack(error))) => {
                    return Err(GroupFailed::RolledBack(error));
                }
                Err(Failed::Group(failed)) => return Err(failed),
            }
        }
        unreachable!("the second attempt returns")
    }

    pub async fn restore(&self, id: StoreId, backend_id: &str, events: &[Event]) -> StoreResult<Restored> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT head, event_count FROM stores WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
        let (head, count): (i64, i64) = (row.try_get("head")?, row.try_get("event_count")?);
        if head != 0 || count != 0 {
            return Ok(Restored::NotEmpty);
        }
        // An empty store carries its backend id over too.
        sqlx::query("UPDATE stores SET backend_id = $1 WHERE id = $2")
            .bind(backend_id)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        if let Some(last) = events.last() {
            let batch = restored_batch(id, backend_id, events, ChangePos(1));
            write_batches(&mut tx, &[&batch], &[(id, last.seq, events.len() as u64)]).await?;
        }
        tx.commit().await?;
        Ok(Restored::Done)
    }

    pub async fn read(&self, id: StoreId, after: SeqNum, limit: u32) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, parent_seq, name, args, client_id, session_id, created_at, change_pos \
             FROM events WHERE store_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.0)
        .bind(to_i64(after.min(SeqNum::MAX)))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn count(&self, id: StoreId, after: SeqNum, up_to: SeqNum) -> StoreResult<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE store_id = $1 AND seq > $2 AND seq <= $3")
                .bind(id.0)
                .bind(to_i64(after.min(SeqNum::MAX)))
                .bind(to_i64(up_to.min(SeqNum::MAX)))
                .fetch_one(&self.pool)
                .await?;
        Ok(count as u64)
    }

    pub async fn reset(&self, id: StoreId, backend_id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The row lock orders the reset with concurrent appends to the store.
        sqlx::query("SELECT id FROM stores WHERE id = $1 FOR UPDATE").bind(id.0).fetch_one(&mut *tx).await?;
        sqlx::query("DELETE FROM events WHERE store_id = $1").bind(id.0).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM changes WHERE store_id = $1").bind(id.0).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM snapshots WHERE store_id = $1").bind(id.0).execute(&mut *tx).await?;
        sqlx::query("UPDATE stores SET head = 0, event_count = 0, backend_id = $1 WHERE id = $2")
            .bind(backend_id)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn save_snapshot(&self, id: StoreId, snapshot: &Snapshot) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO snapshots (store_id, backend_id, seq, body, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (store_id) DO UPDATE SET backend_id = excluded.backend_id, seq = excluded.seq, \
             body = excluded.body, created_at = excluded.created_at WHERE excluded.seq > snapshots.seq \
             OR excluded.backend_id <> snapshots.backend_id",
        )
        .bind(id.0)
        .bind(&snapshot.backend_id)
        .bind(to_i64(snapshot.seq))
        .bind(&snapshot.body)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub async fn load_snapshot(&self, id: StoreId) -> StoreResult<Option<Snapshot>> {
        let row = sqlx::query("SELECT backend_id, seq, body FROM snapshots WHERE store_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| snapshot_from_row(&row)).transpose()
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// `synchronous_commit` as a pooled connection reports it, for the start-up log.
    pub async fn durability_setting(&self) -> StoreResult<String> {
        let value: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&self.pool).await?;
        Ok(format!("synchronous_commit={value}"))
    }

    pub async fn close(&self) {
        if let Some(committer) = self.committer.lock().await.take() {
            let _ = committer.close().await;
        }
        self.pool.close().await;
    }
}

/// Writes a commit group in one statement, so in one round trip whatever the number of stores
/// or events: takes the group's change-log positions, inserts the events and the change-log
/// rows, and moves the stores' heads (`updates`: store, new head, events added). `batches` are
/// numbered from change-log position 1; returns the position before the first one taken, which
/// [`shift_positions`] adds to them.
///
/// The stores' rows are already locked (the group's `SELECT … FOR UPDATE`); the change-log head
/// is locked here, last, and held to commit (see migrations/postgres, `change_log_head`).
/// How a group failed: before anything reached the server, or after.
enum Failed {
    Connection(sqlx::Error),
    Group(GroupFailed),
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Failed {
        Failed::Group(GroupFailed::RolledBack(error))
    }
}

async fn commit_group_on(conn: &mut PgConnection, group: &[&AppendRequest]) -> Result<GroupOutcome, Failed> {
    let ids = stores_in_lock_order(group);
    // Ids are integers from the database, written into the text; the simple-query protocol takes
    // `BEGIN` and the locking read in one round trip.
    let list = ids.iter().map(|id| id.0.to_string()).collect::<Vec<_>>().join(",");
    let lock = format!("BEGIN; SELECT id, head, backend_id FROM stores WHERE id IN ({list}) ORDER BY id FOR UPDATE");
    let rows = match simple_query(conn, &lock).await {
        Ok(rows) => rows,
        Err(error @ (sqlx::Error::Io(_) | sqlx::Error::Protocol(_))) => return Err(Failed::Connection(error)),
        Err(error) => return Err(error.into()),
    };
    let mut heads = HashMap::new();
    for row in rows {
        let (id, head) = locked_head(&row)?;
        heads.insert(id, head);
    }
    if heads.len() != ids.len() {
        return Err(sqlx::Error::RowNotFound.into());
    }
    let decision = decide(group, &heads);
    let accepted = decision.accepted();
    if accepted == 0 {
        simple_query(conn, "ROLLBACK").await?;
        return Ok(materialize(decision, &heads, 0, ""));
    }
    let store_updates = decision.store_updates.clone();
    // Numbered from 1 here; the statement that takes the change-log positions says where
    // they really start.
    let mut outcome = materialize(decision, &heads, 1, &now_rfc3339());
    let batches: Vec<&CommittedBatch> = outcome.iter().flatten().collect();
    let before = write_batches(&mut *conn, &batches, &store_updates).await?;
    simple_query(conn, "COMMIT").await.map_err(|error| {
        Failed::Group(match error {
            // The server answered: it refused the commit and rolled the transaction back.
            sqlx::Error::Database(_) => GroupFailed::RolledBack(error),
            // No answer (the connection or the server went away): it may have committed.
            other => GroupFailed::OutcomeUnknown(other),
        })
    })?;
    for batch in outcome.iter_mut().flatten() {
        shift_positions(batch, before);
    }
    Ok(outcome)
}

/// Runs `sql` with the simple-query protocol (several statements, no parameters). Through the
/// `Executor` trait, whose boxed future is `Send`: for `raw_sql(…).fetch_all(…)` the compiler
/// cannot prove that for every lifetime, and the committer's task must be `Send`.
fn simple_query<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<sqlx::postgres::PgRow>, sqlx::Error>> + Send + 'c>> {
    sqlx::Executor::fetch_all(conn, sqlx::raw_sql(sql))
}

async fn write_batches(
    tx: &mut PgConnection,
    batches: &[&CommittedBatch],
    updates: &[(StoreId, SeqNum, u64)],
) -> StoreResult<u64> {
    let mut events = EventColumns::default();
    let mut changes = ChangeColumns::default();
    for batch in batches {
        for event in batch.events.iter() {
            events.push(batch.store, event);
        }
        changes.push(batch);
    }
    let before: i64 = sqlx::query_scalar(
        "WITH head AS ( \
             UPDATE change_log_head SET position = position + $1 WHERE id = 1 RETURNING position - $1 AS before \
         ), new_events AS ( \
             INSERT INTO events (store_id, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) \
             SELECT e.store_id, e.seq, e.parent_seq, e.name, e.args, e.client_id, e.session_id, e.created_at, \
                    head.before + e.change_pos \
             FROM head, UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], \
                               $8::text[], $9::text[], $10::bigint[]) \
                  AS e(store_id, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) \
         ), new_changes AS ( \
             INSERT INTO changes (position, store_id, first_seq, last_seq, event_count, created_at) \
             SELECT head.before + c.position, c.store_id, c.first_seq, c.last_seq, c.event_count, c.created_at \
             FROM head, UNNEST($11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::int[], $16::text[]) \
                  AS c(position, store_id, first_seq, last_seq, event_count, created_at) \
         ), moved_heads AS ( \
             UPDATE stores SET head = u.head, event_count = stores.event_count + u.added \
             FROM UNNEST($17::bigint[], $18::bigint[], $19::bigint[]) AS u(id, head, added) WHERE stores.id = u.id \
         ) \
         SELECT before FROM head",
    )
    .bind(batches.len() as i64)
    .bind(events.store_id)
    .bind(events.seq)
    .bind(events.parent_seq)
    .bind(events.name)
    .bind(events.args)
    .bind(events.client_id)
    .bind(events.session_id)
    .bind(events.created_at)
    .bind(events.change_pos)
    .bind(changes.position)
    .bind(changes.store_id)
    .bind(changes.first_seq)
    .bind(changes.last_seq)
    .bind(changes.event_count)
    .bind(changes.created_at)
    .bind(updates.iter().map(|(id, _, _)| id.0).collect::<Vec<i64>>())
    .bind(updates.iter().map(|(_, head, _)| to_i64(*head)).collect::<Vec<i64>>())
    .bind(updates.iter().map(|(_, _, added)| *added as i64).collect::<Vec<i64>>())
    .fetch_one(&mut *tx)
    .await?;
    Ok(before as u64)
}

/// Moves a batch numbered from change-log position 1 to where its group really started. The
/// batch was just built, so its events are not shared yet and are changed in place.
fn shift_positions(batch: &mut CommittedBatch, before: u64) {
    let events = Arc::get_mut(&mut batch.events).expect("a batch just built is not shared");
    for event in events {
        event.change_pos = ChangePos(event.change_pos.0 + before);
    }
}

/// Change-log rows as column arrays.
#[derive(Default)]
struct ChangeColumns {
    position: Vec<i64>,
    store_id: Vec<i64>,
    first_seq: Vec<i64>,
    last_seq: Vec<i64>,
    event_count: Vec<i32>,
    created_at: Vec<String>,
}

impl ChangeColumns {
    fn push(&mut self, batch: &CommittedBatch) {
        self.position.push(batch.change_pos().0 as i64);
        self.store_id.push(batch.store.0);
        self.first_seq.push(to_i64(batch.events[0].seq));
        self.last_seq.push(to_i64(batch.last_seq()));
        self.event_count.push(batch.events.len() as i32);
        let last = batch.events.last().expect("a committed batch has events");
        self.created_at.push(last.created_at.clone());
    }
}

/// Events as column arrays, the shape `unnest` takes.
#[derive(Default)]
struct EventColumns {
    store_id: Vec<i64>,
    seq: Vec<i64>,
    parent_seq: Vec<i64>,
    name: Vec<String>,
    args: Vec<String>,
    client_id: Vec<String>,
    session_id: Vec<String>,
    created_at: Vec<String>,
    change_pos: Vec<i64>,
}

impl EventColumns {
    fn push(&mut self, store: StoreId, event: &Event) {
        self.store_id.push(store.0);
        self.seq.push(to_i64(event.seq));
        self.parent_seq.push(to_i64(event.parent_seq));
        self.name.push(event.body.name.clone());
        self.args.push(event.body.args.get().to_owned());
        self.client_id.push(event.body.client_id.clone());
        self.session_id.push(event.body.session_id.clone());
        self.created_at.push(event.created_at.clone());
        self.change_pos.push(event.change_pos.0 as i64);
    }
}
