//! The shared event log's behaviour, on SQLite and on Postgres alike.

use std::collections::HashSet;
use std::time::Duration;

use junction::eventlog::{AppendBatch, AppendError, Protocol, SeqNum, StoreKey, SubscriptionEnded};

use crate::helpers::{
    CommitterHold, Kind, TestDatabase, at_head, body, checked, key, spawn_app, spawn_app_with, test_config,
};
use crate::on_both_backends;

on_both_backends!(
    append_read_and_head,
    stale_expected_head_is_rejected_with_the_current_head,
    concurrent_appends_on_one_head_accept_exactly_one,
    sparse_seqs_are_kept,
    invalid_batches_write_nothing,
    stores_are_isolated_whatever_their_names,
    change_log_positions_increase_across_stores,
    subscribe_delivers_catch_up_and_live_without_gap_or_duplicate,
    subscribers_from_every_cursor_see_the_same_suffix,
    reset_removes_events_and_renews_the_backend_id,
    restart_keeps_everything,
    slow_subscriber_is_closed_not_skipped,
    shutdown_commits_every_queued_append,
    contenders_in_one_commit_group_each_see_the_head_the_previous_left,
    a_live_batch_beyond_the_cursor_sends_the_subscriber_back_to_storage,
    a_cursor_inside_a_live_batch_gets_only_what_follows_it,
);

