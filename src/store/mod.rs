//! Storage backends of the event log: embedded SQLite (the default) and Postgres.
//!
//! Both keep the same layout (see `migrations/`): a `stores` registry, one `events` table keyed
//! by `(store_id, seq)` for the events of every store, the `changes` table (the sequenced change
//! log) and the single-row `change_log_head` that hands out change-log positions.
//!
//! One events table rather than a table per store (the first layout): a group commit then writes
//! the events of any number of stores with one prepared statement, where per-store tables cost
//! Postgres one dynamically built `INSERT` per store, parsed and planned anew every time. The
//! key keeps a store's events one contiguous range of the primary-key index (clustered in
//! SQLite, `WITHOUT ROWID`), so reading a store is as cheap as with its own table.
//!
//! Both backends decide a group commit with the same pure functions ([`decide`] and
//! [`materialize`]) and differ only in how they lock, read and write.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::StoreConfig;
use sqlx::Row;

use crate::eventlog::{
    AppendBatch, Change, ChangeMark, ChangePos, CommittedBatch, Event, EventBody, Protocol, SeqNum, StoreId, StoreInfo,
    StoreKey,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Where and why, in one line (no source chain that would print the reason twice).
    #[error("cannot reach Postgres at {place}: {reason}")]
    Unreachable { place: String, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One append waiting in a commit group.
#[derive(Debug)]
pub struct AppendRequest {
    pub store: StoreId,
    pub batch: AppendBatch,
}

/// Per request of a group: the committed batch, or the head that made it fail its check.
pub type GroupOutcome = Vec<Result<CommittedBatch, SeqNum>>;

/// Why a commit group failed, as far as the backend can tell.
#[derive(Debug, thiserror::Error)]
pub enum GroupFailed {
    /// The transaction was rolled back: nothing of the group is stored.
    #[error(transparent)]
    RolledBack(#[from] sqlx::Error),
    /// The connection broke while `COMMIT` was on its way: the group may or may not be stored.
    /// Committing its requests again could store them twice.
    #[error("the outcome of COMMIT is unknown: {0}")]
    OutcomeUnknown(sqlx::Error),
}

pub enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Backend {
    pub async fn connect(config: &StoreConfig) -> Result<Backend, ConnectError> {
        if config.url.starts_with("sqlite:") {
            Ok(Backend::Sqlite(SqliteStore::connect(config).await?))
        } else {
            Ok(Backend::Postgres(PostgresStore::connect(config).await?))
        }
    }

    /// Where the data lives, for the log: the SQLite file's absolute path, or Postgres's
    /// host, port and database (never the password).
    pub fn location(&self) -> String {
        match self {
            Backend::Sqlite(store) => store.location(),
            Backend::Postgres(store) => store.location(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        dispatch!(self, store => store.migrate().await)
    }

    /// The embedded migrations the database has not applied (`version description` each).
    pub async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        dispatch!(self, store => store.pending_migrations().await)
    }

    /// The id of the store, registering it (and creating its table) on first use.
    pub async fn ensure_store(&self, key: &StoreKey) -> StoreResult<StoreId> {
        dispatch!(self, store => store.ensure_store(key).await)
    }

    pub async fn find_store(&self, key: &StoreKey) -> StoreResult<Option<StoreId>> {
        dispatch!(self, store => store.find_store(key).await)
    }

    pub async fn info(&self, id: StoreId) -> StoreResult<StoreInfo> {
        dispatch!(self, store => store.info(id).await)
    }

    /// Up to `limit` stores with an id above `after`, in id order.
    pub async fn list_stores(&self, after: StoreId, limit: u32) -> StoreResult<Vec<StoreInfo>> {
        dispatch!(self, store => store.list_stores(after, limit).await)
    }

    /// Up to `limit` entries of the sequenced change log after `after`, in order.
    pub async fn read_changes(&self, after: ChangePos, limit: u32) -> StoreResult<Vec<Change>> {
        dispatch!(self, store => store.read_changes(after, limit).await)
    }

    /// The last change-log position handed out.
    pub async fn change_log_head(&self) -> StoreResult<ChangePos> {
        dispatch!(self, store => store.change_log_head().await)
    }

    /// Up to `limit` change-log entries with `after` < position ≤ `up_to`, in order.
    pub async fn read_change_marks(
        &self,
        after: ChangePos,
        up_to: ChangePos,
        limit: u32,
    ) -> StoreResult<Vec<ChangeMark>> {
        dispatch!(self, store => store.read_change_marks(after, up_to, limit).await)
    }

    /// Commits a group of appends in one transaction. Requests for the same store are applied in
    /// the order given; a request whose check fails writes nothing and does not affect the others.
    pub async fn commit_group(&self, group: &[&AppendRequest]) -> Result<GroupOutcome, GroupFailed> {
        dispatch!(self, store => store.commit_group(group).await)
    }

    /// Up to `limit` events with seq > `after`, in seq order.
    pub async fn read(&self, id: StoreId, after: SeqNum, limit: u32) -> StoreResult<Vec<Event>> {
        dispatch!(self, store => store.read(id, after, limit).await)
    }

    /// Number of events with `after` < seq ≤ `up_to`.
    pub async fn count(&self, id: StoreId, after: SeqNum, up_to: SeqNum) -> StoreResult<u64> {
        dispatch!(self, store => store.count(id, after, up_to).await)
    }

    /// Writes a whole store's history as it was exported: the given events (seqs, parents and
    /// times kept), the given backend id, one change-log entry. Only into an empty store.
    pub async fn restore(&self, id: StoreId, backend_id: &str, events: &[Event]) -> StoreResult<Restored> {
        dispatch!(self, store => store.restore(id, backend_id, events).await)
    }

    /// Removes every event of the store, sets its head to ROOT and gives it `backend_id`.
    pub async fn reset(&self, id: StoreId, backend_id: &str) -> StoreResult<()> {
        dispatch!(self, store => store.reset(id, backend_id).await)
    }

    /// Keeps `snapshot` unless the stored one is newer for the same backend id.
    pub async fn save_snapshot(&self, id: StoreId, snapshot: &Snapshot) -> StoreResult<()> {
        dispatch!(self, store => store.save_snapshot(id, snapshot).await)
    }

    pub async fn load_snapshot(&self, id: StoreId) -> StoreResult<Option<Snapshot>> {
        dispatch!(self, store => store.load_snapshot(id).await)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, store => store.ping().await)
    }

    /// The database's own word for how durable a commit is (`synchronous=FULL`,
    /// `synchronous_commit=off`…): what `store.durability` turned into.
    pub async fn durability_setting(&self) -> StoreResult<String> {
        dispatch!(self, store => store.durability_setting().await)
    }

    pub async fn close(&self) {
        dispatch!(self, store => store.close().await)
    }
}

/// Whether `error` says the database cannot be reached or cannot write now (out of space,
/// shutting down, too many connections, busy) rather than that this request is wrong: the client
/// should retry later (HTTP 503), and a failed group is not worth retrying request by request.
/// The one classifier for both the event log's replies and the committer.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            match code.parse::<u32>() {
                // SQLite's (extended) result codes: SQLITE_BUSY, SQLITE_READONLY, SQLITE_IOERR,
                // SQLITE_FULL.
                Ok(sqlite) => [5, 8, 10, 13].contains(&(sqlite & 0xff)),
                // Postgres SQLSTATE classes: 53 insufficient resources (disk full, out of
                // memory), 57 operator intervention (shutting down), 08 connection exception.
                Err(_) => ["53", "57", "08"].iter().any(|class| code.starts_with(class)),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // A missing row, a value that does not decode, a bad argument: this request, not the
        // database.
        _ => false,
    }
}

/// The migrations of `migrator` whose version is not in `applied`.
fn not_applied(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<String> {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect()
}

/// A protocol's folded state of one store up to `seq` (see migrations: `snapshots`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's backend id when the snapshot was made; another id means it is stale.
    pub backend_id: String,
    pub seq: SeqNum,
    pub body: String,
}

/// Reads one snapshot row.
pub(crate) fn snapshot_from_row<R: StoreRow>(row: &R) -> StoreResult<Snapshot> {
    Ok(Snapshot { backend_id: row.text("backend_id")?, seq: SeqNum(row.int("seq")? as u64), body: row.text("body")? })
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    Done,
    /// The store already has events; nothing was written.
    NotEmpty,
}

/// The events of a restore as one committed batch at change-log `position`.
pub(crate) fn restored_batch(
    store: StoreId,
    backend_id: &str,
    events: &[Event],
    position: ChangePos,
) -> CommittedBatch {
    let events: Arc<[Event]> = events.iter().map(|e| Event { change_pos: position, ..e.clone() }).collect();
    CommittedBatch { store, backend_id: backend_id.into(), prev_head: SeqNum::ROOT, events }
}

/// A store's head as read under lock at the start of a commit.
#[derive(Debug, Clone)]
pub(crate) struct LockedHead {
    pub head: SeqNum,
    pub backend_id: Arc<str>,
}

/// Where each request of a group goes, decided against the locked heads.
pub(crate) struct Decision<'a> {
    placements: Vec<Result<Placement<'a>, SeqNum>>,
    /// Final head and number of events added, per store that accepted anything.
    pub store_updates: Vec<(StoreId, SeqNum, u64)>,
}

