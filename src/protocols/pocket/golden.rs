//! Golden tests: every concrete JSON message we captured between the reference client and
//! server, decoded and re-encoded, plus bad input. Where a capture elided a value with `…`
//! (timestamps, bodies), a concrete value in the same form is filled in; those places are marked
//! `filled:`.
//!
//! Byte-for-byte comparisons are used for everything the server relays or builds (documents,
//! changes, checkpoints whose key order the captures show); parsed-JSON equality elsewhere.

use serde_json::Value;
use serde_json::value::RawValue;

use super::change::{ChangeEvent, Operation, decode_change};
use super::checkpoint::{Checkpoint, Sequences, decode_checkpoint};
use super::client::{
    ClientFrame, ClientMessage, DEFAULT_PULL_LIMIT, HttpRoute, Pull, decode_client_frame, decode_client_frame_bytes,
    decode_client_message, decode_http_body, peek_request_id,
};
use super::conflict::{Strategy, VClockOrder, Winner, compare_vclocks, detect_conflict, resolve};
use super::decode::{DecodeError, DecodeErrorKind};
use super::document::{DocumentMeta, VClock, parse_rev};
use super::server::{
    ChangesByCollection, Conflict, ErrorCode, ErrorMessage, PONG, PullResponse, PushResponse, ServerFrame,
    ServerMessage, decode_server_frame,
};

// ---------------------------------------------------------------------------------------------
// A captured session between the reference client and server, with `…` filled in.

/// `A =>` pull: captured in full.
const A_PULL: &str = r#"{"type":"pull","id":"mwr5uccr-nagj42","timestamp":1795311045387,"collections":["todos"],"checkpoint":{"id":"nodeA_1795311045375","sequences":{},"timestamp":0,"nodeId":"nodeA"},"limit":100}"#;

/// `A <=` pull-response. filled: both timestamps.
const A_PULL_RESPONSE: &str = r#"{"type":"pull-response","id":"mwr5uccr-nagj42","timestamp":1795311045390,"changes":{},"checkpoint":{"sequences":{"todos":0},"timestamp":1795311045390},"hasMore":false}"#;

/// The inserted document. filled: `_createdAt`, `_updatedAt`.
const T1_REV1: &str = r#"{"_id":"t1","title":"hello","_rev":"1-2tswmozt","_createdAt":1795311045394,"_updatedAt":1795311045394,"_vclock":{"nodeA":1}}"#;

/// `A =>` push of the insert. filled: message, change and checkpoint timestamps.
fn a_push_insert() -> String {
    format!(
        r#"{{"type":"push","id":"mwr5uccz-pyu5ef","timestamp":1795311045395,"collection":"todos","changes":[{}],"checkpoint":{{"id":"nodeA_1795311045375","sequences":{{"todos":0}},"timestamp":1795311045391,"nodeId":"nodeA"}}}}"#,
        insert_change()
    )
}

fn insert_change() -> String {
    format!(
        r#"{{"operation":"insert","documentId":"t1","document":{T1_REV1},"isFromSync":false,"timestamp":1795311045394,"sequence":1}}"#
    )
}

/// `A <=` push-response. filled: timestamps.
const A_PUSH_RESPONSE: &str = r#"{"type":"push-response","id":"mwr5uccz-pyu5ef","timestamp":1795311045396,"success":true,"checkpoint":{"sequences":{"todos":1},"timestamp":1795311045396}}"#;

/// `B <=` broadcast. filled: B's own last checkpoint.
const B_CHECKPOINT: &str =
    r#"{"id":"nodeB_1795311045380","sequences":{"todos":0},"timestamp":1795311045389,"nodeId":"nodeB"}"#;

fn b_broadcast() -> String {
    format!(
        r#"{{"type":"pull-response","id":"broadcast_1795311045396","timestamp":1795311045396,"changes":{{"todos":[{}]}},"checkpoint":{B_CHECKPOINT},"hasMore":false}}"#,
        insert_change()
    )
}

/// The update: `previousDocument` = rev 1, document rev `2-…`, `_vclock {nodeA:2}`, sequence 2.
/// filled: the rev suffix, the new title, timestamps.
const T1_REV2: &str = r#"{"_id":"t1","title":"hello again","_rev":"2-k3j9x0qa","_createdAt":1795311045394,"_updatedAt":1795311045402,"_vclock":{"nodeA":2}}"#;

fn update_change() -> String {
    format!(
        r#"{{"operation":"update","documentId":"t1","document":{T1_REV2},"previousDocument":{T1_REV1},"isFromSync":false,"timestamp":1795311045402,"sequence":2}}"#
    )
}

/// The delete: `document:null`, `previousDocument` the doc before deletion, sequence 4.
/// filled: the previous document (a rev 3), the timestamp.
const T1_REV3: &str = r#"{"_id":"t1","title":"bye","_rev":"3-0m1n2b3v","_createdAt":1795311045394,"_updatedAt":1795311045410,"_vclock":{"nodeA":3}}"#;

fn delete_change() -> String {
    format!(
        r#"{{"operation":"delete","documentId":"t1","document":null,"previousDocument":{T1_REV3},"isFromSync":false,"timestamp":1795311045420,"sequence":4}}"#
    )
}

