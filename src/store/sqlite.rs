//! Embedded SQLite backend: one file, WAL mode, `synchronous = FULL` (an acknowledged append
//! survives power loss, not only a crash).
//!
//! Every write goes through one dedicated connection behind a mutex. SQLite allows one writer at
//! a time anyway; owning it avoids `SQLITE_BUSY` upgrade failures between our own connections
//! and makes group commit the only way to write faster. Reads use a pool of read-only
//! connections, which WAL lets run beside the writer.
//!
//! A write that fails for any reason closes the writer connection, and the next write opens a
//! new one. After `SQLITE_FULL` or an I/O error SQLite may have rolled back the whole transaction
//! on its own, or only the failed statement; sqlx's transaction bookkeeping cannot tell, so it
//! lost count of its nesting and turned later `BEGIN`s into `SAVEPOINT`s inside a transaction that
//! never committed: every later write was "committed", seen by this connection and acknowledged,
//! and lost with the connection (a full disk acknowledged hundreds of writes that were never
//! stored). Closing the connection rolls back whatever it held, so nothing the database did not
//! confirm survives a failure.
//!
//! Write transactions begin `IMMEDIATE`: they take the write lock first, and so wait (up to the
//! busy timeout) for another process writing the same file, such as `junction import`. A
//! deferred transaction that read first would fail at once with `SQLITE_BUSY` when it tried to
//! write.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Arguments as _;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    AppendRequest, GroupFailed, GroupOutcome, Restored, Snapshot, StoreResult, change_from_row, change_mark_from_row,
    decide, event_from_row, locked_head, materialize, restored_batch, snapshot_from_row, store_info,
    stores_in_lock_order, to_i64,
};
use crate::config::{Durability, StoreConfig};
use crate::eventlog::{
    Change, ChangeMark, ChangePos, CommittedBatch, Event, SeqNum, StoreId, StoreInfo, StoreKey, new_backend_id,
    now_rfc3339,
};

/// Rows per multi-row statement: 9 columns × 500 stays far below SQLite's 32,766 parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// `(?, ?, …), (?, ?, …), …` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

pub struct SqliteStore {
    /// The writer connection; `None` after a failed write, until the next write opens one.
    writer: Mutex<Option<SqliteConnection>>,
    writer_options: Box<SqliteConnectOptions>,
    readers: SqlitePool,
}

/// The writer connection, held for one write. A write that fails calls [`Writer::discard`].
struct Writer<'a> {
    slot: MutexGuard<'a, Option<SqliteConnection>>,
    /// Set while a transaction begun in SQL text may be open on the connection: if the write is
    /// dropped halfway (its task cancelled), the connection is dropped too, which rolls back,
    /// instead of going back to the slot inside that transaction.
    in_transaction: bool,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if self.in_transaction {
            self.slot.take();
        }
    }
}

impl Writer<'_> {
    fn conn(&mut self) -> &mut SqliteConnection {
        self.slot.as_mut().expect("opened by SqliteStore::writer")
    }

    /// Closes the connection after a failed write: SQLite rolls back whatever transaction the
    /// failure left open, and the next write starts on a fresh connection.
    async fn discard(&mut self) {
        if let Some(conn) = self.slot.take() {
            if let Err(error) = conn.close().await {
                tracing::warn!(%error, "closing the SQLite writer after a failed write");
            }
        }
    }

    /// Passes `result` through, discarding the connection if it is an error.
    async fn checked<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_err() {
            self.discard().await;
        }
        result
    }
}

impl SqliteStore {
    pub async fn connect(config: &StoreConfig) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(&config.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.durability {
                Durability::Fsync => SqliteSynchronous::Full,
                // In WAL mode a commit then reaches the WAL file (the OS's cache) without an
                // fsync; checkpoints still sync. A crash of the process loses nothing.
                Durability::Process => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let writer = SqliteConnection::connect_with(&options).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_millis(config.timeout_ms))
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(SqliteStore { writer: Mutex::new(Some(writer)), writer_options: Box::new(options), readers })
    }

