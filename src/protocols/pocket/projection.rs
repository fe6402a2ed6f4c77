//! The server's view of a collection's documents, as a projection of its event log, and the
//! decision about each pushed change. Pure: no I/O, no clock.
//!
//! Every accepted change is one event of the collection's store. Folding those events in seq
//! order with [`Projection::apply`] gives the same state whether it happens live, after a
//! restart (the whole log is read again) or after another instance appended (the new events are
//! read): that is what makes the state survive restarts and stay right on a shared database.
//!
//! Per document the projection keeps only what deciding needs: the current `_rev`, `_vclock`,
//! `_updatedAt`, whether it is deleted, and which event holds its body (bodies stay in the log
//! and are read only when a conflict must show the server's copy). Per collection it keeps a set
//! of 64-bit fingerprints of every `(documentId, _rev)` ever stored, which is what makes a
//! repeated change a no-op even after the document moved on (the real client pushes every queued
//! change again and again, so duplicates are normal).
//!
//! How a pushed change is decided ([`decide`]):
//! 1. Its `(documentId, _rev)` (for a delete: the `_rev` it deleted) is already in the log →
//!    **skip**: nothing is written, nothing is reported.
//! 2. The server has no such document → **apply**.
//! 3. A delete of a deleted document → **skip**. An insert onto a tombstone (with a `_rev` the
//!    log has never seen) → **apply**: the id is being used again.
//! 4. Otherwise the change's document (for a delete: the tombstone the client keeps, rebuilt
//!    from `previousDocument`) is compared with the server's copy by the conflict rules: if the
//!    server's copy already includes it (its clock dominates, or its `_rev` generation is higher
//!    without clocks) → **skip** (a stale re-push); if the change includes the server's copy →
//!    **apply**; if they are concurrent → the collection's [`ConflictStrategy`] picks the
//!    winner, and when the server's copy wins the change is **rejected** and reported.
//!
//! Step 4 is stricter than the reference, which applies a dominated document (a regression) and
//! never checks deletes; both are consequences of pushes that repeat every queued change.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::change::{ChangeEvent, Operation};
use super::conflict::{self, Strategy, VClockOrder, compare_vclocks};
use super::document::{DocumentMeta, VClock, parse_rev};

/// How a collection settles concurrent writes, from `protocols.pocket.conflict_strategies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictStrategy {
    ServerWins,
    ClientWins,
    #[default]
    LastWriteWins,
    /// Field by field (the client's `merge` strategy); falls back to last-write-wins when a side
    /// is deleted.
    Merge,
}

impl ConflictStrategy {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "server-wins" => Some(Self::ServerWins),
            "client-wins" => Some(Self::ClientWins),
            "last-write-wins" => Some(Self::LastWriteWins),
            "merge" => Some(Self::Merge),
            _ => None,
        }
    }
}

/// Where a document's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// In the `document` of the change stored at this seq.
    InLog(u64),
    /// A delete that carried `document: null`: the body is rebuilt from the state
    /// ([`DocState::tombstone_body`]).
    Tombstone,
}

/// What the server knows about one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocState {
    pub rev: Option<String>,
    pub vclock: Option<VClock>,
    pub updated_at: Option<f64>,
    pub deleted: bool,
    pub body: Body,
}

impl DocState {
    fn from_meta(meta: DocumentMeta, deleted: bool, body: Body) -> DocState {
        DocState { rev: meta.rev, vclock: meta.vclock, updated_at: meta.updated_at, deleted, body }
    }

    fn meta(&self) -> DocumentMeta {
        DocumentMeta {
            id: None,
            rev: self.rev.clone(),
            deleted: Some(self.deleted),
            created_at: None,
            updated_at: self.updated_at,
            vclock: self.vclock.clone(),
        }
    }

    /// The body of a tombstone that has no document in the log: the system fields the client's
    /// own tombstone has, without user fields.
    pub fn tombstone_body(&self, document_id: &str) -> Box<RawValue> {
        let mut body = Map::new();
        body.insert("_id".into(), Value::from(document_id));
        if let Some(rev) = &self.rev {
            body.insert("_rev".into(), Value::from(rev.as_str()));
        }
        body.insert("_deleted".into(), Value::Bool(true));
        if let Some(updated_at) = self.updated_at.and_then(serde_json::Number::from_f64) {
            body.insert("_updatedAt".into(), Value::Number(updated_at));
        }
        if let Some(vclock) = &self.vclock {
            body.insert("_vclock".into(), serde_json::to_value(vclock).expect("a clock serializes"));
        }
        serde_json::value::to_raw_value(&body).expect("a map serializes")
    }
}