fn push_of(id: &str, change: &str) -> String {
    format!(
        r#"{{"type":"push","id":"{id}","timestamp":1795311045421,"collection":"todos","changes":[{change}],"checkpoint":{{"id":"nodeA_1795311045375","sequences":{{"todos":3}},"timestamp":1795311045400,"nodeId":"nodeA"}}}}"#
    )
}

/// A server-wins conflict. filled: timestamps.
const B_CONFLICT_RESPONSE: &str = r#"{"type":"push-response","id":"p2","timestamp":1795311050000,"success":false,"conflicts":[{"documentId":"d1","serverDocument":{"_id":"d1","v":1,"_rev":"1-aaa","_updatedAt":10}}],"checkpoint":{"sequences":{"todos":2},"timestamp":1795311050000}}"#;

/// The reference's three errors. filled: the timestamps of the 2nd and 3rd, the parse detail (Node's wording).
const PARSE_ERROR: &str = r#"{"type":"error","id":"error_1795311064128","timestamp":1795311064128,"code":"PARSE_ERROR","message":"Invalid message format: Unexpected token 'o', \"not-json\" is not valid JSON","retryable":true}"#;
const UNKNOWN_ACK: &str = r#"{"type":"error","id":"error_1795311064130","timestamp":1795311064130,"code":"UNKNOWN_MESSAGE","message":"Unknown message type: ack","retryable":false}"#;
const RATE_LIMITED: &str = r#"{"type":"error","id":"error_1795311064131","timestamp":1795311064131,"code":"RATE_LIMITED","message":"Too many requests. Please slow down.","retryable":true}"#;

/// The reference's checkpoint bug: one entry at server sequence 1 pushed with client sequence 7
/// produced
/// `checkpoint {"todos":7, "other":2}` and `hasMore:true`. filled: ids, change, timestamps.
fn section7_pull_response() -> String {
    let change = r#"{"operation":"insert","documentId":"x","document":{"_id":"x"},"isFromSync":false,"timestamp":5,"sequence":7}"#;
    format!(
        r#"{{"type":"pull-response","id":"q1","timestamp":9,"changes":{{"todos":[{change}]}},"checkpoint":{{"sequences":{{"todos":7,"other":2}},"timestamp":9}},"hasMore":true}}"#
    )
}