async fn append_read_and_head(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("todos");
    assert_eq!(app.log.head(&store).await.unwrap(), SeqNum::ROOT);
    assert!(app.log.read(&store, SeqNum::ROOT, 10).await.unwrap().is_empty());

    let appended = app.log.append(&store, checked(0, &[1, 2, 3])).await.unwrap();
    assert_eq!((appended.first_seq, appended.last_seq), (SeqNum(1), SeqNum(3)));
    assert_eq!(app.log.head(&store).await.unwrap(), SeqNum(3));

    let events = app.log.read(&store, SeqNum::ROOT, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(events.iter().map(|e| e.parent_seq.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(events[0].body, body("todoCreated-v1", r#"{"id":1}"#));
    assert!(events.iter().all(|e| e.created_at == appended.created_at && e.change_pos == appended.change_pos));
    assert!(appended.created_at.ends_with('Z') && appended.created_at.len() == 24, "{}", appended.created_at);

    let page = app.log.read(&store, SeqNum(1), 1).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [2]);

    let at_head = app.log.append(&store, at_head(2)).await.unwrap();
    assert_eq!((at_head.first_seq, at_head.last_seq), (SeqNum(4), SeqNum(5)));
    assert!(at_head.change_pos > appended.change_pos);
    let tail = app.log.read(&store, SeqNum(3), 10).await.unwrap();
    assert_eq!(tail.iter().map(|e| (e.seq.0, e.parent_seq.0)).collect::<Vec<_>>(), [(4, 3), (5, 4)]);
    assert_eq!(tail[1].body.args.get(), r#"{"i":1}"#);

    let info = app.log.info(&store).await.unwrap();
    assert_eq!((info.head, info.event_count), (SeqNum(5), 5));
    app.stop().await;
}

async fn stale_expected_head_is_rejected_with_the_current_head(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("s");
    app.log.append(&store, checked(0, &[1, 2])).await.unwrap();
    match app.log.append(&store, checked(1, &[3])).await {
        Err(AppendError::HeadMismatch { head }) => assert_eq!(head, SeqNum(2)),
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    match app.log.append(&store, checked(7, &[8])).await {
        Err(AppendError::HeadMismatch { head }) => assert_eq!(head, SeqNum(2)),
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    let info = app.log.info(&store).await.unwrap();
    assert_eq!((info.head, info.event_count), (SeqNum(2), 2));
    app.stop().await;
}

async fn concurrent_appends_on_one_head_accept_exactly_one(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("race");
    app.log.append(&store, checked(0, &[1])).await.unwrap();
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let log = app.log.clone();
            let store = store.clone();
            // Each contender pushes a different two-event batch on the same expected head.
            tokio::spawn(async move { log.append(&store, checked(1, &[2 + i * 10, 3 + i * 10])).await })
        })
        .collect();
    let mut accepted = 0;
    let mut rejected_heads = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(AppendError::HeadMismatch { head }) => rejected_heads.push(head),
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(rejected_heads.len(), 7);
    let events = app.log.read(&store, SeqNum::ROOT, 100).await.unwrap();
    assert_eq!(events.len(), 3, "the store holds the first event plus exactly one batch");
    let winner_head = events[2].seq;
    assert!(rejected_heads.iter().all(|h| *h == winner_head));
    assert_eq!(events[1].seq.0 + 1, events[2].seq.0);
    app.stop().await;
}

async fn sparse_seqs_are_kept(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("sparse");
    app.log.append(&store, checked(0, &[20000])).await.unwrap();
    app.log.append(&store, checked(20000, &[20005, 20010])).await.unwrap();
    let events = app.log.read(&store, SeqNum::ROOT, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.seq.0, e.parent_seq.0)).collect::<Vec<_>>(),
        [(20000, 0), (20005, 20000), (20010, 20005)]
    );
    assert_eq!(app.log.read(&store, SeqNum(20004), 10).await.unwrap().len(), 2);
    assert_eq!(app.log.head(&store).await.unwrap(), SeqNum(20010));
    let at_head = app.log.append(&store, at_head(1)).await.unwrap();
    assert_eq!(at_head.first_seq, SeqNum(20011));
    app.stop().await;
}

async fn invalid_batches_write_nothing(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("invalid");
    app.log.append(&store, checked(0, &[1])).await.unwrap();
    let nul = AppendBatch::AtHead { events: vec![body("bad\0name", "null")] };
    for batch in [checked(1, &[]), checked(1, &[3, 2]), checked(1, &[1]), checked(1, &[u64::MAX]), nul] {
        assert!(matches!(app.log.append(&store, batch).await, Err(AppendError::InvalidBatch(_))));
    }
    let info = app.log.info(&store).await.unwrap();
    assert_eq!((info.head, info.event_count), (SeqNum(1), 1));
    app.stop().await;
}

async fn stores_are_isolated_whatever_their_names(kind: Kind) {
    let app = spawn_app(kind).await;
    let names = ["a", "a-b", "a_b", "a.b", "'; DROP TABLE stores; --", "\"quoted\"", "ünïcødé 🚀", &"x".repeat(500)];
    for (i, name) in names.iter().enumerate() {
        let seqs: Vec<u64> = (1..=i as u64 + 1).collect();
        app.log.append(&key(name), checked(0, &seqs)).await.unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        assert_eq!(app.log.head(&key(name)).await.unwrap(), SeqNum(i as u64 + 1), "store {name:?}");
        assert_eq!(app.log.read(&key(name), SeqNum::ROOT, 1000).await.unwrap().len(), i + 1);
    }
    // The same name under another protocol is another store.
    let synckit = StoreKey::new(Protocol::SyncKit, "a").unwrap();
    assert_eq!(app.log.head(&synckit).await.unwrap(), SeqNum::ROOT);
    app.log.append(&synckit, at_head(3)).await.unwrap();
    assert_eq!(app.log.head(&key("a")).await.unwrap(), SeqNum(1));
    app.stop().await;
}

async fn change_log_positions_increase_across_stores(kind: Kind) {
    let app = spawn_app(kind).await;
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let log = app.log.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for _ in 0..25 {
                    positions.push(log.append(&key(&format!("store-{w}")), at_head(2)).await.unwrap().change_pos);
                }
                positions
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let positions = task.await.unwrap();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions rise within a writer");
        all.extend(positions);
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), 100, "every batch has its own position");
    app.stop().await;
}

async fn subscribe_delivers_catch_up_and_live_without_gap_or_duplicate(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.store.catch_up_page = 7; // many catch-up pages, so appends race with them
    let app = spawn_app_with(config, db).await;
    let store = key("stream");
    for _ in 0..20 {
        app.log.append(&store, at_head(3)).await.unwrap();
    }
    const TOTAL: u64 = 60 + 200 * 2;
    let writer = {
        let log = app.log.clone();
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                log.append(&store, at_head(2)).await.unwrap();
            }
        })
    };
    let mut subscribers = Vec::new();
    for start in [0u64, 5, 59] {
        let mut subscription = app.log.subscribe(&store, SeqNum(start)).await.unwrap();
        subscribers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while subscription.cursor() < SeqNum(TOTAL) {
                let events = tokio::time::timeout(Duration::from_secs(20), subscription.next())
                    .await
                    .expect("a delivery within 20 s")
                    .unwrap();
                seen.extend(events.iter().map(|e| e.seq.0));
            }
            (start, seen)
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    for subscriber in subscribers {
        let (start, seen) = subscriber.await.unwrap();
        let expected: Vec<u64> = (start + 1..=TOTAL).collect();
        assert_eq!(seen, expected, "subscriber from {start} saw a gap, a duplicate or a reordering");
    }
    app.stop().await;
}