    /// The database file's absolute path (a relative one is relative to the working directory).
    pub fn location(&self) -> String {
        let file = self.writer_options.get_filename();
        std::path::absolute(file).unwrap_or_else(|_| file.to_owned()).display().to_string()
    }

    /// The writer connection, opened anew if the last write failed.
    async fn writer(&self) -> StoreResult<Writer<'_>> {
        let mut slot = self.writer.lock().await;
        if slot.is_none() {
            *slot = Some(SqliteConnection::connect_with(&self.writer_options).await?);
        }
        Ok(Writer { slot, in_transaction: false })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut writer = self.writer().await?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(writer.conn()).await;
        let moved = match migrated {
            Ok(()) => move_per_store_tables(writer.conn()).await.map_err(sqlx::migrate::MigrateError::Execute),
            Err(error) => Err(error),
        };
        if moved.is_err() {
            writer.discard().await;
        }
        moved
    }

    pub async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_optional(&self.readers)
                .await?;
        let applied: Vec<i64> = match table {
            Some(_) => {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&self.readers)
                    .await?
            }
            None => Vec::new(),
        };
        Ok(super::not_applied(&sqlx::migrate!("./migrations/sqlite"), &applied))
    }

    pub async fn find_store(&self, key: &StoreKey) -> StoreResult<Option<StoreId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM stores WHERE protocol = ? AND name = ?")
            .bind(key.protocol.as_str())
            .bind(&key.name)
            .fetch_optional(&self.readers)
            .await?;
        Ok(id.map(StoreId))
    }

    pub async fn ensure_store(&self, key: &StoreKey) -> StoreResult<StoreId> {
        if let Some(id) = self.find_store(key).await? {
            return Ok(id);
        }
        let mut writer = self.writer().await?;
        let registered = register_store(writer.conn(), key).await;
        writer.checked(registered).await
    }

    pub async fn info(&self, id: StoreId) -> StoreResult<StoreInfo> {
        let row = sqlx::query("SELECT protocol, name, head, backend_id, event_count FROM stores WHERE id = ?")
            .bind(id.0)
            .fetch_one(&self.readers)
            .await?;
        store_info(id, &row)
    }

    pub async fn list_stores(&self, after: StoreId, limit: u32) -> StoreResult<Vec<StoreInfo>> {
        let rows = sqlx::query(
            "SELECT id, protocol, name, head, backend_id, event_count FROM stores WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after.0)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(|row| store_info(StoreId(row.try_get("id")?), row)).collect()
    }

    pub async fn read_changes(&self, after: ChangePos, limit: u32) -> StoreResult<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT c.position, s.protocol, s.name, c.first_seq, c.last_seq, CAST(c.event_count AS BIGINT) AS event_count, \
             c.created_at FROM changes c JOIN stores s ON s.id = c.store_id WHERE c.position > ? \
             ORDER BY c.position LIMIT ?",
        )
        .bind(after.0 as i64)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    pub async fn change_log_head(&self) -> StoreResult<ChangePos> {
        let position: i64 =
            sqlx::query_scalar("SELECT position FROM change_log_head WHERE id = 1").fetch_one(&self.readers).await?;
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
             WHERE c.position > ? AND c.position <= ? ORDER BY c.position LIMIT ?",
        )
        .bind(after.0 as i64)
        .bind(up_to.0 as i64)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(change_mark_from_row).collect()
    }

    /// A failure here always rolled back: the writer connection is closed on any error, and a
    /// `COMMIT` that SQLite did not confirm is undone by that.
    pub async fn commit_group(&self, group: &[&AppendRequest]) -> Result<GroupOutcome, GroupFailed> {
        let mut writer = self.writer().await?;
        writer.in_transaction = true;
        let result = commit_group_on(writer.conn(), group).await;
        // Committed or rolled back: either way no transaction is left open (a failure is
        // handled by `checked`, which closes the connection).
        writer.in_transaction = false;
        Ok(writer.checked(result).await?)
    }

    pub async fn restore(&self, id: StoreId, backend_id: &str, events: &[Event]) -> StoreResult<Restored> {
        let mut writer = self.writer().await?;
        let result = restore_on(writer.conn(), id, backend_id, events).await;
        writer.checked(result).await
    }

    pub async fn read(&self, id: StoreId, after: SeqNum, limit: u32) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, parent_seq, name, args, client_id, session_id, created_at, change_pos \
             FROM events WHERE store_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id.0)
        .bind(to_i64(after.min(SeqNum::MAX)))
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn count(&self, id: StoreId, after: SeqNum, up_to: SeqNum) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE store_id = ? AND seq > ? AND seq <= ?")
            .bind(id.0)
            .bind(to_i64(after.min(SeqNum::MAX)))
            .bind(to_i64(up_to.min(SeqNum::MAX)))
            .fetch_one(&self.readers)
            .await?;
        Ok(count as u64)
    }

    pub async fn reset(&self, id: StoreId, backend_id: &str) -> StoreResult<()> {
        let mut writer = self.writer().await?;
        let result = reset_on(writer.conn(), id, backend_id).await;
        writer.checked(result).await
    }

    pub async fn save_snapshot(&self, id: StoreId, snapshot: &Snapshot) -> StoreResult<()> {
        let mut writer = self.writer().await?;
        let result = save_snapshot_on(writer.conn(), id, snapshot).await;
        writer.checked(result).await
    }

    pub async fn load_snapshot(&self, id: StoreId) -> StoreResult<Option<Snapshot>> {
        let row = sqlx::query("SELECT backend_id, seq, body FROM snapshots WHERE store_id = ?")
            .bind(id.0)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| snapshot_from_row(&row)).transpose()
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await.map(|_| ())
    }

    /// The writer's `synchronous` setting as SQLite reports it, for the start-up log.
    pub async fn durability_setting(&self) -> StoreResult<String> {
        let mut writer = self.writer().await?;
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(writer.conn()).await?;
        let name = match level {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            3 => "EXTRA",
            _ => "unknown",
        };
        Ok(format!("synchronous={name}"))
    }

    pub async fn close(&self) {
        self.readers.close().await;
    }
}

