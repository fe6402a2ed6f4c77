//! The D1 import reader: a `wrangler d1 export` SQL dump (or a Durable-Object SQLite file)
//! loaded into SQLite by `import_d1`'s loader, then read by its planning and row decoding. The
//! SQL itself is SQLite's to parse; what is fuzzed is our loading of it (a NUL byte once hung
//! it for ever) and everything `import_d1` makes of what SQLite holds afterwards (table names,
//! context rows, columns of any type, args that are not JSON).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use super::{Verdict, run};
use crate::import_d1::{Options, load_dump, plan, read_store};

/// A fresh in-memory database every this many inputs, so that no state a dump left outside
/// its savepoint (pragmas) builds up.
const INPUTS_PER_CONNECTION: u32 = 5_000;

/// SQLite virtual-machine instructions one input may run (the seeds need a few thousand). A
/// mutant can be a query that runs for hours (a self-join of a table with itself, many times
/// over); it is interrupted and counts as rejected: how long SQLite takes is not the reader's
/// to fuzz.
const OPS_PER_INPUT: u64 = 2_000_000;

/// How often, in instructions, SQLite asks whether to go on.
const OPS_PER_CHECK: i32 = 10_000;

const D1_DUMP: &str = r#"PRAGMA defer_foreign_keys=TRUE;
CREATE TABLE eventlog_7_todos ('seqNum' integer not null, 'parentSeqNum' integer not null, 'name' text not null, 'args' text, 'createdAt' text not null, 'clientId' text not null, 'sessionId' text not null, PRIMARY KEY ('seqNum')) strict;
INSERT INTO "eventlog_7_todos" VALUES(1,0,'todoCreated','{"id":"a","text":"ünïcødé 🚀"}','2025-01-01T00:00:00.000Z','c1','s1');
INSERT INTO "eventlog_7_todos" VALUES(5,1,'todoCompleted',NULL,'2025-01-01T00:00:01.000Z','c1','s1');
INSERT INTO "eventlog_7_todos" VALUES(20000,5,'todo''Quoted','null','2025-01-02T00:00:00.000+00:00','c2','s''2');
CREATE TABLE eventlog_7_my_notes ('seqNum' integer not null, 'parentSeqNum' integer not null, 'name' text not null, 'args' text, 'createdAt' text not null, 'clientId' text not null, 'sessionId' text not null, PRIMARY KEY ('seqNum')) strict;
INSERT INTO "eventlog_7_my_notes" VALUES(1,0,'noteAdded','{"n":1}','2025-02-01T00:00:00.000Z','c3','s3');
"#;

const DO_DUMP: &str = r#"CREATE TABLE "eventlog_7_my_store_1" ("seqNum" integer primary key, "parentSeqNum" integer not null, "name" text not null, "args" text, "createdAt" text not null, "clientId" text not null, "sessionId" text not null) strict;
INSERT INTO "eventlog_7_my_store_1" VALUES(1,0,'a','{"x":[1,2.5,"é"]}','2025-01-01T00:00:00.000Z','c','s');
INSERT INTO "eventlog_7_my_store_1" VALUES(2,1,'b',NULL,'2025-01-01T00:00:00.000Z','c','s');
CREATE TABLE "context_7" ("storeId" text primary key, "currentHead" integer not null, "backendId" text not null) strict;
INSERT INTO "context_7" VALUES('my store/1',2,'backend-1');
"#;

const LOOSE_DUMP: &str = r#"CREATE TABLE eventlog_7_loose (seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId);
INSERT INTO eventlog_7_loose VALUES(3,2,'n','[]','t','c','s');
INSERT INTO eventlog_7_loose VALUES(4,3,'n','{}','t','c','s');
CREATE TABLE eventlog_notes (x);
CREATE TABLE context_7 (storeId, currentHead, backendId);
INSERT INTO context_7 VALUES('loose',4,'b');
"#;

struct Reader {
    runtime: tokio::runtime::Runtime,
    conn: Option<SqliteConnection>,
    uses: u32,
    /// Instruction checks left for the current input; the progress handler counts it down.
    checks_left: Arc<AtomicU64>,
}

impl Reader {
    fn new() -> Reader {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Reader { runtime, conn: None, uses: 0, checks_left: Arc::new(AtomicU64::new(0)) }
    }

    /// Each dump runs inside a savepoint that is rolled back afterwards: one round trip to the
    /// database instead of dropping every table, and the same to the reader. (The seeds hold no transaction
    /// statements; a mutant that ends the savepoint early only costs a new connection.)
    fn read(&mut self, dump: &str) -> Verdict {
        let Reader { runtime, conn, uses, checks_left } = self;
        runtime.block_on(async {
            *uses += 1;
            if *uses % INPUTS_PER_CONNECTION == 0 {
                *conn = None;
            }
            if conn.is_none() {
                let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
                let mut fresh = SqliteConnection::connect_with(&options).await.unwrap();
                let checks = checks_left.clone();
                fresh.lock_handle().await.unwrap().set_progress_handler(OPS_PER_CHECK, move || {
                    checks.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_ok()
                });
                *conn = Some(fresh);
            }
            let db = conn.as_mut().unwrap();
            let verdict = read(db, dump, checks_left).await;
            let rolled_back = sqlx::raw_sql("ROLLBACK TO fuzz; RELEASE fuzz").execute(&mut *db).await.is_ok();
            if !rolled_back || (*uses % 64 == 0 && !is_empty(db).await) {
                *conn = None;
            }
            verdict
        })
    }
}

/// Loads `dump` within the instruction budget, then reads it without one: the reader's own
/// queries must finish on whatever the dump managed to build.
async fn read(conn: &mut SqliteConnection, dump: &str, checks_left: &AtomicU64) -> Verdict {
    checks_left.store(OPS_PER_INPUT / OPS_PER_CHECK as u64, Ordering::Relaxed);
    sqlx::raw_sql("SAVEPOINT fuzz").execute(&mut *conn).await.unwrap();
    let loaded = load_dump(conn, "dump", dump).await;
    checks_left.store(u64::MAX, Ordering::Relaxed);
    if let Err(e) = loaded {
        assert!(!e.to_string().is_empty());
        return Verdict::Rejected;
    }
    let mut warnings = Vec::new();
    let planned = match plan(conn, "dump", &Options::default(), &mut warnings).await {
        Ok(planned) => planned,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return Verdict::Rejected;
        }
    };
    for store in &planned {
        if let Err(e) = read_store(conn, store, &mut warnings).await {
            assert!(!e.to_string().is_empty());
            return Verdict::Rejected;
        }
    }
    Verdict::Accepted
}

/// Whether the rollback left nothing behind (checked now and then: it costs a query).
async fn is_empty(conn: &mut SqliteConnection) -> bool {
    let count: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM sqlite_master").fetch_one(&mut *conn).await;
    matches!(count, Ok(0))
}

#[test]
fn d1_import_reader() {
    let mut reader = Reader::new();
    let seeds = [D1_DUMP, DO_DUMP, LOOSE_DUMP].map(|s| s.as_bytes().to_vec()).into();
    run("d1-import", seeds, |input| reader.read(&String::from_utf8_lossy(input)));
}