/// The state `change` leaves its document in, given the state before it (`prior`).
///
/// A delete without a document leaves the tombstone the real client keeps: the deleted
/// version (`previousDocument`, else the server's copy) with the deleter's clock entry plus one,
/// `_updatedAt` = the change's timestamp, and no `_rev` (the client's new `_rev` is random and
/// never sent).
pub fn next_state(prior: Option<&DocState>, change: &ChangeEvent, node_id: &str, seq: u64) -> DocState {
    let deleting = change.operation == Operation::Delete;
    if let Some(Ok(meta)) = change.document_meta() {
        let deleted = deleting || meta.is_deleted();
        return DocState::from_meta(meta, deleted, Body::InLog(seq));
    }
    let deleted_version = change
        .previous_document
        .as_deref()
        .and_then(|p| DocumentMeta::parse(p, "previousDocument").ok())
        .map(|meta| DocState::from_meta(meta, false, Body::Tombstone))
        .or_else(|| prior.cloned());
    let vclock = deleted_version.as_ref().and_then(|v| v.vclock.clone()).map(|mut clock| {
        if !node_id.is_empty() {
            *clock.entry(node_id.to_owned()).or_insert(0) += 1;
        }
        clock
    });
    DocState {
        rev: None,
        vclock,
        updated_at: change.timestamp.as_ref().and_then(serde_json::Number::as_f64),
        deleted: true,
        body: Body::Tombstone,
    }
}

/// The fingerprints a change is known by: its document's `_rev`, or for a delete without a
/// document the `_rev` it deleted. `None` when it has no `_rev` to go by.
fn fingerprint(change: &ChangeEvent) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    change.document_id.hash(&mut hasher);
    match change.document_meta() {
        Some(Ok(meta)) => {
            (0u8, meta.rev?).hash(&mut hasher);
        }
        Some(Err(_)) => return None,
        None => {
            let previous = change.previous_document.as_deref()?;
            let rev = DocumentMeta::parse(previous, "previousDocument").ok()?.rev?;
            (1u8, rev).hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

/// What to do with one pushed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store it as pushed.
    Apply,
    /// Store it with its document replaced by the field-by-field merge with the server's copy.
    Merge,
    /// Already stored, or older than what is stored: nothing to do, nothing to report.
    Skip,
    /// The server's copy wins: not stored, reported as a conflict.
    Reject,
}

/// The order of two versions of one document by the conflict rules, seen from `incoming`.
fn order(incoming: &DocState, server: &DocState) -> VClockOrder {
    if let (Some(a), Some(b)) = (&incoming.vclock, &server.vclock) {
        return compare_vclocks(a, b);
    }
    match (&incoming.rev, &server.rev) {
        (None, None) => VClockOrder::After,
        (Some(_), None) | (None, Some(_)) => VClockOrder::Concurrent,
        (Some(a), Some(b)) => match (parse_rev(a), parse_rev(b)) {
            (Some((na, _)), Some((nb, _))) if na < nb => VClockOrder::Before,
            (Some((na, _)), Some((nb, _))) if na == nb => VClockOrder::Concurrent,
            // A higher generation, or revs the conflict rules cannot compare (no conflict there): newer.
            _ => VClockOrder::After,
        },
    }
}

/// Decides one pushed change against the server's state of its document (see the module docs).
pub fn decide(
    server: Option<&DocState>,
    change: &ChangeEvent,
    node_id: &str,
    already_stored: bool,
    strategy: ConflictStrategy,
) -> Verdict {
    if already_stored {
        return Verdict::Skip;
    }
    let Some(server) = server else { return Verdict::Apply };
    let incoming = next_state(Some(server), change, node_id, 0);
    if incoming.deleted && server.deleted {
        return Verdict::Skip;
    }
    if server.deleted && change.operation == Operation::Insert {
        return Verdict::Apply;
    }
    match order(&incoming, server) {
        VClockOrder::Before => Verdict::Skip,
        VClockOrder::After => Verdict::Apply,
        VClockOrder::Concurrent => match strategy {
            ConflictStrategy::ServerWins => Verdict::Reject,
            ConflictStrategy::ClientWins => Verdict::Apply,
            ConflictStrategy::Merge if !incoming.deleted && !server.deleted => Verdict::Merge,
            ConflictStrategy::LastWriteWins | ConflictStrategy::Merge => {
                match conflict::resolve(Strategy::LastWriteWins, &incoming.meta(), &server.meta()) {
                    conflict::Winner::Local => Verdict::Apply,
                    conflict::Winner::Remote => Verdict::Reject,
                }
            }
        },
    }
}

/// The documents of one collection as of `head`.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    docs: HashMap<String, DocState>,
    stored: HashSet<u64>,
    head: u64,
}