/// Registers a store (or finds the row a concurrent registration made).
async fn register_store(conn: &mut SqliteConnection, key: &StoreKey) -> StoreResult<StoreId> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO stores (protocol, name, backend_id, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (protocol, name) DO NOTHING RETURNING id",
    )
    .bind(key.protocol.as_str())
    .bind(&key.name)
    .bind(new_backend_id())
    .bind(now_rfc3339())
    .fetch_optional(&mut *conn)
    .await?;
    let id = match inserted {
        Some(id) => id,
        None => {
            sqlx::query_scalar("SELECT id FROM stores WHERE protocol = ? AND name = ?")
                .bind(key.protocol.as_str())
                .bind(&key.name)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    Ok(StoreId(id))
}

/// One group commit in two round trips to SQLite's worker thread: `BEGIN IMMEDIATE` with the
/// reads, then every write with the `COMMIT`. sqlx runs each SQLite connection on a thread of
/// its own, and a round trip there costs two thread wake-ups; a group used to take seven
/// (begin, heads, change-log head, events, changes, store heads, commit), and those wake-ups,
/// not SQLite, were most of a small write's time. The transaction is SQL text rather than
/// sqlx's `Transaction`, so [`SqliteStore::commit_group`] closes the connection if this fails or
/// is cancelled halfway: closing rolls back whatever was begun.
async fn commit_group_on(conn: &mut SqliteConnection, group: &[&AppendRequest]) -> StoreResult<GroupOutcome> {
    let ids = stores_in_lock_order(group);
    // The change-log head rides along as a row with id -1.
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        sql.push_str(&format!(
            "SELECT id, head, backend_id FROM stores WHERE id IN ({});\n",
            vec!["?"; chunk.len()].join(",")
        ));
    }
    sql.push_str("SELECT -1 AS id, position AS head, '' AS backend_id FROM change_log_head WHERE id = 1");
    let mut read = sqlx::query(&sql);
    for id in &ids {
        read = read.bind(id.0);
    }
    let mut heads = HashMap::new();
    let mut change_log_head = None;
    for row in read.fetch_all(&mut *conn).await? {
        let id: i64 = row.try_get("id")?;
        if id == -1 {
            change_log_head = Some(row.try_get::<i64, _>("head")? as u64);
        } else {
            let (id, head) = locked_head(&row)?;
            heads.insert(id, head);
        }
    }
    let change_log_head = change_log_head.ok_or(sqlx::Error::RowNotFound)?;
    if heads.len() != ids.len() {
        return Err(sqlx::Error::RowNotFound);
    }
    let decision = decide(group, &heads);
    let accepted = decision.accepted();
    if accepted == 0 {
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        return Ok(materialize(decision, &heads, 0, ""));
    }
    let store_updates = decision.store_updates.clone();
    let created_at = now_rfc3339();
    let outcome = materialize(decision, &heads, change_log_head + 1, &created_at);
    let batches: Vec<&CommittedBatch> = outcome.iter().flatten().collect();
    let mut write = WriteStatements::default();
    let args = write.push("UPDATE change_log_head SET position = ? WHERE id = 1");
    bind(args, (change_log_head + accepted) as i64);
    write_batches(&mut write, &batches, &created_at);
    for updates in store_updates.chunks(ROWS_PER_STATEMENT) {
        let args = write.push(&format!(
            // SQLite names the columns of a VALUES list column1, column2, …: (id, head, added).
            "UPDATE stores SET head = updated.column2, event_count = stores.event_count + updated.column3 \
             FROM (VALUES {}) AS updated WHERE stores.id = updated.column1",
            placeholders(updates.len(), 3)
        ));
        for (id, head, added) in updates {
            bind(args, id.0);
            bind(args, to_i64(*head));
            bind(args, *added as i64);
        }
    }
    write.sql.push_str("COMMIT");
    write.execute(conn).await?;
    Ok(outcome)
}