struct Placement<'a> {
    store: StoreId,
    prev_head: SeqNum,
    events: Vec<(SeqNum, SeqNum, &'a EventBody)>,
}

impl Decision<'_> {
    /// Accepted batches, i.e. change-log positions the group needs.
    pub fn accepted(&self) -> u64 {
        self.placements.iter().filter(|p| p.is_ok()).count() as u64
    }
}

/// Decides every request of a group in order, each seeing the heads left by the ones before it.
pub(crate) fn decide<'a>(group: &[&'a AppendRequest], heads: &HashMap<StoreId, LockedHead>) -> Decision<'a> {
    let mut current: HashMap<StoreId, SeqNum> = heads.iter().map(|(id, h)| (*id, h.head)).collect();
    let mut added: HashMap<StoreId, u64> = HashMap::new();
    let placements = group
        .iter()
        .map(|request| {
            let head = current.get(&request.store).copied().unwrap_or(SeqNum::ROOT);
            let events = request.batch.place(head)?;
            let last = events.last().map_or(head, |e| e.0);
            current.insert(request.store, last);
            *added.entry(request.store).or_default() += events.len() as u64;
            Ok(Placement { store: request.store, prev_head: head, events })
        })
        .collect();
    let mut store_updates: Vec<_> = added.into_iter().map(|(id, n)| (id, current[&id], n)).collect();
    store_updates.sort_by_key(|u| u.0);
    Decision { placements, store_updates }
}

