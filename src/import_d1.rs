//! `junction import-d1`: moves LiveStore event logs off Cloudflare (D1, or Durable-Object SQLite).
//!
//! The input is either a SQLite database file (a D1 or DO SQLite copy) or the SQL text dump that
//! `wrangler d1 export` writes; a dump is loaded into an in-memory SQLite first, so both are read
//! the same way. Every table `eventlog_7_<sanitized storeId>` becomes a LiveStore store, imported
//! with its exact seqNum, parentSeqNum, name, args, clientId, sessionId and createdAt, through
//! [`EventLog::restore`]: each store whole or not at all, idempotent, and refused over a different
//! history unless `replace`.
//!
//! Cloudflare's table names lose the original storeId (sync-cf names a store's table with
//! `replaceAll(/[^a-zA-Z0-9]/g, '_')` of it). The storeId comes from, in order: the `--store-map` file; the
//! `context_7` table of 0.4 DO SQLite (which also carries the backendId, so connected 0.4 clients
//! keep their data); else the table suffix itself, with a warning.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use crate::eventlog::{
    ChangePos, Event, EventBody, EventLog, EventLogError, Protocol, RestoreOutcome, SeqNum, StoreKey,
};

/// The persistence format version of `@livestore/sync-cf` 0.3 and 0.4 (`PERSISTENCE_FORMAT_VERSION`).
const FORMAT_VERSION: &str = "7";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {0}: {1}")]
    Source(String, sqlx::Error),
    #[error("{0}")]
    Unsupported(String),
    #[error("table {table}: {reason}")]
    BadRow { table: String, reason: String },
    #[error(transparent)]
    Log(#[from] EventLogError),
    #[error("store {0:?} already holds other events; run again with --replace to overwrite it")]
    Conflict(String),
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Table name → original storeId.
    pub store_map: HashMap<String, String>,
    pub replace: bool,
    pub dry_run: bool,
}

/// One store found in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundStore {
    pub table: String,
    pub store_id: String,
    /// Where the storeId came from: "store map", "context_7" or "table name".
    pub store_id_from: &'static str,
    /// The backendId carried over from `context_7`, if there was one.
    pub backend_id: Option<String>,
    pub events: u64,
    pub outcome: StoreOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Imported,
    /// Already present with the same history.
    Unchanged,
    /// `--dry-run`: nothing written.
    WouldImport,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stores: Vec<FoundStore>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn events(&self) -> u64 {
        self.stores.iter().map(|s| s.events).sum()
    }
}

/// Cloudflare's table-name sanitizer, to match `context_7` storeIds with tables. JavaScript
/// replaces UTF-16 code units, so a character outside the BMP becomes two underscores.
pub fn sanitize(store_id: &str) -> String {
    let mut out = String::with_capacity(store_id.len());
    for c in store_id.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.extend(std::iter::repeat_n('_', c.len_utf16()));
        }
    }
    out
}

pub async fn import(
    log: &EventLog,
    file: &Path,
    options: &Options,
    mut progress: impl FnMut(u64),
) -> Result<Report, ImportError> {
    let source = file.display().to_string();
    let mut conn = open_source(file).await?;
    let mut report = Report::default();
    for planned in plan(&mut conn, &source, options, &mut report.warnings).await? {
        let events = read_store(&mut conn, &planned, &mut report.warnings).await?;
        let Planned { table, store_id, store_id_from, backend_id, .. } = planned;
        let key = StoreKey::new(Protocol::LiveStore, store_id.clone()).map_err(|invalid| ImportError::BadRow {
            table: table.clone(),
            reason: format!("storeId {store_id:?}: {invalid}"),
        })?;
        let count = events.len() as u64;
        let outcome = if options.dry_run {
            StoreOutcome::WouldImport
        } else {
            match log.restore(&key, backend_id.as_deref(), events, options.replace).await? {
                RestoreOutcome::Restored => StoreOutcome::Imported,
                RestoreOutcome::Unchanged => StoreOutcome::Unchanged,
                RestoreOutcome::Conflict => return Err(ImportError::Conflict(store_id)),
            }
        };
        progress(count);
        report.stores.push(FoundStore { table, store_id, store_id_from, backend_id, events: count, outcome });
    }
    conn.close().await.ok();
    Ok(report)
}