async fn subscribers_from_every_cursor_see_the_same_suffix(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("suffix");
    app.log.append(&store, checked(0, &[10, 20, 30])).await.unwrap();
    app.log.append(&store, checked(30, &[40])).await.unwrap();
    for (after, expected) in [(0, vec![10, 20, 30, 40]), (15, vec![20, 30, 40]), (30, vec![40])] {
        let mut subscription = app.log.subscribe(&store, SeqNum(after)).await.unwrap();
        let mut seen = Vec::new();
        while subscription.cursor() < SeqNum(40) {
            seen.extend(subscription.next().await.unwrap().iter().map(|e| e.seq.0));
        }
        assert_eq!(seen, expected, "from {after}");
    }
    // A subscriber whose cursor sits inside a live batch gets only the part after it.
    let mut subscription = app.log.subscribe(&store, SeqNum(45)).await.unwrap();
    app.log.append(&store, checked(40, &[44, 46, 48])).await.unwrap();
    let events = subscription.next().await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [46, 48]);
    app.stop().await;
}

async fn reset_removes_events_and_renews_the_backend_id(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("to-reset");
    app.log.append(&store, checked(0, &[1, 2, 3])).await.unwrap();
    let before = app.log.info(&store).await.unwrap();
    let mut subscription = app.log.subscribe(&store, SeqNum::ROOT).await.unwrap();
    assert_eq!(subscription.next().await.unwrap().len(), 3);

    let after = app.log.reset(&store).await.unwrap();
    assert_ne!(after.backend_id, before.backend_id);
    assert_eq!((after.head, after.event_count), (SeqNum::ROOT, 0));
    assert!(app.log.read(&store, SeqNum::ROOT, 10).await.unwrap().is_empty());
    let ended = tokio::time::timeout(Duration::from_secs(5), subscription.next()).await.unwrap();
    assert!(matches!(ended, Err(SubscriptionEnded::Reset)), "{ended:?}");

    // The store starts over from ROOT, and the new id is stable.
    app.log.append(&store, checked(0, &[1])).await.unwrap();
    assert_eq!(app.log.info(&store).await.unwrap().backend_id, after.backend_id);
    app.stop().await;
}

async fn restart_keeps_everything(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("durable");
    app.log.append(&store, checked(0, &[1, 2])).await.unwrap();
    app.log.append(&StoreKey::new(Protocol::Pocket, "notes").unwrap(), at_head(4)).await.unwrap();
    let before = app.log.info(&store).await.unwrap();
    let events_before = app.log.read(&store, SeqNum::ROOT, 10).await.unwrap();

    let app = app.restart().await;
    let after = app.log.info(&store).await.unwrap();
    assert_eq!(after, before, "head, count and backend id survive the restart");
    assert_eq!(app.log.read(&store, SeqNum::ROOT, 10).await.unwrap(), events_before);
    assert_eq!(app.log.head(&StoreKey::new(Protocol::Pocket, "notes").unwrap()).await.unwrap(), SeqNum(4));
    // Positions keep rising after the restart.
    let next = app.log.append(&store, checked(2, &[3])).await.unwrap();
    assert!(next.change_pos > events_before[1].change_pos);
    app.stop().await;
}