/// Statements sent to SQLite as one multi-statement query: sqlx binds each statement's `?`s in
/// turn from the one argument list.
#[derive(Default)]
struct WriteStatements<'q> {
    sql: String,
    args: SqliteArguments<'q>,
}

impl<'q> WriteStatements<'q> {
    /// Appends `statement`; returns the argument list for its values, in order.
    fn push(&mut self, statement: &str) -> &mut SqliteArguments<'q> {
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
        &mut self.args
    }

    async fn execute(self, conn: &mut SqliteConnection) -> StoreResult<()> {
        sqlx::query_with(&self.sql, self.args).execute(conn).await.map(|_| ())
    }
}

/// Adds a value to an argument list; encoding an integer or a string into one cannot fail.
fn bind<'q, T: sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'q>(
    args: &mut SqliteArguments<'q>,
    value: T,
) {
    args.add(value).expect("SQLite arguments take integers and text");
}

async fn restore_on(
    conn: &mut SqliteConnection,
    id: StoreId,
    backend_id: &str,
    events: &[Event],
) -> StoreResult<Restored> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query("SELECT head, event_count FROM stores WHERE id = ?").bind(id.0).fetch_one(&mut *tx).await?;
    let (head, count): (i64, i64) = (row.try_get("head")?, row.try_get("event_count")?);
    if head != 0 || count != 0 {
        return Ok(Restored::NotEmpty);
    }
    if let Some(last) = events.last() {
        let position: i64 =
            sqlx::query_scalar("UPDATE change_log_head SET position = position + 1 WHERE id = 1 RETURNING position")
                .fetch_one(&mut *tx)
                .await?;
        let batch = restored_batch(id, backend_id, events, ChangePos(position as u64));
        let batches = [&batch];
        let mut write = WriteStatements::default();
        write_batches(&mut write, &batches, &last.created_at);
        write.execute(&mut tx).await?;
    }
    // An empty store carries its backend id over too (its head and count stay 0).
    sqlx::query("UPDATE stores SET head = ?, event_count = ?, backend_id = ? WHERE id = ?")
        .bind(to_i64(events.last().map_or(SeqNum::ROOT, |last| last.seq)))
        .bind(events.len() as i64)
        .bind(backend_id)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Restored::Done)
}

