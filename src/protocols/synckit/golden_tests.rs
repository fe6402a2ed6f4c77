//! Golden tests: every frame we captured between the SDKs and the reference server, decoded and
//! re-encoded byte for byte, plus bad-input tests.
//!
//! Binary headers below are literal hex, computed independently of this crate (by hand /
//! Python `struct.pack('>BqI', …)`); only `C_SUBSCRIBE` is the worked example of
//! `protocols/synckit/WIRE.md` ("Binary frames"). Payload texts are the captures where we have
//! the exact JSON; where a capture was abridged (`...`), the payload is completed in the same
//! shape (noted next to the constant).

use super::frame::{self, Encoded, FrameError, Framing, HEADER_LEN, MessageType, decode_frame, encode_frame};
use super::message::*;
use super::raw::{Json, RawObject, VectorClock};

const SID: &str = "1795311145207-hzkd3z86t";
const STS: i64 = 1_795_311_145_207;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

fn wire((header, payload): (&str, &str)) -> Vec<u8> {
    let mut v = hex(header);
    assert_eq!(v.len(), HEADER_LEN);
    v.extend_from_slice(payload.as_bytes());
    v
}

fn j(s: &str) -> Json {
    Json::parse(s).unwrap()
}

fn obj(s: &str) -> RawObject {
    serde_json::from_str(s).unwrap()
}

