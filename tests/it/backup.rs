//! Export and import: lossless round trips across both backends, idempotence, conflicts, and the
//! command line.

use junction::backup::{self, BackupError};
use junction::eventlog::{AppendBatch, EventBody, Protocol, SeqNum, StoreKey};

use crate::helpers::{Kind, TestApp, TestDatabase, at_head, checked, spawn_app};

fn stores() -> [StoreKey; 3] {
    [
        StoreKey::new(Protocol::LiveStore, "todos ünïcødé").unwrap(),
        StoreKey::new(Protocol::Pocket, "notes").unwrap(),
        StoreKey::new(Protocol::SyncKit, "doc-1").unwrap(),
    ]
}

async fn fill(app: &TestApp) {
    let [todos, notes, doc] = stores();
    app.log.append(&todos, checked(0, &[3, 20000])).await.unwrap();
    let odd = |name: &str, args: &str| EventBody {
        name: name.into(),
        args: serde_json::value::RawValue::from_string(args.into()).unwrap(),
        client_id: "ç".into(),
        session_id: "".into(),
    };
    let events = vec![odd("nullArgs", "null"), odd("spaced", r#"{ "b" : [1, 2.50, "\u00e9"] ,"a":{}}"#)];
    app.log.append(&todos, AppendBatch::AtHead { events }).await.unwrap();
    app.log.append(&notes, at_head(5)).await.unwrap();
    app.log.append(&doc, at_head(1)).await.unwrap();
}

async fn export_all(app: &TestApp) -> Vec<u8> {
    let mut out = Vec::new();
    let summary = backup::export(&app.log, &[], &mut out).await.unwrap();
    assert_eq!((summary.stores, summary.events), (3, 10));
    out
}

/// Same metadata and the same events, field for field (change-log positions aside).
async fn assert_same_stores(a: &TestApp, b: &TestApp) {
    for key in stores() {
        let (left, right) = (a.log.info(&key).await.unwrap(), b.log.info(&key).await.unwrap());
        assert_eq!((&left.backend_id, left.head, left.event_count), (&right.backend_id, right.head, right.event_count));
        let strip = |events: Vec<junction::eventlog::Event>| {
            events.into_iter().map(|e| (e.seq, e.parent_seq, e.body, e.created_at)).collect::<Vec<_>>()
        };
        let left = strip(a.log.read(&key, SeqNum::ROOT, 100).await.unwrap());
        assert_eq!(left, strip(b.log.read(&key, SeqNum::ROOT, 100).await.unwrap()), "{key}");
        assert!(!left.is_empty());
    }
}

async fn round_trip(from: Kind, to: Kind) {
    let source = spawn_app(from).await;
    fill(&source).await;
    let export = export_all(&source).await;
    let target = spawn_app(to).await;
    let summary = backup::import(&target.log, &export[..], false).await.unwrap();
    assert_eq!((summary.stores, summary.events, summary.unchanged), (3, 10, 0));
    assert_same_stores(&source, &target).await;
    // The args kept their exact bytes.
    let todos = target.log.read(&stores()[0], SeqNum(20000), 10).await.unwrap();
    assert_eq!(todos[1].body.args.get(), r#"{ "b" : [1, 2.50, "\u00e9"] ,"a":{}}"#);

    // Importing again changes nothing.
    let again = backup::import(&target.log, &export[..], false).await.unwrap();
    assert_eq!((again.stores, again.unchanged), (0, 3));
    // An export whose events changed but not their count, seqs or backend id is another history.
    let edited = String::from_utf8(export.clone()).unwrap().replacen("2.50", "2.51", 1);
    assert_ne!(edited.as_bytes(), &export[..], "the export holds the args that are edited here");
    assert!(matches!(backup::import(&target.log, edited.as_bytes(), false).await, Err(BackupError::Conflict(_))));
    // A store that moved on is refused, and then overwritten only when asked.
    target.log.append(&stores()[1], at_head(1)).await.unwrap();
    assert!(matches!(backup::import(&target.log, &export[..], false).await, Err(BackupError::Conflict(_))));
    let replaced = backup::import(&target.log, &export[..], true).await.unwrap();
    assert_eq!((replaced.stores, replaced.unchanged), (1, 2));
    assert_same_stores(&source, &target).await;
    // Positions stay unique in the target's change log.
    let changes = target.log.read_changes(junction::eventlog::ChangePos(0), 100).await.unwrap();
    assert!(changes.windows(2).all(|w| w[0].position < w[1].position));
    source.stop().await;
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite() {
    round_trip(Kind::Sqlite, Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres() {
    round_trip(Kind::Postgres, Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_and_back() {
    round_trip(Kind::Sqlite, Kind::Postgres).await;
    round_trip(Kind::Postgres, Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_by_line_and_writes_nothing() {
    let app = spawn_app(Kind::Sqlite).await;
    let header = r#"{"format":"junction-export","version":1}"#;
    let store = r#"{"store":{"protocol":"pocket","name":"n","backend_id":"b","head":2,"event_count":2}}"#;
    let event = |seq: u64| {
        format!(
            r#"{{"event":{{"seq":{seq},"parent_seq":0,"name":"e","args":null,"client_id":"c","session_id":"s","created_at":"t"}}}}"#
        )
    };
    let cases = [
        (String::new(), 1),
        ("{\"format\":\"other\",\"version\":1}".to_owned(), 1),
        (format!("{header}\n{}", event(1)), 2),
        (format!("{header}\n{store}\n{}\n{}", event(2), event(1)), 4),
        (format!("{header}\n{store}\n{{\"bogus\":1}}"), 3),
    ];
    for (file, line) in cases {
        match backup::import(&app.log, file.as_bytes(), false).await {
            Err(BackupError::Format { line: l, .. }) => assert_eq!(l, line, "{file}"),
            other => panic!("expected a format error at line {line}, got {other:?}"),
        }
    }
    // A store line whose count disagrees with its events.
    let short = format!("{header}\n{store}\n{}", event(2));
    assert!(matches!(
        backup::import(&app.log, short.as_bytes(), false).await,
        Err(BackupError::Format { line: 2, .. })
    ));
    assert_eq!(app.log.head(&StoreKey::new(Protocol::Pocket, "n").unwrap()).await.unwrap(), SeqNum::ROOT);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_export_and_import_files() {
    let source = spawn_app(Kind::Sqlite).await;
    fill(&source).await;
    let (_, source_db) = source.stop().await;
    let target_db = TestDatabase::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.ndjson");
    let junction = |db: &TestDatabase| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_junction"));
        command.current_dir(dir.path()).env("JUNCTION_STORE__URL", &db.url);
        command
    };
    let export = junction(&source_db).args(["export", "--all", "--output"]).arg(&file).output().unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    assert!(String::from_utf8_lossy(&export.stderr).contains("exported 3 stores, 10 events"));
    let one = junction(&source_db).args(["export", "--store", "pocket:notes", "--format", "ndjson"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&one.stdout).lines().count(), 1 + 1 + 5);
    let import = junction(&target_db).arg("import").arg(&file).output().unwrap();
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    assert!(String::from_utf8_lossy(&import.stderr).contains("imported 3 stores, 10 events"));
    let again = junction(&target_db).arg("import").arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("3 stores already held the same history"));
    let missing = junction(&source_db).args(["export", "--store", "pocket:nope"]).output().unwrap();
    assert!(!missing.status.success());
}

/// A store that holds no event (a LiveStore store connected to but never written) keeps its
/// backend id through export and import, and importing it again changes nothing: it used to get a
/// new backend id, and to count as imported on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_keeps_its_backend_id_and_is_imported_once() {
    let source = spawn_app(Kind::Sqlite).await;
    let empty = StoreKey::new(Protocol::LiveStore, "connected-never-written").unwrap();
    source.log.store_id(&empty).await.unwrap();
    let original = source.log.info(&empty).await.unwrap().backend_id;
    let mut export = Vec::new();
    backup::export(&source.log, &[], &mut export).await.unwrap();
    for kind in [Kind::Sqlite, Kind::Postgres] {
        let target = spawn_app(kind).await;
        let first = backup::import(&target.log, &export[..], false).await.unwrap();
        assert_eq!((first.stores, first.unchanged), (1, 0), "{kind:?}");
        assert_eq!(target.log.info(&empty).await.unwrap().backend_id, original, "{kind:?}");
        let again = backup::import(&target.log, &export[..], false).await.unwrap();
        assert_eq!((again.stores, again.unchanged), (0, 1), "{kind:?}");
        target.stop().await;
    }
    source.stop().await;
}