/// A store found in the source, before its events are read.
pub(crate) struct Planned {
    pub(crate) table: String,
    pub(crate) store_id: String,
    pub(crate) store_id_from: &'static str,
    pub(crate) backend_id: Option<String>,
    /// `context_7`'s head, checked against the events once they are read.
    head: Option<u64>,
}

/// Finds the event tables of `conn` and names their stores.
pub(crate) async fn plan(
    conn: &mut SqliteConnection,
    source: &str,
    options: &Options,
    warnings: &mut Vec<String>,
) -> Result<Vec<Planned>, ImportError> {
    let fail = |e: sqlx::Error| ImportError::Source(source.to_owned(), e);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'eventlog\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    let mut event_tables = Vec::new();
    for table in tables {
        let rest = &table["eventlog_".len()..];
        match rest.split_once('_') {
            Some((FORMAT_VERSION, suffix)) => event_tables.push((table.clone(), suffix.to_owned())),
            Some((version, _)) if version.chars().all(|c| c.is_ascii_digit()) => {
                return Err(ImportError::Unsupported(format!(
                    "table {table} uses LiveStore persistence format {version}; only format {FORMAT_VERSION} \
                     (@livestore/sync-cf 0.3 and 0.4) can be imported"
                )));
            }
            _ => warnings.push(format!("skipped table {table}: not a LiveStore event log")),
        }
    }
    if event_tables.is_empty() {
        return Err(ImportError::Unsupported(format!("{source} holds no LiveStore event table (eventlog_7_…)")));
    }
    let contexts = read_context(conn).await.map_err(fail)?;
    if contexts.is_empty() {
        warnings.push(
            "no context_7 table: the stores get new backendIds, so connected LiveStore 0.4 clients will see a \
             BackendIdMismatch and reset their local data once (0.3 clients are not affected)"
                .into(),
        );
    }
    let mut planned = Vec::new();
    for (table, suffix) in event_tables {
        let context = contexts.iter().find(|c| sanitize(&c.store_id) == suffix);
        let (store_id, store_id_from) = if let Some(id) = options.store_map.get(&table) {
            (id.clone(), "store map")
        } else if let Some(context) = context {
            (context.store_id.clone(), "context_7")
        } else {
            warnings.push(format!(
                "table {table}: storeId taken from the table name ({suffix:?}); the original may have had \
                 characters Cloudflare replaced with '_'. Give a --store-map to import it under its real storeId"
            ));
            (suffix.clone(), "table name")
        };
        let context = contexts.iter().find(|c| c.store_id == store_id).or(context);
        planned.push(Planned {
            table,
            store_id,
            store_id_from,
            backend_id: context.map(|c| c.backend_id.clone()),
            head: context.map(|c| c.head),
        });
    }
    Ok(planned)
}

/// The events of one planned store, in seq order.
pub(crate) async fn read_store(
    conn: &mut SqliteConnection,
    planned: &Planned,
    warnings: &mut Vec<String>,
) -> Result<Vec<Event>, ImportError> {
    let events = read_events(conn, &planned.table).await?;
    let head = events.last().map_or(SeqNum::ROOT, |e| e.seq);
    if let Some(context_head) = planned.head
        && context_head != head.0
    {
        warnings.push(format!(
            "store {:?}: context_7 says head {context_head} but the last event is {head}; the events win",
            planned.store_id
        ));
    }
    Ok(events)
}

