//! `junction import-d1` with fixtures generated here in both Cloudflare formats: the SQL text of
//! `wrangler d1 export` (0.3, D1) and a Durable-Object SQLite file with `context_7` (0.4), then
//! the real 0.4 client pulling the imported store and pushing on top of it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use junction::eventlog::{Protocol, SeqNum, StoreKey};
use junction::import_d1::{self, ImportError, Options, StoreOutcome};
use sqlx::{Connection, SqliteConnection};

use crate::helpers::{Kind, TestApp, spawn_app};

/// (seqNum, parentSeqNum, name, args (None = NULL), createdAt, clientId, sessionId)
type Row = (u64, u64, &'static str, Option<&'static str>, &'static str, &'static str, &'static str);

const TODOS: &[Row] = &[
    (1, 0, "todoCreated", Some(r#"{"id":"a","text":"ünïcødé 🚀"}"#), "2025-01-01T00:00:00.000Z", "c1", "s1"),
    (5, 1, "todoCompleted", None, "2025-01-01T00:00:01.000Z", "c1", "s1"),
    (20000, 5, "todo'Quoted", Some("null"), "2025-01-02T00:00:00.000+00:00", "c2", "s'2"),
];
const SPACED: &[Row] = &[(1, 0, "noteAdded", Some(r#"{"n":1}"#), "2025-02-01T00:00:00.000Z", "c3", "s3")];

fn sql_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// What `wrangler d1 export` writes for 0.3 tables (no context_7: 0.3 kept the head in DO KV).
fn write_d1_dump(path: &Path, tables: &[(&str, &[Row])]) {
    let mut dump = String::from("PRAGMA defer_foreign_keys=TRUE;\n");
    for (table, rows) in tables {
        writeln!(
            dump,
            "CREATE TABLE {table} ('seqNum' integer not null, 'parentSeqNum' integer not null, 'name' text not null, \
             'args' text, 'createdAt' text not null, 'clientId' text not null, 'sessionId' text not null, \
             PRIMARY KEY ('seqNum')) strict;"
        )
        .unwrap();
        for (seq, parent, name, args, created, client, session) in rows.iter() {
            let args = args.map_or("NULL".to_owned(), sql_text);
            writeln!(
                dump,
                "INSERT INTO \"{table}\" VALUES({seq},{parent},{},{args},{},{},{});",
                sql_text(name),
                sql_text(created),
                sql_text(client),
                sql_text(session)
            )
            .unwrap();
        }
    }
    std::fs::write(path, dump).unwrap();
}

/// A 0.4 Durable-Object SQLite database: quoted tables plus context_7.
async fn write_do_sqlite(
    path: &Path,
    tables: &[(&str, &[Row])],
    contexts: &[(&str, u64, &str)],
    bulk: Option<(&str, u64)>,
) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let mut all: Vec<(&str, Vec<Row>)> = tables.iter().map(|(t, r)| (*t, r.to_vec())).collect();
    if let Some((table, _)) = bulk {
        all.push((table, Vec::new()));
    }
    for (table, rows) in &all {
        sqlx::raw_sql(&format!(
            r#"CREATE TABLE IF NOT EXISTS "{table}" ("seqNum" integer primary key, "parentSeqNum" integer not null, "name" text not null, "args" text, "createdAt" text not null, "clientId" text not null, "sessionId" text not null) strict"#
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        for (seq, parent, name, args, created, client, session) in rows {
            sqlx::query(&format!(r#"INSERT INTO "{table}" VALUES (?, ?, ?, ?, ?, ?, ?)"#))
                .bind(*seq as i64)
                .bind(*parent as i64)
                .bind(*name)
                .bind(*args)
                .bind(*created)
                .bind(*client)
                .bind(*session)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    if let Some((table, count)) = bulk {
        let mut tx = conn.begin().await.unwrap();
        for seq in 1..=count as i64 {
            sqlx::query(&format!(
                r#"INSERT INTO "{table}" VALUES (?, ?, 'e', ?, '2025-03-01T00:00:00.000Z', 'bulk', 's')"#
            ))
            .bind(seq)
            .bind(seq - 1)
            .bind(format!(r#"{{"i":{seq}}}"#))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    sqlx::raw_sql(r#"CREATE TABLE "context_7" ("storeId" text primary key, "currentHead" integer not null, "backendId" text not null) strict"#)
        .execute(&mut conn)
        .await
        .unwrap();
    for (store, head, backend) in contexts {
        sqlx::query(r#"INSERT INTO "context_7" VALUES (?, ?, ?)"#)
            .bind(*store)
            .bind(*head as i64)
            .bind(*backend)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
}

async fn assert_store_holds(app: &TestApp, store_id: &str, rows: &[Row]) {
    let events =
        app.log.read(&StoreKey::new(Protocol::LiveStore, store_id).unwrap(), SeqNum::ROOT, 1000).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.seq.0,
                e.parent_seq.0,
                e.body.name.clone(),
                e.body.args.get().to_owned(),
                e.created_at.clone(),
                e.body.client_id.clone(),
                e.body.session_id.clone(),
            )
        })
        .collect();
    let expected: Vec<_> = rows
        .iter()
        .map(|(s, p, n, a, c, cl, se)| {
            (*s, *p, n.to_string(), a.unwrap_or("null").to_owned(), c.to_string(), cl.to_string(), se.to_string())
        })
        .collect();
    assert_eq!(seen, expected, "{store_id}");
}

/// Runs `continue.mjs` of the v03 or v04 interop package: the real client pulls `store` (expecting
/// `count` events ending at `last`) and pushes one more on top.
async fn real_client_continues(app: &TestApp, version: &str, args: &[&str]) -> String {
    let dir = format!("{}/protocols/livestore/interop/{version}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new("node")
        .arg("continue.mjs")
        .args(args)
        .current_dir(dir)
        .env("JUNCTION_URL", app.url(""))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{version} {args:?}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

async fn d1_dump_imports_exactly_and_idempotently(kind: Kind) {
    let app = spawn_app(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("d1.sql");
    write_d1_dump(&dump, &[("eventlog_7_todos", TODOS), ("eventlog_7_my_store_1", SPACED)]);
    let options = Options {
        store_map: HashMap::from([("eventlog_7_my_store_1".to_owned(), "my store/1".to_owned())]),
        ..Options::default()
    };
    let report = import_d1::import(&app.log, &dump, &options, |_| {}).await.unwrap();
    assert_eq!(report.events(), 4);
    let ids: Vec<_> = report.stores.iter().map(|s| (s.store_id.as_str(), s.store_id_from, s.outcome)).collect();
    assert_eq!(
        ids,
        [("my store/1", "store map", StoreOutcome::Imported), ("todos", "table name", StoreOutcome::Imported)]
    );
    assert!(report.warnings.iter().any(|w| w.contains("new backendIds")), "{:?}", report.warnings);
    assert!(report.warnings.iter().any(|w| w.contains("eventlog_7_todos")), "{:?}", report.warnings);
    assert_store_holds(&app, "todos", TODOS).await;
    assert_store_holds(&app, "my store/1", SPACED).await;
    assert_eq!(app.log.head(&StoreKey::new(Protocol::LiveStore, "todos").unwrap()).await.unwrap(), SeqNum(20000));

    // Again: nothing imported twice.
    let again = import_d1::import(&app.log, &dump, &options, |_| {}).await.unwrap();
    assert!(again.stores.iter().all(|s| s.outcome == StoreOutcome::Unchanged));
    // A store that moved on is refused, unless replaced.
    let key = StoreKey::new(Protocol::LiveStore, "todos").unwrap();
    app.log.append(&key, crate::helpers::checked(20000, &[20001])).await.unwrap();
    assert!(matches!(import_d1::import(&app.log, &dump, &options, |_| {}).await, Err(ImportError::Conflict(_))));
    let replace = Options { replace: true, ..options.clone() };
    import_d1::import(&app.log, &dump, &replace, |_| {}).await.unwrap();
    assert_store_holds(&app, "todos", TODOS).await;

    // The unmodified 0.3 client (what a D1 deployment ran) picks the stores up and goes on.
    let seen = real_client_continues(&app, "v03", &["todos", "3", "20000"]).await;
    assert!(seen.contains("delivered [20001]"), "{seen}");
    real_client_continues(&app, "v03", &["my store/1", "1", "1"]).await;
    assert_eq!(app.log.head(&key).await.unwrap(), SeqNum(20001));
    app.stop().await;
}

crate::on_both_backends!(
    d1_dump_imports_exactly_and_idempotently,
    do_sqlite_keeps_store_ids_and_backend_ids_and_real_clients_continue
);

async fn do_sqlite_keeps_store_ids_and_backend_ids_and_real_clients_continue(kind: Kind) {
    let app = spawn_app(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("do.sqlite");
    write_do_sqlite(
        &file,
        &[("eventlog_7_my_store_1", SPACED)],
        &[("my store/1", 1, "backend-from-cloudflare"), ("big one", 100_000, "big-backend")],
        Some(("eventlog_7_big_one", 100_000)),
    )
    .await;
    let dry =
        import_d1::import(&app.log, &file, &Options { dry_run: true, ..Options::default() }, |_| {}).await.unwrap();
    assert!(dry.stores.iter().all(|s| s.outcome == StoreOutcome::WouldImport));
    assert_eq!(app.log.head(&StoreKey::new(Protocol::LiveStore, "big one").unwrap()).await.unwrap(), SeqNum::ROOT);

    let started = std::time::Instant::now();
    let report = import_d1::import(&app.log, &file, &Options::default(), |_| {}).await.unwrap();
    let rate = report.events() as f64 / started.elapsed().as_secs_f64();
    println!("imported {} events at {rate:.0} events/s", report.events());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let found: Vec<_> =
        report.stores.iter().map(|s| (s.store_id.as_str(), s.store_id_from, s.backend_id.as_deref())).collect();
    assert_eq!(
        found,
        [("big one", "context_7", Some("big-backend")), ("my store/1", "context_7", Some("backend-from-cloudflare"))]
    );
    let big = app.log.info(&StoreKey::new(Protocol::LiveStore, "big one").unwrap()).await.unwrap();
    assert_eq!((big.head, big.event_count, big.backend_id.as_str()), (SeqNum(100_000), 100_000, "big-backend"));

    // The unmodified 0.4 client: same backendId (no reset), all events, and it pushes on top.
    let dir_v04 = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/livestore/interop/v04");
    for (store, count, last, backend) in
        [("my store/1", "1", "1", "backend-from-cloudflare"), ("big one", "100000", "100000", "big-backend")]
    {
        let output = tokio::process::Command::new("node")
            .args(["continue.mjs", store, count, last, backend])
            .current_dir(dir_v04)
            .env("JUNCTION_URL", app.url(""))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{store}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(&format!("backendId {backend}")), "{stdout}");
    }
    assert_eq!(app.log.head(&StoreKey::new(Protocol::LiveStore, "big one").unwrap()).await.unwrap(), SeqNum(100_001));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_persistence_formats_are_named_and_refused() {
    let app = spawn_app(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("old.sql");
    write_d1_dump(&dump, &[("eventlog_6_todos", TODOS)]);
    let error = import_d1::import(&app.log, &dump, &Options::default(), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("persistence format 6"), "{error}");
    let empty = dir.path().join("empty.sql");
    std::fs::write(&empty, "CREATE TABLE other (x);").unwrap();
    let error = import_d1::import(&app.log, &empty, &Options::default(), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("no LiveStore event table"), "{error}");
    app.stop().await;
}

/// A NUL byte ends SQL text for SQLite, and sqlx's statement splitter never got past one: the
/// import spun for ever at full CPU. It is refused, naming the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_holding_a_nul_byte_is_refused_instead_of_hanging() {
    let app = spawn_app(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("nul.sql");
    write_d1_dump(&dump, &[("eventlog_7_todos", TODOS)]);
    let mut text = std::fs::read_to_string(&dump).unwrap();
    // Where a statement could start: SQLite prepares nothing there, and the splitter stood still.
    text.insert(text.find("INSERT").unwrap(), '\0');
    std::fs::write(&dump, text).unwrap();
    let options = Options::default();
    let import = import_d1::import(&app.log, &dump, &options, |_| {});
    // No timing is asserted: the minute only stops a hang from holding the suite.
    let error = tokio::time::timeout(std::time::Duration::from_secs(60), import)
        .await
        .expect("the import hung on the NUL byte")
        .unwrap_err();
    assert!(matches!(error, ImportError::Unsupported(_)), "{error:?}");
    assert!(error.to_string().contains("line 3 holds a NUL byte"), "{error}");
    app.stop().await;
}