async fn slow_subscriber_is_closed_not_skipped(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.limits.subscriber_queue = 4;
    let app = spawn_app_with(config, db).await;
    let store = key("slow");
    app.log.append(&store, at_head(1)).await.unwrap();
    let mut slow = app.log.subscribe(&store, SeqNum::ROOT).await.unwrap();
    assert_eq!(slow.next().await.unwrap().len(), 1);
    assert!(slow.is_live());
    let mut keeping_up = app.log.subscribe(&store, SeqNum(1)).await.unwrap();

    for i in 0..10u64 {
        app.log.append(&store, at_head(1)).await.unwrap();
        // The healthy subscriber reads as events come and is never closed.
        let events = keeping_up.next().await.unwrap();
        assert_eq!(events[0].seq, SeqNum(i + 2));
    }
    // The slow one gets exactly what was queued, in order, then a clear end.
    for expected in 2..=5 {
        assert_eq!(slow.next().await.unwrap()[0].seq, SeqNum(expected));
    }
    assert!(matches!(slow.next().await, Err(SubscriptionEnded::SlowConsumer)));
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"junction_slow_consumer_disconnects_total{reason="lagged"} 1"#), "{metrics}");
    app.stop().await;
}

on_both_backends!(a_subscriber_too_far_behind_in_bytes_is_closed_though_few_batches_wait);

/// `limits.subscriber_queue_bytes` closes a subscriber whose queued events pass it, however few
/// batches they are: what was queued comes first, in order, then the end.
async fn a_subscriber_too_far_behind_in_bytes_is_closed_though_few_batches_wait(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.limits.subscriber_queue = 1024;
    config.limits.subscriber_queue_bytes = 256 * 1024;
    let app = spawn_app_with(config, db).await;
    let store = key("heavy");
    let mut slow = app.log.subscribe(&store, SeqNum::ROOT).await.unwrap();
    app.log.append(&store, at_head(1)).await.unwrap();
    assert_eq!(slow.next().await.unwrap().len(), 1);
    assert!(slow.is_live());
    // Ten batches of 64 KB: 640 KB, more than twice the limit, and far fewer than 1,024 batches.
    for _ in 0..10 {
        let batch = AppendBatch::AtHead { events: vec![crate::helpers::large_body(64 * 1024)] };
        app.log.append(&store, batch).await.unwrap();
    }
    let mut received = Vec::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await.expect("an answer within 10 s") {
            Ok(events) => received.extend(events.iter().map(|e| e.seq.0)),
            Err(ended) => break ended,
        }
    };
    assert!(matches!(ended, SubscriptionEnded::SlowConsumer), "{ended:?}");
    // 256 KB hold three of the 64 KB batches, and a fourth does not fit.
    assert_eq!(received, [2, 3, 4], "what was queued, in order");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"junction_slow_consumer_disconnects_total{reason="lagged"} 1"#), "{metrics}");
    app.stop().await;
}

async fn shutdown_commits_every_queued_append(kind: Kind) {
    let app = spawn_app(kind).await;
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let log = app.log.clone();
            let started = started.clone();
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                while log.append(&key(&format!("w{w}")), at_head(1)).await.is_ok() {
                    acknowledged += 1;
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                acknowledged
            })
        })
        .collect();
    // Stop in the middle of the stream: once the writers have made progress (not after a fixed
    // time, which a loaded machine may not honour).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while started.load(std::sync::atomic::Ordering::Relaxed) <= 64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (config, db) = app.stop().await;
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.push(writer.await.unwrap());
    }
    assert!(acknowledged.iter().sum::<u64>() > 16, "the writers got going: {acknowledged:?}");
    let app = spawn_app_with(config, db).await;
    for (w, acked) in acknowledged.iter().enumerate() {
        let head = app.log.head(&key(&format!("w{w}"))).await.unwrap();
        // Every acknowledged append is stored, and nothing that was refused.
        assert_eq!(head.0, *acked, "writer {w}");
    }
    app.stop().await;
}