async fn reset_on(conn: &mut SqliteConnection, id: StoreId, backend_id: &str) -> StoreResult<()> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("DELETE FROM events WHERE store_id = ?").bind(id.0).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM changes WHERE store_id = ?").bind(id.0).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM snapshots WHERE store_id = ?").bind(id.0).execute(&mut *tx).await?;
    sqlx::query("UPDATE stores SET head = 0, event_count = 0, backend_id = ? WHERE id = ?")
        .bind(backend_id)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

async fn save_snapshot_on(conn: &mut SqliteConnection, id: StoreId, snapshot: &Snapshot) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO snapshots (store_id, backend_id, seq, body, created_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (store_id) DO UPDATE SET backend_id = excluded.backend_id, seq = excluded.seq, \
         body = excluded.body, created_at = excluded.created_at WHERE excluded.seq > snapshots.seq \
         OR excluded.backend_id <> snapshots.backend_id",
    )
    .bind(id.0)
    .bind(&snapshot.backend_id)
    .bind(to_i64(snapshot.seq))
    .bind(&snapshot.body)
    .bind(now_rfc3339())
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The statements that write committed batches and their change-log rows: multi-row
/// statements, so the cost of a group is a few statements whatever the number of stores or
/// events.
fn write_batches<'q>(write: &mut WriteStatements<'q>, batches: &[&'q CommittedBatch], created_at: &'q str) {
    let rows: Vec<(StoreId, &'q Event)> =
        batches.iter().flat_map(|batch| batch.events.iter().map(|event| (batch.store, event))).collect();
    for rows in rows.chunks(ROWS_PER_STATEMENT) {
        let args = write.push(&format!(
            "INSERT INTO events (store_id, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) \
             VALUES {}",
            placeholders(rows.len(), 9)
        ));
        for (store, event) in rows {
            bind(args, store.0);
            bind(args, to_i64(event.seq));
            bind(args, to_i64(event.parent_seq));
            bind(args, event.body.name.as_str());
            bind(args, event.body.args.get());
            bind(args, event.body.client_id.as_str());
            bind(args, event.body.session_id.as_str());
            bind(args, event.created_at.as_str());
            bind(args, event.change_pos.0 as i64);
        }
    }
    for rows in batches.chunks(ROWS_PER_STATEMENT) {
        let args = write.push(&format!(
            "INSERT INTO changes (position, store_id, first_seq, last_seq, event_count, created_at) VALUES {}",
            placeholders(rows.len(), 6)
        ));
        for batch in rows {
            bind(args, batch.change_pos().0 as i64);
            bind(args, batch.store.0);
            bind(args, to_i64(batch.events[0].seq));
            bind(args, to_i64(batch.last_seq()));
            bind(args, batch.events.len() as i64);
            bind(args, created_at);
        }
    }
}

/// Moves the events of every `eventlog_<id>` table (the layout before the `events` table) into
/// `events`, and drops the table, all in one transaction. Finds nothing to do on a database
/// created with the `events` table.
async fn move_per_store_tables(writer: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'eventlog_[0-9]*'")
            .fetch_all(&mut *writer)
            .await?;
    if tables.is_empty() {
        return Ok(());
    }
    let mut tx = writer.begin().await?;
    for table in tables {
        // The GLOB above and this parse admit only eventlog_<digits>: safe to splice into SQL.
        let Ok(id) = table["eventlog_".len()..].parse::<i64>() else { continue };
        sqlx::query(&format!(
            "INSERT INTO events (store_id, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos) \
             SELECT {id}, seq, parent_seq, name, args, client_id, session_id, created_at, change_pos FROM {table}"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("DROP TABLE {table}")).execute(&mut *tx).await?;
    }
    tx.commit().await
}