impl Projection {
    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn get(&self, document_id: &str) -> Option<&DocState> {
        self.docs.get(document_id)
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Folds in the change stored at `seq` (by the client `node_id`).
    pub fn apply(&mut self, seq: u64, change: &ChangeEvent, node_id: &str) {
        let next = next_state(self.docs.get(&change.document_id), change, node_id, seq);
        if let Some(fingerprint) = fingerprint(change) {
            self.stored.insert(fingerprint);
        }
        self.docs.insert(change.document_id.clone(), next);
        self.head = seq;
    }

    /// Moves the head past a stored event that is not a change (it could not be decoded).
    pub fn skip(&mut self, seq: u64) {
        self.head = seq;
    }

    /// A tentative continuation of this projection, for deciding a group of pushes before
    /// their events are committed.
    pub fn tentative(&self) -> Tentative<'_> {
        Tentative { base: self, docs: HashMap::new(), stored: HashSet::new(), head: self.head }
    }

    /// Takes in what a tentative continuation decided, once its events are committed.
    pub fn commit(&mut self, docs: HashMap<String, DocState>, stored: HashSet<u64>, head: u64) {
        self.docs.extend(docs);
        self.stored.extend(stored);
        self.head = head;
    }
}

/// A projection plus changes not yet committed.
pub struct Tentative<'a> {
    base: &'a Projection,
    docs: HashMap<String, DocState>,
    stored: HashSet<u64>,
    head: u64,
}

impl Tentative<'_> {
    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn get(&self, document_id: &str) -> Option<&DocState> {
        self.docs.get(document_id).or_else(|| self.base.get(document_id))
    }

    pub fn decide(&self, change: &ChangeEvent, node_id: &str, strategy: ConflictStrategy) -> Verdict {
        let already_stored =
            fingerprint(change).is_some_and(|f| self.stored.contains(&f) || self.base.stored.contains(&f));
        decide(self.get(&change.document_id), change, node_id, already_stored, strategy)
    }

    /// Takes `change` as the next event (seq = head + 1); returns that seq.
    pub fn apply(&mut self, change: &ChangeEvent, node_id: &str) -> u64 {
        let seq = self.head + 1;
        let next = next_state(self.get(&change.document_id), change, node_id, seq);
        if let Some(fingerprint) = fingerprint(change) {
            self.stored.insert(fingerprint);
        }
        self.docs.insert(change.document_id.clone(), next);
        self.head = seq;
        seq
    }

    /// What [`Projection::commit`] takes.
    pub fn into_parts(self) -> (HashMap<String, DocState>, HashSet<u64>, u64) {
        (self.docs, self.stored, self.head)
    }
}