/// Two servers on one Postgres (each with its own pool and committer, as two processes would
/// have) race on one store: the row lock lets exactly one batch in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_two_servers_on_one_postgres_stay_serialized() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let a = spawn_app_with(test_config(&db), db.clone()).await;
    let b = spawn_app_with(test_config(&db), db.clone()).await;
    let store = key("shared");
    a.log.append(&store, checked(0, &[1])).await.unwrap();
    for round in 0..20u64 {
        let head = 1 + round * 2;
        let (left, right) = tokio::join!(
            a.log.append(&store, checked(head, &[head + 1, head + 2])),
            b.log.append(&store, checked(head, &[head + 1, head + 2])),
        );
        let accepted = [left.is_ok(), right.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(accepted, 1, "round {round}: {left:?} / {right:?}");
        let rejected = if left.is_ok() { right } else { left };
        assert!(matches!(rejected, Err(AppendError::HeadMismatch { head: h }) if h == SeqNum(head + 2)));
    }
    let events = b.log.read(&store, SeqNum::ROOT, 1000).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq.0).collect::<Vec<_>>(), (1..=41).collect::<Vec<_>>());
    // At-head appends from both servers interleave without losing or repeating a seq.
    tokio::join!(
        async {
            for _ in 0..25 {
                a.log.append(&store, at_head(1)).await.unwrap();
            }
        },
        async {
            for _ in 0..25 {
                b.log.append(&store, at_head(1)).await.unwrap();
            }
        }
    );
    let events = a.log.read(&store, SeqNum::ROOT, 1000).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq.0).collect::<Vec<_>>(), (1..=91).collect::<Vec<_>>());
    a.stop().await;
    b.stop().await;
}

/// `commit_group_size` observations of more than one request, from `/metrics`.
async fn groups_of_two_or_more(app: &crate::helpers::TestApp) -> u64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in /metrics"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    value("junction_commit_group_size_count") - value("junction_commit_group_size_bucket{le=\"1.0\"}")
}