/// A SQLite file as it is (read-only), or a SQL dump replayed into an in-memory database.
async fn open_source(file: &Path) -> Result<SqliteConnection, ImportError> {
    let source = || file.display().to_string();
    let mut magic = [0u8; 16];
    let is_sqlite = std::fs::File::open(file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"SQLite format 3\0");
    if is_sqlite {
        let options = SqliteConnectOptions::new().filename(file).read_only(true);
        return SqliteConnection::connect_with(&options).await.map_err(|e| ImportError::Source(source(), e));
    }
    let dump = std::fs::read_to_string(file).map_err(|e| ImportError::Source(source(), e.into()))?;
    let in_memory = SqliteConnectOptions::from_str("sqlite::memory:").expect("a valid SQLite URL");
    let mut conn = SqliteConnection::connect_with(&in_memory).await.map_err(|e| ImportError::Source(source(), e))?;
    load_dump(&mut conn, &source(), &dump).await?;
    Ok(conn)
}

/// Runs a SQL dump. A NUL byte ends SQL text for SQLite, and sqlx's statement splitter never
/// gets past one (it spins for ever), so a dump holding one is refused up front; `wrangler d1
/// export` writes none.
pub(crate) async fn load_dump(conn: &mut SqliteConnection, source: &str, dump: &str) -> Result<(), ImportError> {
    if let Some(at) = dump.find('\0') {
        let line = 1 + dump[..at].matches('\n').count();
        return Err(ImportError::Unsupported(format!(
            "{source}: line {line} holds a NUL byte, which SQL text cannot; is this a SQL dump or a SQLite file?"
        )));
    }
    sqlx::raw_sql(dump).execute(conn).await.map_err(|e| ImportError::Source(source.to_string(), e))?;
    Ok(())
}

struct Context {
    store_id: String,
    head: u64,
    backend_id: String,
}

async fn read_context(conn: &mut SqliteConnection) -> Result<Vec<Context>, sqlx::Error> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'context_7'")
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows =
        sqlx::query(r#"SELECT "storeId", "currentHead", "backendId" FROM context_7"#).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            let head: i64 = row.try_get(1)?;
            Ok(Context { store_id: row.try_get(0)?, head: head as u64, backend_id: row.try_get(2)? })
        })
        .collect()
}

async fn read_events(conn: &mut SqliteConnection, table: &str) -> Result<Vec<Event>, ImportError> {
    let bad = |reason: String| ImportError::BadRow { table: table.to_owned(), reason };
    // The name comes from sqlite_master; quoting it keeps any character it may hold inert.
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let rows = sqlx::query(&format!(
        r#"SELECT "seqNum", "parentSeqNum", "name", "args", "createdAt", "clientId", "sessionId" FROM {quoted} ORDER BY "seqNum""#
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| bad(e.to_string()))?;
    rows.iter()
        .map(|row| {
            let get_i64 = |i: usize| row.try_get::<i64, _>(i).map_err(|e| bad(e.to_string()));
            let get_text = |i: usize| row.try_get::<String, _>(i).map_err(|e| bad(e.to_string()));
            let (seq, parent) = (get_i64(0)?, get_i64(1)?);
            if seq < 0 || parent < 0 {
                return Err(bad(format!("negative seqNum {seq} or parentSeqNum {parent}")));
            }
            let args: Option<String> = row.try_get(3).map_err(|e| bad(e.to_string()))?;
            let args = match args {
                None => EventBody::null_args(),
                Some(text) => serde_json::value::RawValue::from_string(text)
                    .map_err(|e| bad(format!("seqNum {seq}: args is not JSON: {e}")))?,
            };
            Ok(Event {
                seq: SeqNum(seq as u64),
                parent_seq: SeqNum(parent as u64),
                body: EventBody { name: get_text(2)?, args, client_id: get_text(5)?, session_id: get_text(6)? },
                created_at: get_text(4)?,
                change_pos: ChangePos(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing_matches_cloudflare() {
        assert_eq!(sanitize("my store/1"), "my_store_1");
        assert_eq!(sanitize("a-b.c_d"), "a_b_c_d");
        assert_eq!(sanitize("ünï"), "_n_");
        assert_eq!(sanitize("a🚀"), "a__");
    }
}