/// Turns a decision into committed batches, numbering accepted batches from `first_position`.
pub(crate) fn materialize(
    decision: Decision<'_>,
    heads: &HashMap<StoreId, LockedHead>,
    first_position: u64,
    created_at: &str,
) -> GroupOutcome {
    let mut position = first_position;
    decision
        .placements
        .into_iter()
        .map(|placement| {
            let placement = placement?;
            let change_pos = ChangePos(position);
            position += 1;
            let events: Arc<[Event]> = placement
                .events
                .into_iter()
                .map(|(seq, parent_seq, body)| Event {
                    seq,
                    parent_seq,
                    body: body.clone(),
                    created_at: created_at.to_owned(),
                    change_pos,
                })
                .collect();
            Ok(CommittedBatch {
                store: placement.store,
                backend_id: heads[&placement.store].backend_id.clone(),
                prev_head: placement.prev_head,
                events,
            })
        })
        .collect()
}

/// Distinct store ids of a group, sorted: every transaction locks stores in this order, so two
/// instances committing overlapping groups cannot deadlock.
pub(crate) fn stores_in_lock_order(group: &[&AppendRequest]) -> Vec<StoreId> {
    let mut ids: Vec<StoreId> = group.iter().map(|r| r.store).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Maps a stored args text back to raw JSON. It was valid JSON when written, so a failure here
/// means the database was edited by hand.
pub(crate) fn decode_args(text: String) -> StoreResult<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn to_i64(seq: SeqNum) -> i64 {
    // Seqs beyond i64::MAX are refused by AppendBatch::validate before they get here.
    seq.0 as i64
}

/// A result row of either backend. Both keep the same column types (BIGINT / INTEGER and
/// TEXT), so the readers below serve both; the bounds live here once instead of on each reader.
pub(crate) trait StoreRow {
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn text(&self, column: &str) -> StoreResult<String>;

    fn protocol(&self) -> StoreResult<Protocol> {
        let text = self.text("protocol")?;
        Protocol::parse(&text).ok_or_else(|| sqlx::Error::Decode(format!("unknown protocol {text:?} in stores").into()))
    }
}

impl StoreRow for sqlx::postgres::PgRow {
    fn int(&self, column: &str) -> StoreResult<i64> {
        self.try_get(column)
    }
    fn text(&self, column: &str) -> StoreResult<String> {
        self.try_get(column)
    }
}

impl StoreRow for sqlx::sqlite::SqliteRow {
    fn int(&self, column: &str) -> StoreResult<i64> {
        self.try_get(column)
    }
    fn text(&self, column: &str) -> StoreResult<String> {
        self.try_get(column)
    }
}

/// Reads one event row.
pub(crate) fn event_from_row<R: StoreRow>(row: &R) -> StoreResult<Event> {
    let seq = row.int("seq")?;
    let parent_seq = row.int("parent_seq")?;
    let change_pos = row.int("change_pos")?;
    Ok(Event {
        seq: SeqNum(seq as u64),
        parent_seq: SeqNum(parent_seq as u64),
        body: EventBody {
            name: row.text("name")?,
            args: decode_args(row.text("args")?)?,
            client_id: row.text("client_id")?,
            session_id: row.text("session_id")?,
        },
        created_at: row.text("created_at")?,
        change_pos: ChangePos(change_pos as u64),
    })
}

/// Reads a `stores` row (id, head, backend_id) taken under lock at the start of a commit.
pub(crate) fn locked_head<R: StoreRow>(row: &R) -> StoreResult<(StoreId, LockedHead)> {
    let id = row.int("id")?;
    let head = row.int("head")?;
    let backend_id = row.text("backend_id")?;
    Ok((StoreId(id), LockedHead { head: SeqNum(head as u64), backend_id: backend_id.into() }))
}

/// Reads a change-log row joined with its store.
pub(crate) fn change_from_row<R: StoreRow>(row: &R) -> StoreResult<Change> {
    let protocol = row.protocol()?;
    let position = row.int("position")?;
    let first_seq = row.int("first_seq")?;
    let last_seq = row.int("last_seq")?;
    let event_count = row.int("event_count")?;
    Ok(Change {
        position: ChangePos(position as u64),
        store: StoreKey { protocol, name: row.text("name")? },
        first_seq: SeqNum(first_seq as u64),
        last_seq: SeqNum(last_seq as u64),
        event_count: event_count as u64,
        created_at: row.text("created_at")?,
    })
}

/// Reads a change-log row joined with its store's backend id.
pub(crate) fn change_mark_from_row<R: StoreRow>(row: &R) -> StoreResult<ChangeMark> {
    let position = row.int("position")?;
    let store = row.int("store_id")?;
    let last_seq = row.int("last_seq")?;
    Ok(ChangeMark {
        position: ChangePos(position as u64),
        store: StoreId(store),
        backend_id: row.text("backend_id")?.into(),
        last_seq: SeqNum(last_seq as u64),
    })
}

/// Reads a `stores` row (protocol, name, head, backend_id, event_count).
pub(crate) fn store_info<R: StoreRow>(id: StoreId, row: &R) -> StoreResult<StoreInfo> {
    let protocol = row.protocol()?;
    let head = row.int("head")?;
    let event_count = row.int("event_count")?;
    Ok(StoreInfo {
        id,
        key: StoreKey { protocol, name: row.text("name")? },
        head: SeqNum(head as u64),
        backend_id: row.text("backend_id")?,
        event_count: event_count as u64,
    })
}

#[cfg(test)]
mod tests {
    /// A real `SQLITE_FULL` (a database capped at a few pages) is an outage to retry; a
    /// constraint violation and a missing row are the request's own.
    #[tokio::test]
    async fn a_full_database_is_unavailable_and_a_bad_request_is_not() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, filler BLOB); PRAGMA max_page_count = 8;")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut full = None;
        for id in 0..100 {
            let insert = sqlx::query("INSERT INTO t VALUES (?, zeroblob(4096))").bind(id).execute(&mut conn).await;
            if let Err(error) = insert {
                full = Some(error);
                break;
            }
        }
        let full = full.expect("the capped database filled up");
        assert!(super::is_unavailable(&full), "{full:?}");
        let duplicate = sqlx::query("INSERT INTO t VALUES (0, NULL)").execute(&mut conn).await.unwrap_err();
        assert!(!super::is_unavailable(&duplicate), "{duplicate:?}");
        let missing =
            sqlx::query_scalar::<_, i64>("SELECT id FROM t WHERE id = -1").fetch_one(&mut conn).await.unwrap_err();
        assert!(!super::is_unavailable(&missing), "{missing:?}");
        // What the event API answers with: a full disk under a single write (a store reset)
        // is a 503 to retry, not a 500.
        assert!(crate::eventlog::EventLogError::Storage(full).is_unavailable());
        assert!(!crate::eventlog::EventLogError::Storage(duplicate).is_unavailable());
    }

    use super::*;
    use crate::eventlog::{EventBody, NewEvent};

    fn body(name: &str) -> EventBody {
        EventBody { name: name.into(), args: EventBody::null_args(), client_id: "c".into(), session_id: "s".into() }
    }

    fn checked(store: i64, expected: u64, seqs: &[u64]) -> AppendRequest {
        let mut parent = SeqNum(expected);
        let events = seqs
            .iter()
            .map(|&seq| {
                let event = NewEvent { seq: SeqNum(seq), parent_seq: parent, body: body("e") };
                parent = SeqNum(seq);
                event
            })
            .collect();
        AppendRequest { store: StoreId(store), batch: AppendBatch::Checked { expected_head: SeqNum(expected), events } }
    }

    fn at_head(store: i64, count: usize) -> AppendRequest {
        AppendRequest { store: StoreId(store), batch: AppendBatch::AtHead { events: vec![body("h"); count] } }
    }

    fn heads(entries: &[(i64, u64)]) -> HashMap<StoreId, LockedHead> {
        entries
            .iter()
            .map(|&(id, head)| (StoreId(id), LockedHead { head: SeqNum(head), backend_id: "b".into() }))
            .collect()
    }

    /// Seqs per request: accepted with its seqs, or the head it was refused against.
    fn placed(decision: Decision<'_>, heads: &HashMap<StoreId, LockedHead>) -> Vec<Result<Vec<u64>, u64>> {
        materialize(decision, heads, 1, "t")
            .into_iter()
            .map(|outcome| match outcome {
                Ok(batch) => Ok(batch.events.iter().map(|e| e.seq.0).collect()),
                Err(head) => Err(head.0),
            })
            .collect()
    }

    #[test]
    fn each_request_of_a_group_sees_the_head_the_previous_ones_left() {
        let locked = heads(&[(1, 5), (2, 0)]);
        let group = [
            checked(1, 5, &[6, 7]), // on the locked head: accepted
            checked(1, 5, &[6]),    // a contender on the same head: refused against 7, not 5
            checked(1, 7, &[9]),    // continues from what the first left: accepted (sparse)
            at_head(1, 2),          // numbered after it
            checked(2, 0, &[1]),    // another store is untouched by all that
            checked(1, 9, &[10]),   // expected the head before the at-head batch: refused
        ];
        let refs: Vec<&AppendRequest> = group.iter().collect();
        let decision = decide(&refs, &locked);
        assert_eq!(decision.accepted(), 4);
        assert_eq!(decision.store_updates, vec![(StoreId(1), SeqNum(11), 5), (StoreId(2), SeqNum(1), 1)]);
        assert_eq!(
            placed(decision, &locked),
            vec![Ok(vec![6, 7]), Err(7), Ok(vec![9]), Ok(vec![10, 11]), Ok(vec![1]), Err(11)]
        );
    }

    #[test]
    fn accepted_batches_take_consecutive_change_log_positions_in_group_order() {
        let locked = heads(&[(1, 0), (2, 0)]);
        let group = [checked(2, 0, &[1]), checked(1, 3, &[4]), at_head(1, 1), checked(2, 1, &[2])];
        let refs: Vec<&AppendRequest> = group.iter().collect();
        let outcome = materialize(decide(&refs, &locked), &locked, 40, "t");
        let positions: Vec<Result<u64, u64>> =
            outcome.iter().map(|o| o.as_ref().map(|b| b.change_pos().0).map_err(|h| h.0)).collect();
        assert_eq!(positions, vec![Ok(40), Err(0), Ok(41), Ok(42)]);
    }
}