/// Contenders for one head that end up in one commit group: the first wins, the second is
/// refused against the head the first left (not the head the transaction started with, which
/// would fork the store), and one that continues from the first is accepted.
async fn contenders_in_one_commit_group_each_see_the_head_the_previous_left(kind: Kind) {
    let app = spawn_app(kind).await;
    let (blocker, contended) = (key("blocker"), key("contended"));
    let blocker_id = app.log.store_id(&blocker).await.unwrap();
    app.log.store_id(&contended).await.unwrap();
    let before = groups_of_two_or_more(&app).await;
    let hold = CommitterHold::take(&app.db, blocker_id).await;
    let spawn_append = |store: junction::eventlog::StoreKey, batch: AppendBatch| {
        let log = app.log.clone();
        tokio::spawn(async move { log.append(&store, batch).await })
    };
    // The committer takes this one alone and waits for the hold; the rest queue behind it, in
    // the order sent (the pauses only keep that order).
    let first = spawn_append(blocker, at_head(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = spawn_append(contended.clone(), checked(0, &[1, 2]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = spawn_append(contended.clone(), checked(0, &[1]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = spawn_append(contended.clone(), checked(2, &[3]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    hold.release().await;
    first.await.unwrap().unwrap();
    assert_eq!(a.await.unwrap().unwrap().last_seq, SeqNum(2));
    match b.await.unwrap() {
        Err(AppendError::HeadMismatch { head }) => assert_eq!(head, SeqNum(2), "refused against the head A left"),
        other => panic!("the second contender for head 0 was not refused: {other:?}"),
    }
    assert_eq!(c.await.unwrap().unwrap().first_seq, SeqNum(3));
    let seqs: Vec<u64> = app.log.read(&contended, SeqNum::ROOT, 10).await.unwrap().iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(groups_of_two_or_more(&app).await > before, "the contenders never shared a commit group");
    app.stop().await;
}

/// A fan-out that loses one batch and delivers the next ones out of order, as a transport
/// between instances may: subscribers notice the gap and read storage, never skipping an event.
struct LossyFanOut {
    inner: junction::fanout::LocalFanOut,
    published: std::sync::Mutex<Vec<std::sync::Arc<junction::fanout::LiveMessage>>>,
}

impl junction::fanout::FanOut for LossyFanOut {
    fn publish(&self, message: std::sync::Arc<junction::fanout::LiveMessage>) {
        let mut published = self.published.lock().unwrap();
        published.push(message.clone());
        match published.len() {
            2 => {} // lost
            3 => {} // held back, delivered after the 4th
            4 => {
                self.inner.publish(message);
                self.inner.publish(published[2].clone());
            }
            _ => self.inner.publish(message),
        }
    }
    fn publish_ephemeral(&self, topic: &str, payload: bytes::Bytes) {
        self.inner.publish_ephemeral(topic, payload)
    }
    fn subscribe_ephemeral(&self, topic: &str) -> junction::fanout::EphemeralFeed {
        self.inner.subscribe_ephemeral(topic)
    }
}

async fn a_live_batch_beyond_the_cursor_sends_the_subscriber_back_to_storage(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let config = test_config(&db);
    let backend = junction::store::Backend::connect(&config.store).await.unwrap();
    backend.migrate().await.unwrap();
    let metrics = junction::metrics::Metrics::new();
    let hub = junction::fanout::Hub::new(64, 1 << 30, metrics.clone());
    let fanout = std::sync::Arc::new(LossyFanOut {
        inner: junction::fanout::LocalFanOut::new(hub.clone()),
        published: Default::default(),
    });
    let options = junction::eventlog::LogOptions { commit_max_requests: 64, catch_up_page: 100 };
    let log = junction::eventlog::EventLog::start(backend, options, hub, fanout, metrics);
    let store = key("lossy");
    log.append(&store, checked(0, &[1])).await.unwrap(); // published 1st, delivered
    let mut subscription = log.subscribe(&store, SeqNum(1)).await.unwrap();
    // Live before the appends, so that they come through the lossy feed.
    while !subscription.is_live() {
        let nothing = tokio::time::timeout(Duration::from_millis(100), subscription.next()).await;
        assert!(nothing.is_err(), "nothing is stored after 1 yet");
    }
    let mut seen = Vec::new();
    for (expected, seqs) in [(1, [2, 3]), (3, [4, 5]), (5, [6, 7]), (7, [8, 9])] {
        log.append(&store, checked(expected, &seqs)).await.unwrap(); // 2nd lost, 3rd and 4th swapped
    }
    while seen.last() != Some(&9) {
        let events = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.expect("events").unwrap();
        seen.extend(events.iter().map(|e| e.seq.0));
    }
    assert_eq!(seen, [2, 3, 4, 5, 6, 7, 8, 9]);
    log.shutdown().await;
}

/// A subscriber whose cursor lies inside a batch that arrives live gets only the events after
/// the cursor. Its storage read is over before the append, so the batch comes from the feed.
async fn a_cursor_inside_a_live_batch_gets_only_what_follows_it(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = key("inside");
    app.log.append(&store, checked(0, &[1, 2])).await.unwrap();
    let mut subscription = app.log.subscribe(&store, SeqNum(3)).await.unwrap();
    // Let the catch-up read find nothing after 3 and go live (waiting on the feed).
    while !subscription.is_live() {
        let nothing = tokio::time::timeout(Duration::from_millis(100), subscription.next()).await;
        assert!(nothing.is_err(), "nothing is stored after 3 yet");
    }
    app.log.append(&store, checked(2, &[3, 4, 5])).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.expect("events").unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, [4, 5]);
    app.stop().await;
}
