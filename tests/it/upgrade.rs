//! Upgrading a database written by an earlier Junction keeps every event.
//!
//! Builds the layout of before the `events` table (a table `eventlog_<id>` per store) by running
//! only the migrations older than it, writes events there as that version did, then starts
//! today's server on the database: it must migrate, serve the old events unchanged, and append
//! after them.

use std::path::Path;
use std::str::FromStr;

use junction::eventlog::SeqNum;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::helpers::{Kind, TestDatabase, at_head, key, spawn_app_with, test_config};
use crate::on_both_backends;

/// The migration that replaced the per-store tables.
const ONE_EVENTS_TABLE: i64 = 20261124000001;

on_both_backends!(
    an_unmigrated_database_is_refused_when_not_migrating_on_start,
    per_store_tables_are_moved_into_the_events_table
);

async fn per_store_tables_are_moved_into_the_events_table(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let dir = match kind {
        Kind::Sqlite => "migrations/sqlite",
        Kind::Postgres => "migrations/postgres",
    };
    let mut old = Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).await.unwrap();
    old.migrations = old.migrations.iter().filter(|m| m.version < ONE_EVENTS_TABLE).cloned().collect();
    assert!(!old.migrations.is_empty());

    // Two stores as the old server left them: `todos` with three events, `empty` with none.
    let statements = [
        "INSERT INTO stores (protocol, name, head, backend_id, event_count, created_at) \
         VALUES ('livestore', 'todos', 3, 'old-backend', 3, '2026-11-01T00:00:00.000Z')",
        "INSERT INTO stores (protocol, name, head, backend_id, event_count, created_at) \
         VALUES ('livestore', 'empty', 0, 'old-empty', 0, '2026-11-01T00:00:00.000Z')",
        "CREATE TABLE eventlog_1 (seq BIGINT PRIMARY KEY, parent_seq BIGINT NOT NULL, name TEXT NOT NULL, \
         args TEXT NOT NULL, client_id TEXT NOT NULL, session_id TEXT NOT NULL, created_at TEXT NOT NULL, \
         change_pos BIGINT NOT NULL)",
        "CREATE TABLE eventlog_2 (seq BIGINT PRIMARY KEY, parent_seq BIGINT NOT NULL, name TEXT NOT NULL, \
         args TEXT NOT NULL, client_id TEXT NOT NULL, session_id TEXT NOT NULL, created_at TEXT NOT NULL, \
         change_pos BIGINT NOT NULL)",
        "INSERT INTO eventlog_1 VALUES \
         (1, 0, 'todoCreated-v1', '{\"id\":1}', 'client-a', 'session-a', '2026-11-01T00:00:01.000Z', 1), \
         (2, 1, 'todoCreated-v1', '{\"id\":2}', 'client-a', 'session-a', '2026-11-01T00:00:01.000Z', 1), \
         (3, 2, 'todoCompleted-v1', '{\"id\":1}', 'client-b', 'session-b', '2026-11-01T00:00:02.000Z', 2)",
        "INSERT INTO changes (position, store_id, first_seq, last_seq, event_count, created_at) VALUES \
         (1, 1, 1, 2, 2, '2026-11-01T00:00:01.000Z'), (2, 1, 3, 3, 1, '2026-11-01T00:00:02.000Z')",
        "UPDATE change_log_head SET position = 2",
    ];
    for (statement, outcome) in statements.iter().zip(execute(kind, &db.url, Some(&old), &statements).await) {
        outcome.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    let app = spawn_app_with(test_config(&db), db.clone()).await;
    let events = app.log.read(&key("todos"), SeqNum::ROOT, 10).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.seq.0,
                e.parent_seq.0,
                e.body.name.as_str(),
                e.body.args.get(),
                e.body.client_id.as_str(),
                e.change_pos.0,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, 0, "todoCreated-v1", r#"{"id":1}"#, "client-a", 1),
            (2, 1, "todoCreated-v1", r#"{"id":2}"#, "client-a", 1),
            (3, 2, "todoCompleted-v1", r#"{"id":1}"#, "client-b", 2),
        ]
    );
    assert_eq!(events[2].created_at, "2026-11-01T00:00:02.000Z");
    assert_eq!(events[0].body.session_id, "session-a");
    let info = app.log.info(&key("todos")).await.unwrap();
    assert_eq!((info.head, info.event_count, info.backend_id.as_str()), (SeqNum(3), 3, "old-backend"));

    let appended = app.log.append(&key("todos"), at_head(1)).await.unwrap();
    assert_eq!((appended.first_seq, appended.change_pos.0), (SeqNum(4), 3));
    assert_eq!(app.log.read(&key("todos"), SeqNum(2), 10).await.unwrap().len(), 2);
    let appended = app.log.append(&key("empty"), at_head(2)).await.unwrap();
    assert_eq!(appended.last_seq, SeqNum(2));
    let (config, db) = app.stop().await;

    // The old tables are gone, and a second start finds nothing left to move.
    let probes = ["SELECT 1 FROM eventlog_1", "SELECT 1 FROM eventlog_2"];
    for (probe, outcome) in probes.iter().zip(execute(kind, &db.url, None, &probes).await) {
        assert!(outcome.is_err(), "{probe}: the old table still exists");
    }
    let app = spawn_app_with(config, db).await;
    assert_eq!(app.log.read(&key("todos"), SeqNum::ROOT, 10).await.unwrap().len(), 4);
    assert_eq!(app.log.head(&key("empty")).await.unwrap(), SeqNum(2));
    app.stop().await;
}

/// Runs `old` (if given), then each statement on its own, on a plain connection to the database.
async fn execute(kind: Kind, url: &str, old: Option<&Migrator>, statements: &[&str]) -> Vec<Result<(), String>> {
    let mut outcomes = Vec::new();
    // The same steps on either backend's connection type.
    macro_rules! run_on {
        ($connect:expr) => {{
            let mut connection = $connect.await.expect("connect");
            if let Some(old) = old {
                old.run(&mut connection).await.expect("the old migrations");
            }
            for statement in statements {
                outcomes
                    .push(sqlx::query(statement).execute(&mut connection).await.map(drop).map_err(|e| e.to_string()));
            }
            connection.close().await.unwrap();
        }};
    }
    match kind {
        Kind::Sqlite => {
            let options = SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true);
            std::fs::create_dir_all(options.get_filename().parent().unwrap()).unwrap();
            run_on!(SqliteConnection::connect_with(&options))
        }
        Kind::Postgres => run_on!(PgConnection::connect(url)),
    }
    outcomes
}

/// With `migrate_on_start = false`, a database without the migrations stops the start with the
/// command to run, rather than serving requests that would all fail; once migrated, it starts.
async fn an_unmigrated_database_is_refused_when_not_migrating_on_start(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.store.migrate_on_start = false;
    let error = match junction::server::Server::build(config.clone()).await {
        Ok(_) => panic!("served an unmigrated database"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("run `junction migrate`"), "{error}");
    let backend = junction::store::Backend::connect(&config.store).await.unwrap();
    backend.migrate().await.unwrap();
    assert!(backend.pending_migrations().await.unwrap().is_empty());
    backend.close().await;
    let app = spawn_app_with(config, db).await;
    app.log.append(&key("migrated"), at_head(1)).await.unwrap();
    app.stop().await;
}