/// Every frame above, client's and server's, as seeds for the fuzz run (`crate::fuzz`).
pub(crate) fn fuzz_seeds() -> Vec<String> {
    let mut seeds: Vec<String> = [
        A_PULL,
        A_PULL_RESPONSE,
        A_PUSH_RESPONSE,
        B_CONFLICT_RESPONSE,
        PARSE_ERROR,
        UNKNOWN_ACK,
        RATE_LIMITED,
        super::client::PING,
        super::server::PONG,
    ]
    .map(str::to_owned)
    .into();
    seeds.extend([
        a_push_insert(),
        b_broadcast(),
        push_of("p-update", &update_change()),
        push_of("p-delete", &delete_change()),
        section7_pull_response(),
    ]);
    seeds
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn client_message(frame: &str) -> ClientMessage {
    match decode_client_frame(frame) {
        Ok(ClientFrame::Message(m)) => m,
        other => panic!("not a message: {other:?}"),
    }
}

fn server_message(frame: &str) -> ServerMessage {
    match decode_server_frame(frame) {
        Ok(ServerFrame::Message(m)) => m,
        other => panic!("not a message: {other:?}"),
    }
}

fn decode_err(frame: &str) -> DecodeError {
    decode_client_frame(frame).expect_err("should not decode")
}

/// Decoding then encoding a client frame gives back the same bytes.
fn assert_client_roundtrip(frame: &str) -> ClientMessage {
    let message = client_message(frame);
    assert_eq!(message.to_json(), frame);
    message
}

fn assert_server_roundtrip(frame: &str) -> ServerMessage {
    let message = server_message(frame);
    assert_eq!(message.to_json(), frame);
    message
}

#[test]
fn trace_pull_roundtrips_byte_for_byte() {
    let message = assert_client_roundtrip(A_PULL);
    let ClientMessage::Pull(pull) = message else { panic!("not a pull") };
    assert_eq!(pull.id, "mwr5uccr-nagj42");
    assert_eq!(pull.collections, ["todos"]);
    assert_eq!(pull.limit, Some(100));
    assert_eq!(pull.checkpoint, Checkpoint::new_client("nodeA", 1795311045375));
    assert_eq!(pull.checkpoint.sequence("todos"), 0);
    assert_eq!(pull.page_size(DEFAULT_PULL_LIMIT, 1000), 100);
}

#[test]
fn trace_pull_response_built_and_decoded() {
    let built = PullResponse {
        id: "mwr5uccr-nagj42".into(),
        timestamp: 1795311045390,
        changes: ChangesByCollection::new(),
        checkpoint: Checkpoint::server([("todos", 0)].into_iter().collect(), 1795311045390),
        has_more: false,
    };
    assert_eq!(ServerMessage::from(built.clone()).to_json(), A_PULL_RESPONSE);
    assert_eq!(assert_server_roundtrip(A_PULL_RESPONSE), ServerMessage::PullResponse(built));
}

#[test]
fn trace_push_insert_roundtrips_byte_for_byte() {
    let frame = a_push_insert();
    let ClientMessage::Push(push) = assert_client_roundtrip(&frame) else { panic!("not a push") };
    assert_eq!(push.collection, "todos");
    assert_eq!(push.checkpoint.as_ref().unwrap().sequence("todos"), 0);
    let [change] = push.changes.as_slice() else { panic!("one change") };
    assert_eq!(change.operation, Operation::Insert);
    assert_eq!(change.document_id, "t1");
    assert_eq!(change.document.as_deref().unwrap().get(), T1_REV1, "document relayed byte for byte");
    assert!(change.previous_document.is_none());
    assert!(!change.is_from_sync);
    assert_eq!(change.sequence, 1);
    let meta = change.document_meta().unwrap().unwrap();
    assert_eq!(meta.id.as_deref(), Some("t1"));
    assert_eq!(meta.rev.as_deref(), Some("1-2tswmozt"));
    assert_eq!(meta.updated_at, Some(1795311045394.0));
    assert_eq!(meta.vclock, Some(VClock::from([("nodeA".to_owned(), 1)])));
    assert!(!meta.is_deleted());
}

#[test]
fn trace_push_response_built_and_decoded() {
    let built = PushResponse::new(
        "mwr5uccz-pyu5ef",
        1795311045396,
        vec![],
        Checkpoint::server([("todos", 1)].into_iter().collect(), 1795311045396),
    );
    assert!(built.success);
    assert_eq!(ServerMessage::from(built.clone()).to_json(), A_PUSH_RESPONSE);
    assert_eq!(assert_server_roundtrip(A_PUSH_RESPONSE), ServerMessage::PushResponse(built));
}

#[test]
fn trace_broadcast_built_from_the_pushed_change() {
    let ClientMessage::Push(push) = client_message(&a_push_insert()) else { panic!() };
    let b_checkpoint = decode_checkpoint(&raw(B_CHECKPOINT), "checkpoint").unwrap();
    let built = PullResponse::broadcast(1795311045396, "todos", push.changes, Some(b_checkpoint));
    assert!(built.is_broadcast());
    assert_eq!(ServerMessage::from(built).to_json(), b_broadcast());
    let ServerMessage::PullResponse(decoded) = assert_server_roundtrip(&b_broadcast()) else { panic!() };
    assert!(decoded.is_broadcast());
    assert_eq!(decoded.changes.get("todos").unwrap()[0].document_id, "t1");

    // A recipient that never sent a checkpoint gets `{}`.
    let empty = PullResponse::broadcast(7, "todos", vec![], None);
    assert_eq!(
        ServerMessage::from(empty).to_json(),
        r#"{"type":"pull-response","id":"broadcast_7","timestamp":7,"changes":{},"checkpoint":{},"hasMore":false}"#
    );
}

#[test]
fn trace_update_and_delete_changes_roundtrip() {
    for (id, change) in [("u1", update_change()), ("d1", delete_change())] {
        let frame = push_of(id, &change);
        let ClientMessage::Push(push) = assert_client_roundtrip(&frame) else { panic!() };
        assert_eq!(push.changes[0].to_json(), change);
    }
    let update = decode_change(&raw(&update_change()), "c").unwrap();
    assert_eq!(update.operation, Operation::Update);
    assert_eq!(update.previous_document.as_deref().unwrap().get(), T1_REV1);
    let meta = update.document_meta().unwrap().unwrap();
    assert_eq!(meta.rev.as_deref(), Some("2-k3j9x0qa"));
    assert_eq!(meta.vclock, Some(VClock::from([("nodeA".to_owned(), 2)])));

    let delete = decode_change(&raw(&delete_change()), "c").unwrap();
    assert_eq!(delete.operation, Operation::Delete);
    assert!(delete.document.is_none() && delete.document_meta().is_none());
    assert_eq!(delete.previous_document.as_deref().unwrap().get(), T1_REV3);
    assert_eq!(delete.sequence, 4);
}

#[test]
fn outgoing_change_carries_the_server_sequence() {
    // The fix of the reference's checkpoint bug: the relayed change is the pushed one with
    // `sequence` = the server's.
    let pushed = decode_change(&raw(&update_change()), "c").unwrap();
    let relayed = pushed.with_sequence(42);
    assert_eq!(relayed.to_json(), update_change().replace(r#""sequence":2"#, r#""sequence":42"#));
}

#[test]
fn trace_conflict_response_built_and_decoded() {
    let built = PushResponse::new(
        "p2",
        1795311050000,
        vec![Conflict {
            document_id: "d1".into(),
            server_document: raw(r#"{"_id":"d1","v":1,"_rev":"1-aaa","_updatedAt":10}"#),
        }],
        Checkpoint::server([("todos", 2)].into_iter().collect(), 1795311050000),
    );
    assert!(!built.success);
    assert_eq!(ServerMessage::from(built.clone()).to_json(), B_CONFLICT_RESPONSE);
    assert_eq!(assert_server_roundtrip(B_CONFLICT_RESPONSE), ServerMessage::PushResponse(built));
}

#[test]
fn trace_errors_built_and_decoded() {
    let parse = ErrorMessage::parse_error(None, 1795311064128, r#"Unexpected token 'o', "not-json" is not valid JSON"#);
    assert_eq!(ServerMessage::from(parse).to_json(), PARSE_ERROR);
    let ack = ErrorMessage::unknown_message(None, 1795311064130, "ack");
    assert_eq!(ServerMessage::from(ack).to_json(), UNKNOWN_ACK);
    let limited = ErrorMessage::rate_limited(None, 1795311064131);
    assert_eq!(ServerMessage::from(limited).to_json(), RATE_LIMITED);
    for frame in [PARSE_ERROR, UNKNOWN_ACK, RATE_LIMITED] {
        assert_server_roundtrip(frame);
    }
    let ServerMessage::Error(e) = server_message(UNKNOWN_ACK) else { panic!() };
    assert_eq!((e.code, e.retryable), (ErrorCode::UnknownMessage, false));
}

#[test]
fn trace_ping_pong() {
    assert_eq!(decode_client_frame("ping"), Ok(ClientFrame::Ping));
    assert_eq!(decode_client_frame_bytes(b"ping"), Ok(ClientFrame::Ping));
    assert_eq!(decode_server_frame(PONG), Ok(ServerFrame::Pong));
    assert_eq!(PONG, "pong");
    // Only the exact text counts; anything else is JSON-parsed and fails.
    for near in ["PING", " ping", "ping\n", "\"ping\""] {
        assert!(decode_client_frame(near).is_err(), "{near:?}");
    }
    // A JSON ping is not this protocol's (Pocket's other server, `@pocket/sync-server`, uses it):
    // UNKNOWN_MESSAGE.
    assert_eq!(decode_err(r#"{"type":"ping","id":"x"}"#).kind, DecodeErrorKind::UnknownType("ping".into()));
}

#[test]
fn section7_checkpoint_key_order_roundtrips() {
    let frame = section7_pull_response();
    let ServerMessage::PullResponse(r) = assert_server_roundtrip(&frame) else { panic!() };
    assert!(r.has_more);
    let sequences = r.checkpoint.sequences.unwrap();
    assert_eq!(sequences.iter().collect::<Vec<_>>(), [("todos", 7), ("other", 2)]);
}

#[test]
fn section14_reference_test_messages_decode() {
    // The reference tests' raw messages: checkpoint {id:'cp', sequences:{...}, timestamp, nodeId},
    // changes with sequence 0.
    let push = r#"{"type":"push","id":"m1","timestamp":1,"collection":"todos","changes":[{"operation":"insert","documentId":"a","document":{"_id":"a","title":"x"},"isFromSync":false,"timestamp":1,"sequence":0}],"checkpoint":{"id":"cp","sequences":{},"timestamp":1,"nodeId":"n1"}}"#;
    assert_client_roundtrip(push);
    let pull = r#"{"type":"pull","id":"m2","timestamp":1,"collections":["todos"],"checkpoint":{"id":"cp","sequences":{"todos":0},"timestamp":1,"nodeId":"n1"},"limit":100}"#;
    assert_client_roundtrip(pull);
}

#[test]
fn section5_6_ack_decodes() {
    let frame = r#"{"type":"ack","id":"m1","timestamp":3,"originalId":"m0"}"#;
    let ServerMessage::Ack(ack) = assert_server_roundtrip(frame) else { panic!() };
    assert_eq!(ack.original_id, "m0");
}

/// Found by the fuzz run: serde_json's default float parser can be one ulp off, so this
/// timestamp re-encoded as another number (`1.7953110449999999e+96`, which parses to yet
/// another). With `float_roundtrip` what is parsed is exact, and its encoding parses back to it.
#[test]
fn numbers_re_encode_to_the_same_value() {
    let frame = A_PULL.replace("1795311045387", "1795311045e87");
    let message = client_message(&frame);
    assert_eq!(client_message(&message.to_json()), message);
}

#[test]
fn client_messages_encode_in_the_real_clients_key_order() {
    // A Rust test client building the trace's messages gets the same bytes.
    let pull = ClientMessage::Pull(Pull {
        id: "mwr5uccr-nagj42".into(),
        timestamp: Some(1795311045387u64.into()),
        collections: vec!["todos".into()],
        checkpoint: Checkpoint::new_client("nodeA", 1795311045375),
        limit: Some(100),
    });
    assert_eq!(pull.to_json(), A_PULL);
    assert_eq!(json(&pull.to_json()), json(A_PULL));
}

#[test]
fn documents_are_relayed_byte_for_byte() {
    // Whitespace, key order, numbers and unicode escapes inside a body survive untouched.
    let body = r#"{"_id": "w", "z": 1.50, "a": [1e3, "\u00e9"], "_rev": "1-a"}"#;
    let frame = format!(
        r#"{{"type":"push","id":"r","collection":"c","changes":[{{"operation":"insert","documentId":"w","document":{body}}}]}}"#
    );
    let ClientMessage::Push(push) = client_message(&frame) else { panic!() };
    let relayed = push.changes[0].with_sequence(9);
    assert_eq!(relayed.document.as_deref().unwrap().get(), body);
    assert_eq!(
        relayed.to_json(),
        format!(r#"{{"operation":"insert","documentId":"w","document":{body},"isFromSync":false,"sequence":9}}"#)
    );
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and sequences.

#[test]
fn sequences_merge_by_max_and_keep_order() {
    let mut mine: Sequences = [("todos", 5), ("notes", 1)].into_iter().collect();
    let theirs: Sequences = [("notes", 3), ("todos", 2), ("tags", 0)].into_iter().collect();
    mine.merge_max(&theirs);
    assert_eq!(mine.iter().collect::<Vec<_>>(), [("todos", 5), ("notes", 3), ("tags", 0)]);
    assert_eq!(mine.get("absent"), None);
    // Duplicate keys: first position, last value (JSON.parse).
    let dup: Sequences = serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).unwrap();
    assert_eq!(dup.iter().collect::<Vec<_>>(), [("a", 3), ("b", 2)]);
}

#[test]
fn checkpoint_fields_are_optional() {
    // Missing `sequences` is tolerated and reads as 0 for every collection.
    let c = decode_checkpoint(&raw(r#"{"id":"cp"}"#), "checkpoint").unwrap();
    assert_eq!(c.sequence("todos"), 0);
    assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"id":"cp"}"#);
    let empty = decode_checkpoint(&raw("{}"), "checkpoint").unwrap();
    assert_eq!(empty, Checkpoint::default());
    // Unknown fields are dropped; a null field reads as absent.
    let c = decode_checkpoint(&raw(r#"{"sequences":{"a":1},"serverSequence":4,"nodeId":null}"#), "cp").unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"sequences":{"a":1}}"#);
}

#[test]
fn pull_page_size_is_never_zero() {
    let mut pull = match client_message(A_PULL) {
        ClientMessage::Pull(p) => p,
        _ => panic!(),
    };
    for (limit, want) in [(None, 100), (Some(0), 100), (Some(5), 5), (Some(1_000_000), 1000)] {
        pull.limit = limit;
        assert_eq!(pull.page_size(100, 1000), want, "{limit:?}");
    }
    pull.limit = Some(7);
    assert_eq!(pull.page_size(0, 0), 1);
}

#[test]
fn pull_without_limit_or_timestamp_decodes() {
    let frame = r#"{"type":"pull","id":"p","collections":[],"checkpoint":{"sequences":{}}}"#;
    let ClientMessage::Pull(pull) = assert_client_roundtrip(frame) else { panic!() };
    assert!(pull.collections.is_empty());
    assert_eq!(pull.limit, None);
}

// ---------------------------------------------------------------------------------------------
// HTTP bodies.

#[test]
fn http_routes() {
    assert_eq!(HttpRoute::from_path("/sync/push"), Some(HttpRoute::Push));
    assert_eq!(HttpRoute::from_path("/sync/pull"), Some(HttpRoute::Pull));
    assert_eq!(HttpRoute::from_path("/sync"), Some(HttpRoute::Any));
    assert_eq!(HttpRoute::from_path("/health"), None);
    assert_eq!(HttpRoute::from_path("/api/sync/push"), None);

    let push = a_push_insert();
    assert!(matches!(decode_http_body(HttpRoute::Push, push.as_bytes()), Ok(ClientMessage::Push(_))));
    assert!(matches!(decode_http_body(HttpRoute::Any, push.as_bytes()), Ok(ClientMessage::Push(_))));
    assert!(matches!(decode_http_body(HttpRoute::Pull, A_PULL.as_bytes()), Ok(ClientMessage::Pull(_))));

    let wrong = decode_http_body(HttpRoute::Push, A_PULL.as_bytes()).unwrap_err();
    assert_eq!(wrong.request_id.as_deref(), Some("mwr5uccr-nagj42"));
    assert_eq!(wrong.to_string(), "invalid pull: a pull was posted to /sync/push");
    let wrong = decode_http_body(HttpRoute::Pull, push.as_bytes()).unwrap_err();
    assert_eq!(wrong.to_string(), "invalid push: a push was posted to /sync/pull");

    // The text ping is a WebSocket-only frame.
    let ping = decode_http_body(HttpRoute::Any, b"ping").unwrap_err();
    assert!(matches!(ping.kind, DecodeErrorKind::InvalidJson(_)));
    assert_eq!(decode_http_body(HttpRoute::Any, b"\xff{}").unwrap_err().kind, DecodeErrorKind::InvalidUtf8);
}

// ---------------------------------------------------------------------------------------------
// Bad input. Each case: the frame, the id the error must carry, the error code of the reply,
// and a fragment of the reply's message.

#[test]
fn bad_frames_get_addressed_error_replies() {
    let cases: &[(&str, Option<&str>, ErrorCode, &str)] = &[
        ("not-json", None, ErrorCode::ParseError, "Invalid message format: expected ident"),
        ("hello", None, ErrorCode::ParseError, "Invalid message format: expected value"),
        ("", None, ErrorCode::ParseError, "EOF while parsing"),
        ("[1,2]", None, ErrorCode::ParseError, "expected a JSON object"),
        ("null", None, ErrorCode::ParseError, "expected a JSON object"),
        ("42", None, ErrorCode::ParseError, "expected a JSON object"),
        (r#"{"type":"push","id":"x""#, None, ErrorCode::ParseError, "EOF while parsing"),
        (r#"{"type":"push","id":"x"} trailing"#, None, ErrorCode::ParseError, "trailing characters"),
        (r#"{"id":"m1"}"#, Some("m1"), ErrorCode::ParseError, "no string `type`"),
        (r#"{"type":7,"id":"m1"}"#, Some("m1"), ErrorCode::ParseError, "no string `type`"),
        (
            r#"{"type":"ack","id":"m1","originalId":"m0"}"#,
            Some("m1"),
            ErrorCode::UnknownMessage,
            "Unknown message type: ack",
        ),
        (r#"{"type":"push-response","id":"m1"}"#, Some("m1"), ErrorCode::UnknownMessage, "push-response"),
        (r#"{"type":"subscribe","id":"m1"}"#, Some("m1"), ErrorCode::UnknownMessage, "subscribe"),
        // push
        (r#"{"type":"push","collection":"c","changes":[]}"#, None, ErrorCode::InvalidMessage, "missing field `id`"),
        (
            r#"{"type":"push","id":5,"collection":"c","changes":[]}"#,
            None,
            ErrorCode::InvalidMessage,
            "id: invalid type",
        ),
        (
            r#"{"type":"push","id":"m","changes":[]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "missing field `collection`",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c"}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "missing field `changes`",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":{}}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes: expected an array, got an object",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[1]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0]: expected an object, got a number",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"upsert","documentId":"a","document":{}}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].operation: unknown variant `upsert`",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"insert","document":{}}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "missing field `changes[0].documentId`",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"insert","documentId":"a","document":null}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].document: an insert needs a document",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"update","documentId":"a"}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "an update needs a document",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"insert","documentId":"a","document":[1]}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].document: expected an object, got an array",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"insert","documentId":"a","document":{"_id":"b"}}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            r#"`_id` "b" differs from documentId "a""#,
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"insert","documentId":"a","document":{"_id":"a","_rev":2}}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].document: invalid type: integer `2`, expected a string",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"insert","documentId":"a","document":{"_id":"a","_vclock":{"n":-1}}}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].document",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"delete","documentId":"a","document":null,"previousDocument":"x"}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].previousDocument: expected an object, got a string",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"delete","documentId":"a","document":null,"sequence":1.5}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].sequence",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"delete","documentId":"a","document":null,"isFromSync":"no"}]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "changes[0].isFromSync",
        ),
        (
            r#"{"type":"push","id":"m","collection":"c","changes":[],"checkpoint":[]}"#,
            Some("m"),
            ErrorCode::InvalidMessage,
            "checkpoint: expected an object, got an array",
        ),
        // pull
        (
            r#"{"type":"pull","id":"q","collections":["todos"],"limit":100}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "missing field `checkpoint`",
        ),
        (
            r#"{"type":"pull","id":"q","collections":["todos"],"checkpoint":null}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "missing field `checkpoint`",
        ),
        (
            r#"{"type":"pull","id":"q","checkpoint":{}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "missing field `collections`",
        ),
        (
            r#"{"type":"pull","id":"q","collections":"todos","checkpoint":{}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "collections: invalid type",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[1],"checkpoint":{}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "collections: invalid type",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[],"checkpoint":{"sequences":{"todos":-1}}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "checkpoint.sequences: invalid value",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[],"checkpoint":{"sequences":{"todos":1.5}}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "checkpoint.sequences: invalid type",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[],"checkpoint":{"sequences":[]}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "checkpoint.sequences: expected an object",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[],"checkpoint":{"id":5}}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "checkpoint.id: invalid type",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[],"checkpoint":{},"limit":-1}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "limit: invalid value",
        ),
        (
            r#"{"type":"pull","id":"q","collections":[],"checkpoint":{},"timestamp":"now"}"#,
            Some("q"),
            ErrorCode::InvalidMessage,
            "timestamp: invalid type",
        ),
        // duplicate keys in the envelope
        (r#"{"type":"pull","type":"push","id":"q"}"#, None, ErrorCode::ParseError, "duplicate field `type`"),
    ];
    for (frame, id, code, fragment) in cases {
        let error = decode_err(frame);
        assert_eq!(error.request_id.as_deref(), *id, "{frame}");
        let reply = ErrorMessage::from_decode_error(&error, 1234);
        assert_eq!(&reply.code, code, "{frame}: {reply:?}");
        assert!(reply.message.contains(fragment), "{frame}: {:?} lacks {fragment:?}", reply.message);
        assert_eq!(reply.id, id.map_or_else(|| "error_1234".to_owned(), str::to_owned), "{frame}");
        assert_eq!(reply.retryable, !matches!(code, ErrorCode::UnknownMessage | ErrorCode::InvalidMessage));
        // The reply itself is a valid server frame.
        assert_eq!(server_message(&ServerMessage::from(reply.clone()).to_json()), ServerMessage::Error(reply));
    }
}

#[test]
fn invalid_message_reply_shape() {
    let error = decode_err(r#"{"type":"pull","id":"q","collections":[]}"#);
    let reply = ServerMessage::from(ErrorMessage::from_decode_error(&error, 5)).to_json();
    assert_eq!(
        reply,
        r#"{"type":"error","id":"q","timestamp":5,"code":"INVALID_MESSAGE","message":"Invalid pull: missing field `checkpoint`","retryable":false}"#
    );
}

#[test]
fn invalid_utf8_binary_frame_is_a_parse_error() {
    let error = decode_client_frame_bytes(b"{\"type\":\"pull\",\"id\":\"\xc3\x28\"}").unwrap_err();
    assert_eq!(error.kind, DecodeErrorKind::InvalidUtf8);
    assert_eq!(ErrorMessage::from_decode_error(&error, 1).code, ErrorCode::ParseError);
    // A valid UTF-8 binary frame decodes like text.
    assert!(matches!(decode_client_frame_bytes(A_PULL.as_bytes()), Ok(ClientFrame::Message(_))));
}

#[test]
fn lenient_where_the_reference_is() {
    // A delete with a tombstone document; no previousDocument; no timestamp/isFromSync/sequence;
    // a missing document key on a delete; a document without `_id`; a push without checkpoint.
    let frame = r#"{"type":"push","id":"m","collection":"c","changes":[{"operation":"delete","documentId":"a","document":{"_id":"a","_deleted":true}},{"operation":"delete","documentId":"b"},{"operation":"insert","documentId":"c","document":{"v":1}}]}"#;
    let ClientMessage::Push(push) = client_message(frame) else { panic!() };
    assert!(push.checkpoint.is_none());
    assert!(push.changes[0].document_meta().unwrap().unwrap().is_deleted());
    assert!(push.changes[1].document.is_none());
    assert_eq!(push.changes[1].sequence, 0);
    assert_eq!(
        push.changes[1].to_json(),
        r#"{"operation":"delete","documentId":"b","document":null,"isFromSync":false,"sequence":0}"#
    );
    // Unknown fields anywhere are ignored.
    let frame = r#"{"type":"pull","id":"q","collections":["a"],"checkpoint":{},"limit":5,"extra":{"deep":[1]}}"#;
    assert!(matches!(client_message(frame), ClientMessage::Pull(_)));
}

#[test]
fn peek_request_id_reads_only_the_id() {
    assert_eq!(peek_request_id(&a_push_insert()).as_deref(), Some("mwr5uccz-pyu5ef"));
    assert_eq!(peek_request_id(r#"{"id":"x","changes":[broken"#), None);
    assert_eq!(peek_request_id(r#"{"id":7}"#), None);
    assert_eq!(peek_request_id("ping"), None);
    assert_eq!(ErrorMessage::rate_limited(Some("m1"), 3).id, "m1");
}

#[test]
fn decode_client_message_rejects_ping() {
    assert!(decode_client_message("ping").is_err());
}

#[test]
fn server_frame_decoder_rejects_client_messages() {
    let error = decode_server_frame(A_PULL).unwrap_err();
    assert_eq!(error.kind, DecodeErrorKind::UnknownType("pull".into()));
    let error = decode_server_frame(r#"{"type":"push-response","id":"p","timestamp":1,"success":true}"#).unwrap_err();
    assert_eq!(error.request_id.as_deref(), Some("p"));
    assert!(error.to_string().contains("missing field `checkpoint`"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// The conflict rules, and vector clocks as the real client writes them.

fn meta(rev: Option<&str>, vclock: Option<&[(&str, u64)]>, updated_at: Option<f64>) -> DocumentMeta {
    DocumentMeta {
        rev: rev.map(str::to_owned),
        vclock: vclock.map(|v| v.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()),
        updated_at,
        ..DocumentMeta::default()
    }
}

#[test]
fn detect_conflict_rules() {
    let cases = [
        // 1. same rev, including both missing
        (meta(Some("1-a"), None, None), meta(Some("1-a"), None, None), false),
        (meta(None, None, None), meta(None, None, None), false),
        (meta(Some("1-a"), Some(&[("A", 1)]), None), meta(Some("1-a"), Some(&[("B", 1)]), None), false),
        // 2. both clocks: concurrent (equal included) is a conflict
        (meta(Some("2-a"), Some(&[("A", 2)]), None), meta(Some("2-b"), Some(&[("A", 1), ("B", 1)]), None), true),
        (meta(Some("2-a"), Some(&[("A", 1)]), None), meta(Some("2-b"), Some(&[("A", 1)]), None), true),
        (meta(Some("2-a"), Some(&[("A", 2)]), None), meta(Some("1-b"), Some(&[("A", 1)]), None), false),
        (meta(Some("2-a"), Some(&[("A", 2), ("B", 1)]), None), meta(Some("2-b"), Some(&[("A", 2)]), None), false),
        // 3. only one rev
        (meta(Some("1-a"), None, None), meta(None, None, None), true),
        (meta(None, Some(&[("A", 1)]), None), meta(Some("1-a"), None, None), true),
        // 4. rev numbers: equal generation conflicts, different does not, unparsable never
        (meta(Some("2-x"), None, None), meta(Some("3-y"), None, None), false),
        (meta(Some("3-x"), None, None), meta(Some("3-y"), None, None), true),
        (meta(Some("01-x"), None, None), meta(Some("1-y"), None, None), true),
        (meta(Some("3-x"), None, None), meta(Some("3-"), None, None), false),
        (meta(Some("abc"), None, None), meta(Some("1-y"), None, None), false),
        (meta(Some("3-x_y"), None, None), meta(Some("3-y"), None, None), false),
        // one clock only: falls through to the rev rules
        (meta(Some("3-x"), Some(&[("A", 3)]), None), meta(Some("3-y"), None, None), true),
    ];
    for (i, (a, b, want)) in cases.iter().enumerate() {
        assert_eq!(detect_conflict(a, b), *want, "case {i}");
        assert_eq!(detect_conflict(b, a), *want, "case {i} (swapped)");
    }
}

#[test]
fn vclock_compare() {
    let v = |e: &[(&str, u64)]| -> VClock { e.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect() };
    assert_eq!(compare_vclocks(&v(&[("A", 2)]), &v(&[("A", 1)])), VClockOrder::After);
    assert_eq!(compare_vclocks(&v(&[("A", 1)]), &v(&[("A", 1), ("B", 1)])), VClockOrder::Before);
    assert_eq!(compare_vclocks(&v(&[("A", 1)]), &v(&[("A", 1)])), VClockOrder::Concurrent);
    assert_eq!(compare_vclocks(&v(&[]), &v(&[])), VClockOrder::Concurrent);
    assert_eq!(compare_vclocks(&v(&[("A", 1)]), &v(&[("B", 1)])), VClockOrder::Concurrent);
    // The real client: B editing A's doc {nodeA:2} gives {nodeA:2, nodeB:1}, which dominates it.
    assert_eq!(compare_vclocks(&v(&[("nodeA", 2), ("nodeB", 1)]), &v(&[("nodeA", 2)])), VClockOrder::After);
}

#[test]
fn resolve_strategies() {
    let older = meta(Some("1-a"), Some(&[("A", 1)]), Some(10.0));
    let newer = meta(Some("1-b"), Some(&[("B", 1)]), Some(20.0));
    assert_eq!(resolve(Strategy::ServerWins, &newer, &older), Winner::Remote);
    assert_eq!(resolve(Strategy::ClientWins, &older, &newer), Winner::Local);
    assert_eq!(resolve(Strategy::LastWriteWins, &newer, &older), Winner::Local);
    assert_eq!(resolve(Strategy::LastWriteWins, &older, &newer), Winner::Remote);
    // Missing _updatedAt counts as 0.
    assert_eq!(resolve(Strategy::LastWriteWins, &meta(None, None, None), &older), Winner::Remote);
    // Tie: local wins only if its clock strictly dominates.
    let tie_dominating = meta(Some("2-c"), Some(&[("A", 2)]), Some(10.0));
    assert_eq!(resolve(Strategy::LastWriteWins, &tie_dominating, &older), Winner::Local);
    assert_eq!(resolve(Strategy::LastWriteWins, &older, &tie_dominating), Winner::Remote);
    let tie_concurrent = meta(Some("1-c"), Some(&[("C", 1)]), Some(10.0));
    assert_eq!(resolve(Strategy::LastWriteWins, &tie_concurrent, &older), Winner::Remote);
    assert_eq!(resolve(Strategy::LastWriteWins, &meta(None, None, Some(10.0)), &older), Winner::Remote);
    assert_eq!(Strategy::from_name("last-write-wins"), Some(Strategy::LastWriteWins));
    assert_eq!(Strategy::from_name("merge"), None);
    assert_eq!(Strategy::default(), Strategy::LastWriteWins);
}

#[test]
fn rev_parsing() {
    assert_eq!(parse_rev("1-2tswmozt"), Some((1.0, "2tswmozt")));
    assert_eq!(parse_rev("12-AbC9"), Some((12.0, "AbC9")));
    for bad in ["", "1", "-a", "1-", "a-1", "1-a-b", "1.5-a", " 1-a"] {
        assert_eq!(parse_rev(bad), None, "{bad:?}");
    }
}

#[test]
fn document_meta_reads_system_fields_only() {
    let m = DocumentMeta::parse(&raw(T1_REV3), "d").unwrap();
    assert_eq!(m.rev.as_deref(), Some("3-0m1n2b3v"));
    assert_eq!(m.created_at, Some(1795311045394.0));
    let tomb = DocumentMeta::parse(&raw(r#"{"_id":"a","_deleted":true,"_rev":null,"x":{"_rev":5}}"#), "d").unwrap();
    assert!(tomb.is_deleted());
    assert_eq!(tomb.rev, None);
    assert!(DocumentMeta::parse(&raw("[]"), "d").unwrap_err().contains("expected an object"));
    assert!(DocumentMeta::parse(&raw(r#"{"_updatedAt":"now"}"#), "d").is_err());
}

#[test]
fn changes_by_collection_skips_empty_and_merges() {
    let c = decode_change(&raw(&insert_change()), "c").unwrap();
    let mut by = ChangesByCollection::new();
    by.push("empty", vec![]);
    by.push("todos", vec![c.clone()]);
    by.push("todos", vec![c.with_sequence(2)]);
    assert!(by.get("empty").is_none());
    assert_eq!(by.get("todos").unwrap().len(), 2);
    assert_eq!(by.iter().count(), 1);
    assert!(ChangesByCollection::new().is_empty());
    let _: ChangeEvent = c;
}