/// The client's `merge` strategy without a custom function, run where the server's copy is `remote` and the pushed
/// document is `local`, with the pushed `previousDocument` as the base when there is one:
/// user fields (not `_`-prefixed) come from the side that changed them since the base, else from
/// the newer document (`_updatedAt`; a tie goes to the pushed one); system fields come from the
/// newer document; clocks merge entry by entry (max); `_updatedAt` is `now_ms`; the result gets a
/// new `_rev` one generation past both (`rev_suffix` after the dash), so that both writers see
/// it as newer than what they had.
///
/// `None` when either body is not a JSON object.
pub fn merge_documents(
    local: &RawValue,
    remote: &RawValue,
    base: Option<&RawValue>,
    now_ms: u64,
    rev_suffix: &str,
) -> Option<Box<RawValue>> {
    let object = |raw: &RawValue| match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let (local, remote) = (object(local)?, object(remote)?);
    let base = base.and_then(object);
    let updated = |doc: &Map<String, Value>| doc.get("_updatedAt").and_then(Value::as_f64).unwrap_or(0.0);
    let local_newer = updated(&local) >= updated(&remote);
    let (newer, older) = if local_newer { (&local, &remote) } else { (&remote, &local) };

    let mut merged = older.clone();
    merged.extend(newer.clone());
    let keys: Vec<&String> = local.keys().chain(remote.keys()).filter(|k| !k.starts_with('_')).collect();
    for key in keys {
        let from_newer = newer.get(key).or_else(|| older.get(key));
        let value = match &base {
            Some(base) => {
                let local_changed = local.get(key) != base.get(key);
                let remote_changed = remote.get(key) != base.get(key);
                match (local_changed, remote_changed) {
                    (true, false) => local.get(key),
                    (false, true) => remote.get(key),
                    _ => from_newer,
                }
            }
            None => from_newer,
        };
        match value {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }

    let clock = |doc: &Map<String, Value>| -> VClock {
        doc.get("_vclock").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    };
    let mut vclock = clock(&local);
    for (node, counter) in clock(&remote) {
        let entry = vclock.entry(node).or_insert(0);
        *entry = (*entry).max(counter);
    }
    if !vclock.is_empty() {
        merged.insert("_vclock".into(), serde_json::to_value(vclock).expect("a clock serializes"));
    }
    let generation =
        |doc: &Map<String, Value>| doc.get("_rev").and_then(Value::as_str).and_then(parse_rev).map_or(0.0, |(n, _)| n);
    let next_generation = generation(&local).max(generation(&remote)) + 1.0;
    merged.insert("_rev".into(), Value::from(format!("{next_generation}-{rev_suffix}")));
    merged.insert("_updatedAt".into(), Value::from(now_ms));
    serde_json::value::to_raw_value(&merged).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocols::pocket::change::decode_change;

    /// The configuration checks names against its own list: each must parse here.
    #[test]
    fn every_configurable_strategy_name_parses() {
        for name in crate::config::POCKET_CONFLICT_STRATEGIES {
            assert!(ConflictStrategy::from_name(name).is_some(), "{name}");
        }
    }

    fn change(value: Value) -> ChangeEvent {
        let raw = serde_json::value::to_raw_value(&value).unwrap();
        decode_change(&raw, "change").unwrap()
    }

    fn insert(id: &str, rev: &str, clock: Value, updated: u64) -> ChangeEvent {
        change(json!({"operation": "insert", "documentId": id,
            "document": {"_id": id, "_rev": rev, "_updatedAt": updated, "_vclock": clock, "v": rev}}))
    }

    fn update(id: &str, rev: &str, clock: Value, updated: u64, previous: Value) -> ChangeEvent {
        change(json!({"operation": "update", "documentId": id,
            "document": {"_id": id, "_rev": rev, "_updatedAt": updated, "_vclock": clock, "v": rev},
            "previousDocument": previous}))
    }

    fn delete(id: &str, previous: Value, at: u64) -> ChangeEvent {
        change(json!({"operation": "delete", "documentId": id, "document": null,
            "previousDocument": previous, "timestamp": at}))
    }

    fn decide_in(p: &Projection, c: &ChangeEvent, node: &str, s: ConflictStrategy) -> Verdict {
        p.tentative().decide(c, node, s)
    }

    const LWW: ConflictStrategy = ConflictStrategy::LastWriteWins;

    #[test]
    fn new_documents_apply_and_repeats_are_skipped() {
        let mut p = Projection::default();
        let a = insert("a", "1-x", json!({"A": 1}), 10);
        assert_eq!(decide_in(&p, &a, "A", LWW), Verdict::Apply);
        p.apply(1, &a, "A");
        assert_eq!(decide_in(&p, &a, "A", LWW), Verdict::Skip);
        assert_eq!(p.get("a").unwrap().body, Body::InLog(1));
        assert_eq!(p.head(), 1);
    }

    #[test]
    fn a_stale_repush_is_skipped_even_after_the_document_moved_on() {
        let mut p = Projection::default();
        let ins = insert("a", "1-x", json!({"A": 1}), 10);
        let upd = update("a", "2-y", json!({"A": 2}), 20, json!({"_id": "a", "_rev": "1-x", "_vclock": {"A": 1}}));
        p.apply(1, &ins, "A");
        p.apply(2, &upd, "A");
        assert_eq!(decide_in(&p, &ins, "A", LWW), Verdict::Skip);
        assert_eq!(decide_in(&p, &upd, "A", LWW), Verdict::Skip);
        // Same for documents without clocks: a lower generation is older.
        let mut q = Projection::default();
        q.apply(1, &change(json!({"operation": "insert", "documentId": "b", "document": {"_rev": "3-z"}})), "");
        let old = change(json!({"operation": "update", "documentId": "b", "document": {"_rev": "2-q"}}));
        assert_eq!(decide_in(&q, &old, "", LWW), Verdict::Skip);
    }

    #[test]
    fn deletes_leave_a_tombstone_that_catches_stale_updates() {
        let mut p = Projection::default();
        let ins = insert("a", "1-x", json!({"A": 1}), 10);
        p.apply(1, &ins, "A");
        let del = delete("a", json!({"_id": "a", "_rev": "1-x", "_vclock": {"A": 1}, "_updatedAt": 10}), 30);
        assert_eq!(decide_in(&p, &del, "A", LWW), Verdict::Apply);
        p.apply(2, &del, "A");
        let tomb = p.get("a").unwrap();
        assert!(tomb.deleted);
        assert_eq!(tomb.vclock, Some([("A".to_owned(), 2)].into()));
        assert_eq!(tomb.updated_at, Some(30.0));
        // The delete again, and the insert again: both no-ops.
        assert_eq!(decide_in(&p, &del, "A", LWW), Verdict::Skip);
        assert_eq!(decide_in(&p, &ins, "A", LWW), Verdict::Skip);
        // B edited rev 1 without seeing the delete: concurrent with the tombstone.
        let stale = update("a", "2-b", json!({"A": 1, "B": 1}), 20, json!({"_rev": "1-x"}));
        assert_eq!(decide_in(&p, &stale, "B", LWW), Verdict::Reject, "the later delete wins");
        assert_eq!(decide_in(&p, &stale, "B", ConflictStrategy::ClientWins), Verdict::Apply);
        assert_eq!(decide_in(&p, &stale, "B", ConflictStrategy::Merge), Verdict::Reject, "merge falls back to LWW");
        let newer = update("a", "2-b", json!({"A": 1, "B": 1}), 40, json!({"_rev": "1-x"}));
        assert_eq!(decide_in(&p, &newer, "B", LWW), Verdict::Apply, "a newer edit resurrects");
        // The tombstone as a body: system fields only.
        let body: Value = serde_json::from_str(tomb.tombstone_body("a").get()).unwrap();
        assert_eq!(body, json!({"_id": "a", "_deleted": true, "_updatedAt": 30.0, "_vclock": {"A": 2}}));
    }

    #[test]
    fn an_id_can_be_inserted_again_after_a_delete() {
        let mut p = Projection::default();
        p.apply(1, &insert("a", "1-x", json!({"A": 1}), 10), "A");
        p.apply(2, &delete("a", json!({"_rev": "1-x", "_vclock": {"A": 1}}), 20), "A");
        let again = insert("a", "1-y", json!({"A": 1}), 30);
        assert_eq!(decide_in(&p, &again, "A", LWW), Verdict::Apply);
        p.apply(3, &again, "A");
        assert!(!p.get("a").unwrap().deleted);
        // The first incarnation's insert, pushed once more, stays a no-op.
        assert_eq!(decide_in(&p, &insert("a", "1-x", json!({"A": 1}), 10), "A", LWW), Verdict::Skip);
    }

    #[test]
    fn concurrent_updates_follow_the_strategy() {
        let mut p = Projection::default();
        p.apply(1, &insert("a", "1-x", json!({"A": 1}), 10), "A");
        p.apply(2, &update("a", "2-a", json!({"A": 2}), 30, json!({"_rev": "1-x"})), "A");
        let older = update("a", "2-b", json!({"A": 1, "B": 1}), 20, json!({"_rev": "1-x"}));
        let newer = update("a", "2-c", json!({"A": 1, "B": 1}), 40, json!({"_rev": "1-x"}));
        assert_eq!(decide_in(&p, &older, "B", ConflictStrategy::ServerWins), Verdict::Reject);
        assert_eq!(decide_in(&p, &newer, "B", ConflictStrategy::ServerWins), Verdict::Reject);
        assert_eq!(decide_in(&p, &older, "B", ConflictStrategy::ClientWins), Verdict::Apply);
        assert_eq!(decide_in(&p, &older, "B", LWW), Verdict::Reject);
        assert_eq!(decide_in(&p, &newer, "B", LWW), Verdict::Apply);
        assert_eq!(decide_in(&p, &older, "B", ConflictStrategy::Merge), Verdict::Merge);
        // An edit that saw the server's version is no conflict under any strategy.
        let after = update("a", "3-b", json!({"A": 2, "B": 1}), 5, json!({"_rev": "2-a"}));
        assert_eq!(decide_in(&p, &after, "B", ConflictStrategy::ServerWins), Verdict::Apply);
    }

    #[test]
    fn a_delete_of_a_version_the_server_moved_past_is_a_conflict() {
        let mut p = Projection::default();
        p.apply(1, &insert("a", "1-x", json!({"A": 1}), 10), "A");
        p.apply(2, &update("a", "2-b", json!({"A": 1, "B": 1}), 30, json!({"_rev": "1-x"})), "B");
        let del = delete("a", json!({"_rev": "1-x", "_vclock": {"A": 1}}), 20);
        assert_eq!(decide_in(&p, &del, "A", LWW), Verdict::Reject, "the newer edit wins");
        assert_eq!(decide_in(&p, &del, "A", ConflictStrategy::ClientWins), Verdict::Apply);
        let later = delete("a", json!({"_rev": "1-x", "_vclock": {"A": 1}}), 40);
        assert_eq!(decide_in(&p, &later, "A", LWW), Verdict::Apply);
    }

    #[test]
    fn tentative_changes_see_each_other_and_commit_together() {
        let mut p = Projection::default();
        let mut t = p.tentative();
        let a = insert("a", "1-x", json!({"A": 1}), 10);
        assert_eq!(t.decide(&a, "A", LWW), Verdict::Apply);
        assert_eq!(t.apply(&a, "A"), 1);
        assert_eq!(t.decide(&a, "A", LWW), Verdict::Skip);
        let (docs, stored, head) = t.into_parts();
        assert!(p.get("a").is_none());
        p.commit(docs, stored, head);
        assert_eq!((p.head(), p.len()), (1, 1));
    }

    #[test]
    fn merge_takes_each_field_from_the_side_that_changed_it() {
        let raw = |v: Value| serde_json::value::to_raw_value(&v).unwrap();
        let base = raw(json!({"_id": "a", "_rev": "1-x", "title": "t", "done": false, "n": 1}));
        let local = raw(
            json!({"_id": "a", "_rev": "2-l", "title": "mine", "done": false, "n": 1, "_updatedAt": 20, "_vclock": {"L": 1}}),
        );
        let remote =
            raw(json!({"_id": "a", "_rev": "2-r", "title": "t", "done": true, "_updatedAt": 30, "_vclock": {"R": 2}}));
        let merged = merge_documents(&local, &remote, Some(&base), 99, "m").unwrap();
        let merged: Value = serde_json::from_str(merged.get()).unwrap();
        assert_eq!(
            merged,
            json!({"_id": "a", "_rev": "3-m", "title": "mine", "done": true, "_updatedAt": 99, "_vclock": {"L": 1, "R": 2}})
        );
        // Without a base the newer document wins each field.
        let merged = merge_documents(&local, &remote, None, 99, "m").unwrap();
        let merged: Value = serde_json::from_str(merged.get()).unwrap();
        assert_eq!(merged["title"], "t");
        assert_eq!(merged["n"], 1, "a field only one side has is kept");
        assert!(merge_documents(&raw(json!([])), &remote, None, 1, "m").is_none());
    }
}