fn clock(pairs: &[(&str, u64)]) -> VectorClock {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

fn ts_of((header, _): (&str, &str)) -> i64 {
    i64::from_be_bytes(hex(header)[1..9].try_into().unwrap())
}

// ---- captured / documented frames ------------------------------------------------------------
// C_DELTA_BATCH: the first op as captured from SDK 0.3.0; the rest completed with two more `set`
// ops (the SDK sent all three writes in one delta_batch).
// S_*: the reference server's payloads as captured, with the `id` filled in.
// S_SYNC_RESPONSE_TEXT / S_TEXT_RELAY: the reference's shapes; the FugueText state is a
// placeholder string.
const C_SUBSCRIBE: (&str, &str) = ("10 00 00 01 8b cf e5 68 00 00 00 00 17", r#"{"documentId":"room:a"}"#);
const C_DELTA_011: (&str, &str) = (
    "20 00 00 01 a2 00 e0 b4 1f 00 00 00 b6",
    r#"{"type":"set","documentId":"room:test1","field":"title","value":"hello","clock":{"client-A":1},"clientId":"client-A","timestamp":1795311055903,"messageId":"msg-mwr5ukgv-6mzsgw4z2uv"}"#,
);
const C_DELTA_BATCH: (&str, &str) = (
    "50 00 00 01 a2 00 e1 01 a1 00 00 01 ef",
    r#"{"documentId":"room:test1","deltas":[{"type":"set","documentId":"room:test1","field":"title","value":"hello","clock":{"client-A":1},"clientId":"client-A","timestamp":1795311075745},{"type":"set","documentId":"room:test1","field":"done","value":true,"clock":{"client-A":2},"clientId":"client-A","timestamp":1795311075745},{"type":"set","documentId":"room:test1","field":"n","value":1,"clock":{"client-A":3},"clientId":"client-A","timestamp":1795311075745}],"messageId":"msg-mwr5uztg-2xehe0j04ly"}"#,
);
const C_AWARENESS_UPDATE: (&str, &str) = (
    "40 00 00 01 a2 00 df d9 c0 00 00 00 59",
    r#"{"documentId":"room:test1","clientId":"client-A","state":{"user":{"name":"A"}},"clock":1}"#,
);
const C_AWARENESS_LEAVE: (&str, &str) = (
    "40 00 00 01 a2 00 df d9 c0 00 00 00 48",
    r#"{"documentId":"room:test1","clientId":"client-A","state":null,"clock":2}"#,
);
const C_AWARENESS_SUBSCRIBE: (&str, &str) =
    ("41 00 00 01 a2 00 df d9 c0 00 00 00 1b", r#"{"documentId":"room:test1"}"#);
const C_PING: (&str, &str) = ("30 00 00 01 a2 00 df d9 c0 00 00 00 02", r#"{}"#);
const C_UNSUBSCRIBE: (&str, &str) = ("11 00 00 01 a2 00 df d9 c0 00 00 00 1b", r#"{"documentId":"room:test1"}"#);
const C_AUTH_EMPTY: (&str, &str) = ("01 00 00 01 a2 00 df d9 c0 00 00 00 02", r#"{}"#);
const C_AUTH_TOKEN: (&str, &str) =
    ("01 00 00 01 a2 00 df d9 c0 00 00 00 28", r#"{"token":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}"#);
const C_DELTA_TEST_CLIENT: (&str, &str) = (
    "20 00 00 01 a2 00 df d9 c0 00 00 00 54",
    r#"{"id":"d-9","documentId":"room:p1","delta":{"title":"t2","z":null},"vectorClock":{}}"#,
);
const C_DELTA_NO_CLOCK: (&str, &str) = (
    "20 00 00 01 a2 00 df d9 c0 00 00 00 4d",
    r#"{"documentId":"room:p1","delta":{"x":{"__deleted":true}},"messageId":"m-del"}"#,
);
const C_SYNC_REQUEST: (&str, &str) =
    ("12 00 00 01 a2 00 df d9 c0 00 00 00 23", r#"{"documentId":"doc-1","id":"req-7"}"#);
const C_SYNC_REQUEST_SDK: (&str, &str) = ("12 00 00 01 a2 00 df d9 c0 00 00 00 18", r#"{"documentId":"room:p1"}"#);
const S_AUTH_SUCCESS: (&str, &str) = (
    "02 00 00 01 a2 00 e2 10 f7 00 00 00 76",
    r#"{"id":"1795311145207-hzkd3z86t","userId":"anonymous","permissions":{"canRead":["*"],"canWrite":["*"],"isAdmin":false}}"#,
);
const S_AUTH_ERROR: (&str, &str) =
    ("03 00 00 01 a2 00 e2 10 f7 00 00 00 40", r#"{"id":"1795311145207-hzkd3z86t","error":"Authentication failed"}"#);
const S_SYNC_RESPONSE: (&str, &str) = (
    "13 00 00 01 a2 00 e2 10 f7 00 00 00 c4",
    r#"{"id":"1795311145207-hzkd3z86t","requestId":"my-sub-1","documentId":"room:p1","state":{"title":"t2","y":{"a":[1,2]},"z":null},"deltas":[],"clock":{"conn-1":4,"client-A":1,"conn-2":2,"client-B":2}}"#,
);
const S_SYNC_RESPONSE_EMPTY: (&str, &str) = (
    "13 00 00 01 a2 00 e2 10 f7 00 00 00 7f",
    r#"{"id":"1795311145207-hzkd3z86t","requestId":"1795311145200-abcdefghi","documentId":"room:p1","state":{},"deltas":[],"clock":{}}"#,
);
const S_SYNC_RESPONSE_NO_CLOCK: (&str, &str) = (
    "13 00 00 01 a2 00 e2 10 f7 00 00 00 60",
    r#"{"id":"1795311145207-hzkd3z86t","requestId":"req-7","documentId":"doc-1","state":{},"deltas":[]}"#,
);
const S_SYNC_RESPONSE_TEXT: (&str, &str) = (
    "13 00 00 01 a2 00 e2 10 f7 00 00 00 b4",
    r#"{"id":"1795311145207-hzkd3z86t","requestId":"s-2","documentId":"room:p1:text:b1","state":{},"deltas":[],"clock":{"conn-1":1},"textState":"{\"nodes\":[]}","textClock":1795311075748}"#,
);
const S_DELTA: (&str, &str) = (
    "20 00 00 01 a2 00 e2 10 f7 00 00 00 8a",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","field":"title","value":"hi","clock":{"conn-1":1,"client-A":1},"clientId":"server"}"#,
);
const S_DELTA_TOMBSTONE: (&str, &str) = (
    "20 00 00 01 a2 00 e2 10 f7 00 00 00 94",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","field":"x","value":{"__deleted":true},"clock":{"conn-1":3,"client-A":1},"clientId":"server"}"#,
);
const S_DELTA_NULL: (&str, &str) = (
    "20 00 00 01 a2 00 e2 10 f7 00 00 00 79",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","field":"z","value":null,"clock":{"conn-1":3},"clientId":"server"}"#,
);
const S_ACK: (&str, &str) =
    ("21 00 00 01 a2 00 e2 10 f7 00 00 00 32", r#"{"id":"1795311145207-hzkd3z86t","messageId":"m-1"}"#);
const S_PONG: (&str, &str) = ("31 00 00 01 a2 00 e2 10 f7 00 00 00 20", r#"{"id":"1795311145207-hzkd3z86t"}"#);
const S_AWARENESS_STATE: (&str, &str) = (
    "42 00 00 01 a2 00 e2 10 f7 00 00 00 82",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","states":[{"clientId":"client-A","state":{"user":{"name":"A"}},"clock":1}]}"#,
);
const S_AWARENESS_STATE_EMPTY: (&str, &str) = (
    "42 00 00 01 a2 00 e2 10 f7 00 00 00 43",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","states":[]}"#,
);
const S_AWARENESS_UPDATE: (&str, &str) = (
    "40 00 00 01 a2 00 e2 10 f7 00 00 00 75",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","clientId":"client-A","state":{"user":{"name":"A"}},"clock":1}"#,
);
const S_AWARENESS_LEAVE: (&str, &str) = (
    "40 00 00 01 a2 00 e2 10 f7 00 00 00 70",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:p1","clientId":"client-A","state":null,"clock":1795311145207}"#,
);
const S_ERROR_FORMAT: (&str, &str) =
    ("ff 00 00 01 a2 00 e2 10 f7 00 00 00 41", r#"{"id":"1795311145207-hzkd3z86t","error":"Invalid message format"}"#);
const S_ERROR_DOC: (&str, &str) = (
    "ff 00 00 01 a2 00 e2 10 f7 00 00 00 66",
    r#"{"id":"1795311145207-hzkd3z86t","error":"Delta application failed","details":{"documentId":"room:p1"}}"#,
);
const S_ERROR_RATE: (&str, &str) = (
    "ff 00 00 01 a2 00 e2 10 f7 00 00 00 78",
    r#"{"id":"1795311145207-hzkd3z86t","error":"Too many messages. Please slow down.","details":{"code":"RATE_LIMIT_EXCEEDED"}}"#,
);
const S_TEXT_RELAY: (&str, &str) = (
    "50 00 00 01 a2 00 e2 10 f7 00 00 00 f7",
    r#"{"id":"1795311145207-hzkd3z86t","documentId":"room:test1","deltas":[{"type":"text-state","state":"{\"nodes\":[1]}","documentId":"room:test1:text:body","clientId":"client-A","timestamp":1795311075748,"clock":{"client-A":4}}],"isTextOperation":true}"#,
);

const ALL_FRAMES: [(&str, (&str, &str)); 33] = [
    ("C_SUBSCRIBE", C_SUBSCRIBE),
    ("C_DELTA_011", C_DELTA_011),
    ("C_DELTA_BATCH", C_DELTA_BATCH),
    ("C_AWARENESS_UPDATE", C_AWARENESS_UPDATE),
    ("C_AWARENESS_LEAVE", C_AWARENESS_LEAVE),
    ("C_AWARENESS_SUBSCRIBE", C_AWARENESS_SUBSCRIBE),
    ("C_PING", C_PING),
    ("C_UNSUBSCRIBE", C_UNSUBSCRIBE),
    ("C_AUTH_EMPTY", C_AUTH_EMPTY),
    ("C_AUTH_TOKEN", C_AUTH_TOKEN),
    ("C_DELTA_TEST_CLIENT", C_DELTA_TEST_CLIENT),
    ("C_DELTA_NO_CLOCK", C_DELTA_NO_CLOCK),
    ("C_SYNC_REQUEST", C_SYNC_REQUEST),
    ("C_SYNC_REQUEST_SDK", C_SYNC_REQUEST_SDK),
    ("S_AUTH_SUCCESS", S_AUTH_SUCCESS),
    ("S_AUTH_ERROR", S_AUTH_ERROR),
    ("S_SYNC_RESPONSE", S_SYNC_RESPONSE),
    ("S_SYNC_RESPONSE_EMPTY", S_SYNC_RESPONSE_EMPTY),
    ("S_SYNC_RESPONSE_NO_CLOCK", S_SYNC_RESPONSE_NO_CLOCK),
    ("S_SYNC_RESPONSE_TEXT", S_SYNC_RESPONSE_TEXT),
    ("S_DELTA", S_DELTA),
    ("S_DELTA_TOMBSTONE", S_DELTA_TOMBSTONE),
    ("S_DELTA_NULL", S_DELTA_NULL),
    ("S_ACK", S_ACK),
    ("S_PONG", S_PONG),
    ("S_AWARENESS_STATE", S_AWARENESS_STATE),
    ("S_AWARENESS_STATE_EMPTY", S_AWARENESS_STATE_EMPTY),
    ("S_AWARENESS_UPDATE", S_AWARENESS_UPDATE),
    ("S_AWARENESS_LEAVE", S_AWARENESS_LEAVE),
    ("S_ERROR_FORMAT", S_ERROR_FORMAT),
    ("S_ERROR_DOC", S_ERROR_DOC),
    ("S_ERROR_RATE", S_ERROR_RATE),
    ("S_TEXT_RELAY", S_TEXT_RELAY),
];

/// Every frame above, binary and as JSON text, plus the text-only shapes, as seeds for the
/// fuzz run (`crate::fuzz`).
pub(crate) fn fuzz_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (_, golden) in ALL_FRAMES {
        let bytes = wire(golden);
        let frame = decode_frame(&bytes).expect("golden frame");
        // JSON text framing needs an id.
        let text = match Incoming::decode(&bytes, false) {
            Ok(incoming) => {
                incoming.message.encode(Framing::Text, frame.timestamp, Some(&Json::string("t-1"))).unwrap()
            }
            Err(_) => frame::encode(Framing::Text, frame.message_type, frame.timestamp, &frame.payload),
        };
        seeds.push(text.into_bytes());
        seeds.push(bytes);
    }
    for text in [
        r#"{"type":"sync_request","id":"j-1","timestamp":1795311145207,"documentId":"room:p1"}"#,
        r#"{"type":"delta","id":"x1","timestamp":5,"payload":{"type":"set","documentId":"room:p1","field":"f","value":1,"clock":{"c":1},"messageId":"m9"}}"#,
        r#"{"type":"connect","id":"i","timestamp":1}"#,
        r#"{"type":"snapshot_request","id":"i","timestamp":1}"#,
        r#"{"type":"snapshot_upload","id":"i","timestamp":1}"#,
        r#"{"type":"ping","id":"i","timestamp":1}"#,
    ] {
        seeds.push(text.as_bytes().to_vec());
    }
    let batch_ops = r#"{"documentId":"room:test1","deltas":[{"type":"richtext","operation":"format","opId":"o1","start":0,"end":5,"attributes":{"bold":true}},{"type":"text-state","state":"{\"nodes\":[]}","documentId":"room:test1:text:b","clientId":"client-A","timestamp":7,"clock":{"client-A":3}},{"type":"text","op":"insert"},{"type":"delete","documentId":"room:test1","field":"x"}]}"#;
    seeds.push(encode_frame(MessageType::DeltaBatch, STS, batch_ops));
    seeds
}

// ---- frame level ------------------------------------------------------------------------------

#[test]
fn spec_example_subscribe_frame_is_exact() {
    // `10 00 00 01 8b cf e5 68 00 00 00 00 17` + `{"documentId":"room:a"}`, ts 1700000000000.
    let bytes = encode_frame(MessageType::Subscribe, 1_700_000_000_000, r#"{"documentId":"room:a"}"#);
    assert_eq!(bytes, wire(C_SUBSCRIBE));
    let frame = decode_frame(&bytes).unwrap();
    assert_eq!(frame.message_type, MessageType::Subscribe);
    assert_eq!(frame.timestamp, 1_700_000_000_000);
    assert_eq!(frame.payload, r#"{"documentId":"room:a"}"#);
}

#[test]
fn every_frame_round_trips_byte_for_byte() {
    for (name, golden) in ALL_FRAMES {
        let bytes = wire(golden);
        let frame = decode_frame(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(frame.payload, golden.1, "{name}");
        assert_eq!(frame.timestamp, ts_of(golden), "{name}");
        assert_eq!(frame.encode(), bytes, "{name}");
        assert_eq!(frame.members().to_json(), golden.1, "{name}: member order/values preserved");
        let env = frame::decode(&bytes, false).unwrap();
        assert_eq!(env.framing, Framing::Binary);
        assert_eq!(env.message_type, Some(frame.message_type));
    }
}

// ---- client → server, SDK frames ---------------------------------------------------------------

fn decode_client(golden: (&str, &str)) -> Incoming {
    Incoming::decode(&wire(golden), false).unwrap()
}

fn assert_reencodes(golden: (&str, &str), incoming: &Incoming) {
    let encoded = incoming.message.encode(Framing::Binary, incoming.header_timestamp, None).unwrap();
    assert_eq!(encoded, Encoded::Binary(wire(golden)));
}

#[test]
fn subscribe_sdk() {
    let inc = decode_client(C_SUBSCRIBE);
    assert_eq!(inc.framing, Framing::Binary);
    assert_eq!(inc.id, None);
    assert_eq!(inc.timestamp, 1_700_000_000_000);
    assert_eq!(inc.message, ClientMessage::Subscribe(DocumentRef::new("room:a")));
    assert!(inc.message.requires_auth());
    // No id in the payload → the reply's requestId is the server-made id (Appendix A).
    assert_eq!(inc.request_id(SID), Json::string(SID));
    assert_reencodes(C_SUBSCRIBE, &inc);
}

#[test]
fn delta_sdk_0_1_1_shape() {
    let inc = decode_client(C_DELTA_011);
    let expected = Delta::sdk_set(
        "room:test1",
        "title",
        j(r#""hello""#),
        clock(&[("client-A", 1)]),
        "client-A",
        1_795_311_055_903,
        "msg-mwr5ukgv-6mzsgw4z2uv",
    );
    assert_eq!(inc.message, ClientMessage::Delta(expected));
    assert_eq!(inc.id, None);
    assert_eq!(inc.timestamp, 1_795_311_055_903, "payload timestamp wins over the header");
    assert_eq!(inc.ack_message_id(SID), Json::string("msg-mwr5ukgv-6mzsgw4z2uv"));
    let ClientMessage::Delta(d) = &inc.message else { unreachable!() };
    let changes: Vec<(&str, &str)> = d.changes().into_iter().map(|(f, v)| (f, v.get())).collect();
    assert_eq!(changes, [("title", r#""hello""#)]);
    assert_eq!(d.op_type.as_deref(), Some("set"), "kept for re-encoding, never the message type");
    assert_reencodes(C_DELTA_011, &inc);
}

#[test]
fn delta_batch_sdk_0_3_0() {
    let inc = decode_client(C_DELTA_BATCH);
    let ClientMessage::DeltaBatch(b) = &inc.message else { panic!("{:?}", inc.message) };
    assert_eq!(b.document_id, "room:test1");
    assert_eq!(b.message_id, Some(Json::string("msg-mwr5uztg-2xehe0j04ly")));
    let kinds: Vec<BatchOpKind> = b.deltas.iter().map(BatchOp::kind).collect();
    assert_eq!(
        kinds,
        [
            BatchOpKind::Field { field: "title".into(), value: j(r#""hello""#) },
            BatchOpKind::Field { field: "done".into(), value: j("true") },
            BatchOpKind::Field { field: "n".into(), value: j("1") },
        ]
    );
    assert_eq!(b.deltas[2].clock(), Some(clock(&[("client-A", 3)])));
    assert_eq!(b.deltas[0].client_id().as_deref(), Some("client-A"));
    assert_eq!(b.deltas[0].timestamp(), Some(1_795_311_075_745));
    assert_eq!(inc.ack_message_id(SID), Json::string("msg-mwr5uztg-2xehe0j04ly"));
    assert_reencodes(C_DELTA_BATCH, &inc);
}

#[test]
fn awareness_sdk_0_3_0() {
    let inc = decode_client(C_AWARENESS_UPDATE);
    assert_eq!(
        inc.message,
        ClientMessage::AwarenessUpdate(AwarenessUpdate {
            document_id: "room:test1".into(),
            client_id: "client-A".into(),
            state: Some(j(r#"{"user":{"name":"A"}}"#)),
            clock: 1,
        })
    );
    assert!(!inc.message.requires_auth());
    assert_reencodes(C_AWARENESS_UPDATE, &inc);

    let leave = decode_client(C_AWARENESS_LEAVE);
    let ClientMessage::AwarenessUpdate(u) = &leave.message else { unreachable!() };
    assert_eq!((u.state.as_ref(), u.clock), (None, 2));
    assert_reencodes(C_AWARENESS_LEAVE, &leave);

    let sub = decode_client(C_AWARENESS_SUBSCRIBE);
    assert_eq!(sub.message, ClientMessage::AwarenessSubscribe(DocumentRef::new("room:test1")));
    assert_reencodes(C_AWARENESS_SUBSCRIBE, &sub);
}

#[test]
fn ping_unsubscribe_auth_sync_request() {
    let ping = decode_client(C_PING);
    assert_eq!(ping.message, ClientMessage::Ping);
    assert_reencodes(C_PING, &ping);

    let unsub = decode_client(C_UNSUBSCRIBE);
    assert_eq!(unsub.message, ClientMessage::Unsubscribe(DocumentRef::new("room:test1")));
    assert_reencodes(C_UNSUBSCRIBE, &unsub);

    let auth = decode_client(C_AUTH_EMPTY);
    assert_eq!(auth.message, ClientMessage::Auth(Auth::default()));
    let ClientMessage::Auth(a) = &auth.message else { unreachable!() };
    assert_eq!(a.credential(), AuthCredential::None);
    assert_reencodes(C_AUTH_EMPTY, &auth);

    let auth = decode_client(C_AUTH_TOKEN);
    let ClientMessage::Auth(a) = &auth.message else { unreachable!() };
    assert_eq!(a.credential(), AuthCredential::Token("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
    assert_reencodes(C_AUTH_TOKEN, &auth);

    let sync = decode_client(C_SYNC_REQUEST_SDK);
    assert_eq!(
        sync.message,
        ClientMessage::SyncRequest(SyncRequest { document_id: "room:p1".into(), vector_clock: None })
    );
    assert_reencodes(C_SYNC_REQUEST_SDK, &sync);
}

#[test]
fn auth_credential_truthiness() {
    let cred = |payload: &str| {
        let bytes = encode_frame(MessageType::Auth, 0, payload);
        let ClientMessage::Auth(a) = Incoming::decode(&bytes, false).unwrap().message else { unreachable!() };
        format!("{:?}", a.credential())
    };
    assert_eq!(cred(r#"{"token":"","apiKey":"k"}"#), r#"ApiKey("k")"#);
    assert_eq!(cred(r#"{"token":null,"apiKey":""}"#), "None");
    assert_eq!(cred(r#"{"token":"t","apiKey":"k"}"#), r#"Token("t")"#);
}

// ---- client → server, test-client / Appendix A frames -----------------------------------------

#[test]
fn delta_test_client_shape() {
    let inc = decode_client(C_DELTA_TEST_CLIENT);
    assert_eq!(inc.id, Some(Json::string("d-9")));
    let mut expected = Delta::object("room:p1", obj(r#"{"title":"t2","z":null}"#), Some(VectorClock::new()));
    expected.message_id = None;
    assert_eq!(inc.message, ClientMessage::Delta(expected));
    assert_eq!(inc.ack_message_id(SID), Json::string("d-9"), "ACK echoes messageId ?? id");
    let encoded = inc.message.encode(Framing::Binary, inc.header_timestamp, inc.id.as_ref()).unwrap();
    assert_eq!(encoded.as_bytes(), wire(C_DELTA_TEST_CLIENT));
}

#[test]
fn delta_without_clock_is_tolerated() {
    let inc = decode_client(C_DELTA_NO_CLOCK);
    let ClientMessage::Delta(d) = &inc.message else { unreachable!() };
    assert_eq!(d.clock, None);
    assert_eq!(d.message_id, Some(Json::string("m-del")));
    let (field, value) = d.changes()[0];
    assert_eq!(field, "x");
    assert!(Json::from_raw(value).is_tombstone());
    assert_reencodes(C_DELTA_NO_CLOCK, &inc);
}

#[test]
fn sync_request_with_id_echoes_request_id() {
    let inc = decode_client(C_SYNC_REQUEST);
    assert_eq!(inc.id, Some(Json::string("req-7")));
    assert_eq!(inc.request_id(SID), Json::string("req-7"));
    assert_eq!(inc.ack_message_id(SID), Json::string("req-7"));
    // The typed encoder writes `id` first (test-client style); the frame itself round-trips.
    assert_eq!(
        inc.message.encode(Framing::Binary, 0, inc.id.as_ref()).unwrap().as_bytes()[HEADER_LEN..],
        *br#"{"id":"req-7","documentId":"doc-1"}"#
    );
    // Appendix A: reply without clock.
    let reply = ServerMessage::SyncResponse(SyncResponse::new(inc.request_id(SID), "doc-1", RawObject::new(), None));
    assert_eq!(reply.encode(Framing::Binary, SID, STS), Encoded::Binary(wire(S_SYNC_RESPONSE_NO_CLOCK)));
}

#[test]
fn falsy_ids_are_replaced() {
    let bytes =
        encode_frame(MessageType::Delta, 0, r#"{"id":"","documentId":"d","field":"f","value":1,"messageId":0}"#);
    let inc = Incoming::decode(&bytes, false).unwrap();
    assert_eq!(inc.id, None);
    assert_eq!(inc.ack_message_id(SID), Json::string(SID));
    let bytes = encode_frame(MessageType::Delta, 0, r#"{"id":42,"documentId":"d","field":"f","value":1}"#);
    assert_eq!(Incoming::decode(&bytes, false).unwrap().ack_message_id(SID), j("42"), "ids are echoed raw");
}

#[test]
fn delta_normalisation_rules() {
    let decode = |payload: &str| {
        let ClientMessage::Delta(d) =
            Incoming::decode(&encode_frame(MessageType::Delta, 0, payload), false).unwrap().message
        else {
            unreachable!()
        };
        d
    };
    // `delta` wins over field/value; vectorClock wins over clock.
    let d = decode(r#"{"documentId":"d","delta":{"a":1},"field":"b","value":2,"clock":{"x":1},"vectorClock":{"y":2}}"#);
    assert_eq!(d.changes.clone(), DeltaChanges::Object(obj(r#"{"a":1}"#)));
    assert_eq!((d.clock, d.clock_field), (Some(clock(&[("y", 2)])), ClockField::VectorClock));
    // Falsy `delta`/`vectorClock` fall through to field/value and clock.
    let d = decode(r#"{"documentId":"d","delta":null,"field":"b","value":null,"vectorClock":null,"clock":{"x":1}}"#);
    assert_eq!(d.changes, DeltaChanges::Field { field: "b".into(), value: j("null") });
    assert_eq!((d.clock, d.clock_field), (Some(clock(&[("x", 1)])), ClockField::Clock));
}

// ---- delta_batch op kinds and the text relay -----------------------------------------------------

#[test]
fn batch_op_kinds() {
    let payload = r#"{"documentId":"room:test1","deltas":[
        {"type":"counter","operation":"increment","value":1,"documentId":"room:test1","clientId":"client-A","timestamp":1,"clock":{"client-A":1}},
        {"type":"set","operation":"add","value":"x","documentId":"room:test1","clientId":"client-A","timestamp":1,"clock":{"client-A":2}},
        {"type":"richtext","operation":"format","opId":"o1","start":0,"end":5,"attributes":{"bold":true}},
        {"type":"text-state","state":"{\"nodes\":[]}","documentId":"room:test1:text:b","clientId":"client-A","timestamp":7,"clock":{"client-A":3}},
        {"type":"text-state","state":""},
        {"type":"text","op":"insert"},
        {"type":"set","field":"f"},
        {"field":"g","value":{"__deleted":true}},
        null
    ],"messageId":"m"}"#;
    let inc = Incoming::decode(&encode_frame(MessageType::DeltaBatch, 0, payload), false).unwrap();
    let ClientMessage::DeltaBatch(b) = &inc.message else { unreachable!() };
    let kinds: Vec<BatchOpKind> = b.deltas.iter().map(BatchOp::kind).collect();
    assert_eq!(
        kinds,
        [
            BatchOpKind::Skipped,
            BatchOpKind::Skipped,
            BatchOpKind::Skipped,
            BatchOpKind::TextState { state: r#"{"nodes":[]}"#.into() },
            BatchOpKind::Skipped,
            BatchOpKind::LegacyText,
            BatchOpKind::Skipped,
            BatchOpKind::Field { field: "g".into(), value: Json::tombstone() },
            BatchOpKind::Skipped,
        ]
    );
    assert_eq!(b.deltas[3].document_id().as_deref(), Some("room:test1:text:b"));
    assert_eq!(b.deltas[8], BatchOp::Other(j("null")));
    // Legacy text without clientId: relayed with the connection id appended.
    assert_eq!(
        b.deltas[5].text_relay(None, "conn-3").to_json(),
        r#"{"type":"text","op":"insert","clientId":"conn-3"}"#
    );
}

#[test]
fn text_state_relay_matches_reference_shape() {
    let op: BatchOp = serde_json::from_str(
        r#"{"type":"text-state","state":"{\"nodes\":[0]}","documentId":"room:test1:text:body","clientId":"client-A","timestamp":1795311075748,"clock":{"client-A":4}}"#,
    )
    .unwrap();
    let relayed = op.text_relay(Some(r#"{"nodes":[1]}"#), "conn-1");
    let msg = ServerMessage::DeltaBatch(TextOpsRelay::new("room:test1", vec![relayed]));
    assert_eq!(msg.encode(Framing::Binary, SID, STS), Encoded::Binary(wire(S_TEXT_RELAY)));
}

// ---- server → client ----------------------------------------------------------------------------

fn server_goldens() -> Vec<(&'static str, (&'static str, &'static str), ServerMessage)> {
    vec![
        ("auth_success", S_AUTH_SUCCESS, ServerMessage::AuthSuccess(AuthSuccess::anonymous())),
        ("auth_error", S_AUTH_ERROR, ServerMessage::AuthError(AuthError::authentication_failed())),
        (
            "sync_response",
            S_SYNC_RESPONSE,
            ServerMessage::SyncResponse(SyncResponse::new(
                Json::string("my-sub-1"),
                "room:p1",
                obj(r#"{"title":"t2","y":{"a":[1,2]},"z":null}"#),
                Some(clock(&[("conn-1", 4), ("client-A", 1), ("conn-2", 2), ("client-B", 2)])),
            )),
        ),
        (
            "sync_response empty",
            S_SYNC_RESPONSE_EMPTY,
            ServerMessage::SyncResponse(SyncResponse::new(
                Json::string("1795311145200-abcdefghi"),
                "room:p1",
                RawObject::new(),
                Some(VectorClock::new()),
            )),
        ),
        (
            "sync_response no clock",
            S_SYNC_RESPONSE_NO_CLOCK,
            ServerMessage::SyncResponse(SyncResponse::new(Json::string("req-7"), "doc-1", RawObject::new(), None)),
        ),
        (
            "sync_response text",
            S_SYNC_RESPONSE_TEXT,
            ServerMessage::SyncResponse(SyncResponse {
                text_state: Some(r#"{"nodes":[]}"#.into()),
                text_clock: Some(1_795_311_075_748),
                ..SyncResponse::new(
                    Json::string("s-2"),
                    "room:p1:text:b1",
                    RawObject::new(),
                    Some(clock(&[("conn-1", 1)])),
                )
            }),
        ),
        (
            "delta",
            S_DELTA,
            ServerMessage::Delta(DeltaBroadcast::new(
                "room:p1",
                "title",
                j(r#""hi""#),
                clock(&[("conn-1", 1), ("client-A", 1)]),
            )),
        ),
        (
            "delta tombstone",
            S_DELTA_TOMBSTONE,
            ServerMessage::Delta(DeltaBroadcast::new(
                "room:p1",
                "x",
                Json::tombstone(),
                clock(&[("conn-1", 3), ("client-A", 1)]),
            )),
        ),
        (
            "delta null",
            S_DELTA_NULL,
            ServerMessage::Delta(DeltaBroadcast::new("room:p1", "z", Json::null(), clock(&[("conn-1", 3)]))),
        ),
        ("ack", S_ACK, ServerMessage::Ack(Ack { message_id: Json::string("m-1") })),
        ("pong", S_PONG, ServerMessage::Pong),
        (
            "awareness_state",
            S_AWARENESS_STATE,
            ServerMessage::AwarenessState(AwarenessState {
                document_id: "room:p1".into(),
                states: vec![AwarenessEntry {
                    client_id: "client-A".into(),
                    state: j(r#"{"user":{"name":"A"}}"#),
                    clock: 1,
                }],
            }),
        ),
        (
            "awareness_state empty",
            S_AWARENESS_STATE_EMPTY,
            ServerMessage::AwarenessState(AwarenessState { document_id: "room:p1".into(), states: vec![] }),
        ),
        (
            "awareness_update",
            S_AWARENESS_UPDATE,
            ServerMessage::AwarenessUpdate(AwarenessUpdate {
                document_id: "room:p1".into(),
                client_id: "client-A".into(),
                state: Some(j(r#"{"user":{"name":"A"}}"#)),
                clock: 1,
            }),
        ),
        (
            "awareness_update leave",
            S_AWARENESS_LEAVE,
            ServerMessage::AwarenessUpdate(AwarenessUpdate {
                document_id: "room:p1".into(),
                client_id: "client-A".into(),
                state: None,
                clock: 1_795_311_145_207,
            }),
        ),
        ("error format", S_ERROR_FORMAT, ErrorMessage::invalid_message_format().into()),
        ("error documentId", S_ERROR_DOC, ErrorMessage::delta_application_failed("room:p1").into()),
        ("error code", S_ERROR_RATE, ErrorMessage::rate_limited().into()),
    ]
}

#[test]
fn server_messages_encode_and_decode_byte_for_byte() {
    for (name, golden, msg) in server_goldens() {
        let bytes = wire(golden);
        assert_eq!(msg.encode(Framing::Binary, SID, STS), Encoded::Binary(bytes.clone()), "{name}");
        assert_eq!(msg.payload_json(SID), golden.1, "{name}");
        let (id, decoded) = ServerMessage::decode(&bytes, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id, Some(Json::string(SID)), "{name}");
        assert_eq!(decoded, msg, "{name}");
        assert!(msg.message_type().sdk_knows(), "{name}");
    }
}

#[test]
fn server_text_framing() {
    let ack = ServerMessage::Ack(Ack { message_id: Json::string("m-1") });
    let text = format!(r#"{{"type":"ack","id":"{SID}","timestamp":{STS},"messageId":"m-1"}}"#);
    assert_eq!(ack.encode(Framing::Text, SID, STS), Encoded::Text(text.clone()));
    assert_eq!(frame::encode(Framing::Text, MessageType::Ack, STS, S_ACK.1), Encoded::Text(text.clone()));
    assert_eq!(ServerMessage::decode(text.as_bytes(), true).unwrap(), (Some(Json::string(SID)), ack));

    let pong = format!(r#"{{"type":"pong","id":"{SID}","timestamp":{STS}}}"#);
    assert_eq!(ServerMessage::Pong.encode(Framing::Text, SID, STS), Encoded::Text(pong));

    let err: ServerMessage = ErrorMessage::invalid_message_type("sync_response").into();
    assert_eq!(
        err.encode(Framing::Text, SID, STS),
        Encoded::Text(format!(
            r#"{{"type":"error","id":"{SID}","timestamp":{STS},"error":"Invalid message type: sync_response","details":{{"code":"INVALID_MESSAGE"}}}}"#
        ))
    );
}

#[test]
fn json_text_client_gets_text_reply() {
    // Appendix A: JSON text {"type":"sync_request","id":"j-1","timestamp":…,"documentId":"room:p1"}.
    let text = r#"{"type":"sync_request","id":"j-1","timestamp":1795311145207,"documentId":"room:p1"}"#;
    let inc = Incoming::decode(text.as_bytes(), true).unwrap();
    assert_eq!(inc.framing, Framing::Text);
    assert_eq!(inc.header_timestamp, STS);
    assert_eq!(
        inc.message,
        ClientMessage::SyncRequest(SyncRequest { document_id: "room:p1".into(), vector_clock: None })
    );
    // Re-encoding as a text client reproduces the input.
    assert_eq!(inc.message.encode(Framing::Text, STS, inc.id.as_ref()).unwrap(), Encoded::Text(text.into()));
    let reply = ServerMessage::SyncResponse(SyncResponse::new(
        inc.request_id(SID),
        "room:p1",
        RawObject::new(),
        Some(VectorClock::new()),
    ));
    assert_eq!(
        reply.encode(inc.framing, SID, STS),
        Encoded::Text(format!(
            r#"{{"type":"sync_response","id":"{SID}","timestamp":{STS},"requestId":"j-1","documentId":"room:p1","state":{{}},"deltas":[],"clock":{{}}}}"#
        ))
    );
    // The same JSON inside a *binary* WebSocket frame is detected by its leading `{`.
    assert_eq!(Incoming::decode(text.as_bytes(), false).unwrap(), inc);
}

#[test]
fn json_text_nested_payload_is_flattened() {
    let text = r#"{"type":"delta","id":"x1","timestamp":5,"payload":{"type":"set","documentId":"room:p1","field":"f","value":1,"clock":{"c":1},"messageId":"m9"}}"#;
    let inc = Incoming::decode(text.as_bytes(), true).unwrap();
    let ClientMessage::Delta(d) = &inc.message else { unreachable!() };
    assert_eq!(d.op_type, None, "payload.type is dropped when flattening");
    assert_eq!(d.changes, DeltaChanges::Field { field: "f".into(), value: j("1") });
    assert_eq!(inc.ack_message_id(SID), Json::string("m9"));
    assert_eq!(inc.id, Some(Json::string("x1")));
}

#[test]
fn json_text_codeless_names() {
    for (name, expected) in [
        ("connect", ClientMessage::Connect),
        ("snapshot_request", ClientMessage::SnapshotRequest),
        ("snapshot_upload", ClientMessage::SnapshotUpload),
        ("ping", ClientMessage::Ping),
    ] {
        let text = format!(r#"{{"type":"{name}","id":"i","timestamp":1}}"#);
        assert_eq!(Incoming::decode(text.as_bytes(), true).unwrap().message, expected);
    }
    assert_eq!(ClientMessage::Connect.encode(Framing::Binary, 0, None), Err(EncodeError::NoTypeCode("connect")));
    assert_eq!(ClientMessage::Ping.encode(Framing::Text, 0, None), Err(EncodeError::TextNeedsId));
}

// ---- bad input ----------------------------------------------------------------------------------

fn decode_err(data: &[u8], ws_text: bool) -> DecodeError {
    Incoming::decode(data, ws_text).unwrap_err()
}

fn frame_err(data: &[u8]) -> FrameError {
    match decode_err(data, false).kind {
        DecodeErrorKind::Frame(e) => e,
        other => panic!("expected a frame error, got {other:?}"),
    }
}

#[test]
fn short_headers() {
    assert_eq!(frame_err(&[]), FrameError::TooShort { len: 0 });
    assert_eq!(frame_err(&[0x10, 0, 0]), FrameError::TooShort { len: 3 });
    assert_eq!(frame_err(&wire(C_PING)[..12]), FrameError::TooShort { len: 12 });
    assert_eq!(decode_frame(&[0x30; 5]), Err(FrameError::TooShort { len: 5 }));
    // A 3-byte frame (Appendix A) gets "Invalid message format", in binary framing.
    let err = decode_err(&[0x10, 0, 0], false);
    assert_eq!(err.framing, Framing::Binary);
    let reply: ServerMessage = err.to_error().into();
    assert_eq!(reply.encode(err.framing, SID, STS), Encoded::Binary(wire(S_ERROR_FORMAT)));
}

#[test]
fn length_mismatch_and_trailing_bytes() {
    let mut bytes = wire(C_SUBSCRIBE);
    bytes.pop();
    assert_eq!(frame_err(&bytes), FrameError::LengthMismatch { declared: 23, available: 22 });
    let mut huge = hex("10 00 00 00 00 00 00 00 00 ff ff ff ff");
    huge.extend_from_slice(b"{}");
    assert_eq!(frame_err(&huge), FrameError::LengthMismatch { declared: u32::MAX, available: 2 });
    // Bytes after 13+N are ignored.
    let mut extra = wire(C_SUBSCRIBE);
    extra.extend_from_slice(b"garbage");
    let frame = decode_frame(&extra).unwrap();
    assert_eq!(frame.encode(), wire(C_SUBSCRIBE));
    assert_eq!(Incoming::decode(&extra, false).unwrap().message, ClientMessage::Subscribe(DocumentRef::new("room:a")));
    // A shorter declared length cuts the JSON → invalid JSON.
    let mut short = wire(C_SUBSCRIBE);
    short[12] = 0x10;
    assert!(matches!(frame_err(&short), FrameError::InvalidJson(_)));
}

#[test]
fn unknown_type_codes() {
    for code in [0x77u8, 0x22, 0x00, 0x16, 0x43, 0x51, 0xFE] {
        let mut bytes = wire(C_SUBSCRIBE);
        bytes[0] = code;
        assert_eq!(frame_err(&bytes), FrameError::UnknownTypeCode(code));
        assert_eq!(decode_err(&bytes, false).to_error(), ErrorMessage::invalid_message_format());
    }
}

#[test]
fn bad_payloads() {
    let bad = |payload: &[u8]| {
        let mut bytes = hex("10 00 00 00 00 00 00 00 00");
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        frame_err(&bytes)
    };
    assert!(matches!(bad(b""), FrameError::InvalidJson(_)));
    assert!(matches!(bad(br#"{"documentId":"#), FrameError::InvalidJson(_)));
    assert!(matches!(bad(br#"{"a":1}x"#), FrameError::InvalidJson(_)));
    assert_eq!(bad(b"{\"documentId\":\"\xff\"}"), FrameError::InvalidUtf8);
    assert_eq!(bad(b"[1,2]"), FrameError::NotAnObject);
    assert_eq!(bad(b"null"), FrameError::NotAnObject);
    assert_eq!(bad(b"\"room:a\""), FrameError::NotAnObject);
    assert_eq!(bad(b"5"), FrameError::NotAnObject);
}

#[test]
fn bad_json_text() {
    let err = |t: &str| decode_err(t.as_bytes(), true);
    // Appendix A: JSON text without timestamp → "Invalid message format", answered in text.
    let e = err(r#"{"type":"sync_request","id":"j-2","documentId":"room:p1"}"#);
    assert_eq!(e.kind, DecodeErrorKind::Frame(FrameError::MissingTimestamp));
    assert_eq!(e.framing, Framing::Text);
    assert_eq!(e.to_error(), ErrorMessage::invalid_message_format());
    assert_eq!(err(r#"{"id":"1","timestamp":1}"#).kind, DecodeErrorKind::Frame(FrameError::MissingType));
    assert_eq!(err(r#"{"type":"","id":"1","timestamp":1}"#).kind, DecodeErrorKind::Frame(FrameError::MissingType));
    assert_eq!(err(r#"{"type":"ping","id":"","timestamp":1}"#).kind, DecodeErrorKind::Frame(FrameError::MissingId));
    assert_eq!(
        err(r#"{"type":"ping","id":"1","timestamp":0}"#).kind,
        DecodeErrorKind::Frame(FrameError::MissingTimestamp)
    );
    assert_eq!(
        err(r#"{"type":"ping","id":"1","timestamp":"1"}"#).kind,
        DecodeErrorKind::Frame(FrameError::MissingTimestamp)
    );
    assert_eq!(err("[]").kind, DecodeErrorKind::Frame(FrameError::NotAnObject));
    assert!(matches!(err("{").kind, DecodeErrorKind::Frame(FrameError::InvalidJson(_))));
    assert_eq!(decode_err(b"\xff", true).kind, DecodeErrorKind::Frame(FrameError::InvalidUtf8));
}

/// Found by the fuzz run: a nested `payload` whose key is a lone surrogate passed the "is it an
/// object" check (raw JSON is not checked for surrogates) and then failed to parse where that
/// could not happen, panicking the socket's task. Keys are strings, and a lone surrogate is no
/// string in Rust: the frame is refused, as the same key at the top level already was.
#[test]
fn lone_surrogate_key_in_a_nested_payload_is_refused() {
    for text in [
        r#"{"type":"delta","id":"x1","timestamp":5,"payload":{"\ud800":"f","documentId":"d","field":"f","value":1}}"#,
        r#"{"type":"ping","id":"1","timestamp":1,"payload":{"\udc00\ud800":1}}"#,
        r#"{"type":"ping","id":"1","timestamp":1,"\ud800":1}"#,
    ] {
        for ws_text in [true, false] {
            let e = decode_err(text.as_bytes(), ws_text);
            assert!(matches!(e.kind, DecodeErrorKind::Frame(FrameError::InvalidJson(_))), "{text}: {e:?}");
            assert_eq!(e.to_error(), ErrorMessage::invalid_message_format());
        }
    }
}

#[test]
fn types_a_client_may_not_send() {
    for t in [
        MessageType::SyncResponse,
        MessageType::AuthSuccess,
        MessageType::Error,
        MessageType::AwarenessState,
        MessageType::SyncStep2,
    ] {
        let e = decode_err(&encode_frame(t, 0, "{}"), false);
        assert_eq!(e.kind, DecodeErrorKind::InvalidType(t.name().into()));
        let reply = e.to_error();
        assert_eq!(reply.error, format!("Invalid message type: {}", t.name()));
        assert_eq!(reply.details, Some(ErrorDetails::Code(ErrorCode::InvalidMessage)));
    }
    let e = decode_err(br#"{"type":"foo","id":"1","timestamp":1}"#, true);
    assert_eq!(e.to_error().error, "Invalid message type: foo");
    let e = decode_err(br#"{"type":7,"id":"1","timestamp":1}"#, true);
    assert_eq!(e.to_error().error, "Invalid message type: 7");
    // Every accepted name decodes to something (given a minimal valid body).
    for name in CLIENT_TYPE_NAMES {
        let text = format!(
            r#"{{"type":"{name}","id":"1","timestamp":1,"documentId":"d","delta":{{"a":1}},"deltas":[{{}}],"clientId":"c","state":null,"clock":1,"vectorClock":{{}},"chunkId":"c","totalChunks":1,"chunkIndex":0,"data":""}}"#
        );
        let inc = Incoming::decode(text.as_bytes(), true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(inc.message.type_name(), name);
    }
}

#[test]
fn wrong_field_types() {
    let err = |t: MessageType, payload: &str| decode_err(&encode_frame(t, 0, payload), false);
    let text = |t: MessageType, payload: &str| err(t, payload).to_error().error.into_owned();

    assert_eq!(text(MessageType::Subscribe, r#"{"documentId":5}"#), "Invalid document ID");
    assert_eq!(text(MessageType::Subscribe, "{}"), "Invalid document ID");
    assert_eq!(text(MessageType::SyncRequest, r#"{"documentId":null}"#), "Invalid document ID");
    assert_eq!(text(MessageType::AwarenessSubscribe, r#"{"documentId":["d"]}"#), "Invalid document ID");

    // Appendix A: `delta {documentId:"room:p1"}` → missing or empty delta.
    let invalid_delta = "Invalid delta message: missing or empty delta";
    for payload in [
        r#"{"documentId":"room:p1"}"#,
        r#"{"documentId":"room:p1","delta":{}}"#,
        r#"{"documentId":"room:p1","delta":"x"}"#,
        r#"{"documentId":"room:p1","delta":[1]}"#,
        r#"{"documentId":"room:p1","field":5,"value":1}"#,
        r#"{"documentId":"room:p1","field":"f"}"#,
        r#"{"delta":null}"#,
    ] {
        assert_eq!(text(MessageType::Delta, payload), invalid_delta, "{payload}");
    }
    // Delta is checked before documentId, like the reference.
    assert_eq!(text(MessageType::Delta, r#"{"delta":{"a":1}}"#), "Invalid document ID");
    assert_eq!(
        err(MessageType::Delta, r#"{"documentId":"d","delta":{"a":1},"vectorClock":{"a":"1"}}"#).kind,
        DecodeErrorKind::InvalidField {
            field: "vectorClock",
            reason: r#"clock entry "a" is not a non-negative integer at line 1 column 9"#.into()
        }
    );
    assert_eq!(
        text(MessageType::Delta, r#"{"documentId":"d","field":"f","value":1,"clock":[1]}"#),
        "Invalid message format"
    );

    let invalid_batch = "Invalid delta batch: missing or empty deltas array";
    for payload in
        [r#"{"documentId":"d"}"#, r#"{"documentId":"d","deltas":[]}"#, r#"{"documentId":"d","deltas":{"0":{}}}"#]
    {
        assert_eq!(text(MessageType::DeltaBatch, payload), invalid_batch, "{payload}");
    }

    for payload in [
        r#"{"documentId":"d","clientId":"c","state":{},"clock":"1"}"#,
        r#"{"documentId":"d","clientId":"c","state":{},"clock":1.5}"#,
        r#"{"documentId":"d","clientId":"c","clock":1}"#,
        r#"{"documentId":"d","clientId":7,"state":null,"clock":1}"#,
    ] {
        assert_eq!(text(MessageType::AwarenessUpdate, payload), "Invalid message format", "{payload}");
    }

    assert_eq!(text(MessageType::Auth, r#"{"token":5}"#), "Invalid message format");
    assert_eq!(text(MessageType::SyncRequest, r#"{"documentId":"d","vectorClock":[1]}"#), "Invalid message format");
    for payload in [
        r#"{"chunkId":"c","totalChunks":0,"chunkIndex":0,"data":""}"#,
        r#"{"chunkId":"c","totalChunks":2,"chunkIndex":2,"data":""}"#,
        r#"{"chunkId":"c","totalChunks":2,"chunkIndex":-1,"data":""}"#,
        r#"{"chunkId":"c","totalChunks":2,"chunkIndex":0}"#,
    ] {
        assert_eq!(text(MessageType::DeltaBatchChunk, payload), "Invalid message format", "{payload}");
    }
}

// ---- ERROR texts ---------------------------------------------------------------------------------

#[test]
fn exact_error_texts() {
    let cases: Vec<(ErrorMessage, &str)> = vec![
        (ErrorMessage::invalid_message_format(), r#"{"error":"Invalid message format"}"#),
        (
            ErrorMessage::invalid_message_type("x"),
            r#"{"error":"Invalid message type: x","details":{"code":"INVALID_MESSAGE"}}"#,
        ),
        (
            ErrorMessage::message_too_large(2_000_001, 2_000_000),
            r#"{"error":"Message too large (2000001 bytes, max 2000000)","details":{"code":"INVALID_MESSAGE"}}"#,
        ),
        (
            ErrorMessage::rate_limited(),
            r#"{"error":"Too many messages. Please slow down.","details":{"code":"RATE_LIMIT_EXCEEDED"}}"#,
        ),
        (ErrorMessage::internal_server_error(), r#"{"error":"Internal server error"}"#),
        (
            ErrorMessage::authentication_required(),
            r#"{"error":"Authentication required","details":{"code":"AUTH_REQUIRED"}}"#,
        ),
        (ErrorMessage::api_key_not_implemented(), r#"{"error":"API key authentication not yet implemented"}"#),
        (ErrorMessage::not_authenticated(), r#"{"error":"Not authenticated"}"#),
        (ErrorMessage::invalid_document_id(), r#"{"error":"Invalid document ID"}"#),
        (ErrorMessage::document_id_too_long(), r#"{"error":"Document ID too long"}"#),
        (ErrorMessage::document_id_invalid_characters(), r#"{"error":"Document ID contains invalid characters"}"#),
        (ErrorMessage::access_denied(), r#"{"error":"Access denied to this document"}"#),
        (ErrorMessage::permission_denied("d"), r#"{"error":"Permission denied","details":{"documentId":"d"}}"#),
        (ErrorMessage::subscribe_failed("d"), r#"{"error":"Subscribe failed","details":{"documentId":"d"}}"#),
        (ErrorMessage::unsubscribe_failed("d"), r#"{"error":"Unsubscribe failed","details":{"documentId":"d"}}"#),
        (ErrorMessage::sync_request_failed("d"), r#"{"error":"Sync request failed","details":{"documentId":"d"}}"#),
        (ErrorMessage::sync_step1_failed("d"), r#"{"error":"SyncStep1 failed","details":{"documentId":"d"}}"#),
        (ErrorMessage::invalid_delta(), r#"{"error":"Invalid delta message: missing or empty delta"}"#),
        (
            ErrorMessage::delta_application_failed("d"),
            r#"{"error":"Delta application failed","details":{"documentId":"d"}}"#,
        ),
        (ErrorMessage::invalid_delta_batch(), r#"{"error":"Invalid delta batch: missing or empty deltas array"}"#),
        (
            ErrorMessage::delta_batch_application_failed("d"),
            r#"{"error":"Delta batch application failed","details":{"documentId":"d"}}"#,
        ),
        (ErrorMessage::awareness_subscribe_failed(), r#"{"error":"Failed to subscribe to awareness"}"#),
        (ErrorMessage::awareness_update_failed(), r#"{"error":"Failed to update awareness"}"#),
    ];
    for (msg, body) in cases {
        let server: ServerMessage = msg.clone().into();
        assert_eq!(server.body_json(), body);
        // Round trip through the wire.
        let bytes = server.encode(Framing::Binary, SID, STS).into_bytes();
        assert_eq!(ServerMessage::decode(&bytes, false).unwrap().1, server);
    }
    assert_eq!(AuthError::authentication_failed().error, "Authentication failed");
}

#[test]
fn error_details_decode_unknown_shapes_as_other() {
    let payload = format!(r#"{{"id":"{SID}","error":"x","details":{{"code":"NOPE","n":1}}}}"#);
    let (_, msg) = ServerMessage::decode(&encode_frame(MessageType::Error, 0, &payload), false).unwrap();
    let ServerMessage::Error(e) = &msg else { unreachable!() };
    assert_eq!(e.details, Some(ErrorDetails::Other(j(r#"{"code":"NOPE","n":1}"#))));
    assert_eq!(msg.payload_json(SID), payload);
}

// ---- misc ---------------------------------------------------------------------------------------

#[test]
fn server_message_ids() {
    assert_eq!(server_message_id(1_795_311_145_207, 0), "1795311145207-000000000");
    assert_eq!(server_message_id(1, 35), "1-00000000z");
    assert_eq!(server_message_id(1, 36u64.pow(9)), "1-000000000", "only entropy mod 36^9 is used");
    let id = server_message_id(STS, 0x1234_5678_9abc);
    assert_eq!(id.len(), 13 + 1 + 9);
}

#[test]
fn negative_and_extreme_timestamps() {
    for ts in [i64::MIN, -1, 0, i64::MAX] {
        let bytes = encode_frame(MessageType::Ping, ts, "{}");
        let inc = Incoming::decode(&bytes, false).unwrap();
        assert_eq!((inc.header_timestamp, inc.timestamp), (ts, ts));
    }
}

#[test]
fn reassembled_chunks_decode_as_a_frame() {
    use super::chunk::ChunkAssembler;
    // The subscribe frame, base64 (standard alphabet), split in two.
    let b64 = "EAAAAYvP5WgAAAAAF3siZG9jdW1lbnRJZCI6InJvb206YSJ9";
    let mut asm = ChunkAssembler::default();
    let mk = |i: u32, data: &str| {
        let payload = format!(r#"{{"chunkId":"k","totalChunks":2,"chunkIndex":{i},"data":"{data}"}}"#);
        let inc = Incoming::decode(&encode_frame(MessageType::DeltaBatchChunk, 0, &payload), false).unwrap();
        let ClientMessage::DeltaBatchChunk(c) = inc.message else { unreachable!() };
        c
    };
    assert_eq!(asm.accept(&mk(0, &b64[..20]), 0).unwrap(), None);
    let whole = asm.accept(&mk(1, &b64[20..]), 1).unwrap().unwrap();
    assert_eq!(whole, wire(C_SUBSCRIBE));
    assert_eq!(Incoming::decode(&whole, false).unwrap().message, ClientMessage::Subscribe(DocumentRef::new("room:a")));
}
