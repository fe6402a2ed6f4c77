//! Protocol 0.4.0 (`@livestore/sync-cf` 0.4.0): Effect-RPC JSON messages
//! (`protocols/livestore/WIRE.md`, "Protocol 0.4.x over WebSocket" and "over HTTP").
//!
//! WebSocket: decode each text frame with [`decode_ws_message`], send one
//! [`ServerMessage::to_json`] per text frame (never a JSON array on WS).
//! HTTP: decode the POST body with [`decode_http_request`], answer with
//! [`encode_http_response`] (always a JSON array).

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::decode::{
    DecodeErrorKind, object_from_raw, optional_raw, parse_envelope, present, required, required_batch,
    required_effect_option, required_seq_num, tag_of,
};
use super::wire_event::{EncodeBatch, MetadataFormat, SyncedEvent, WireEvent, same_raw, to_json_string};

pub use super::decode::DecodeError;

/// Page limits of the Cloudflare server; the client copes with any page size, but
/// staying under them keeps WS frames well below common 1 MiB message caps.
pub const MAX_PAGE_EVENTS: usize = 100;
pub const MAX_PAGE_BYTES: usize = 900_000;

/// A decoded client → server WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Request(Request),
    /// Sent after every `Chunk` the client processed; may be ignored.
    Ack {
        request_id: String,
    },
    /// The client stopped consuming this stream (and already forgot the id): stop sending to it.
    Interrupt {
        request_id: String,
    },
    /// Keepalive; answer with [`ServerMessage::Pong`].
    Ping,
    /// Effect-RPC's end-of-input marker; not sent by the sync-cf clients, accepted for completeness.
    Eof,
}

/// An RPC request. `id` is a decimal string (a JS `BigInt` counter, `"0"`, `"1"`, …), unique
/// only within one client connection; it is kept as the client's exact string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    pub call: RpcCall,
}

/// The RPCs of `SyncWsRpc` (Pull, Push) and `SyncHttpRpc` (Pull, Push, Ping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcCall {
    /// `SyncWsRpc.Pull` / `SyncHttpRpc.Pull`. Answer with `Chunk`s, then (unless live)
    /// `Exit::PullComplete`. Allowed errors: `Unknown`, `BackendIdMismatch`.
    Pull(PullArgs),
    /// `SyncWsRpc.Push` / `SyncHttpRpc.Push`. Answer with `Exit::PushOk` or a failure.
    /// Allowed errors: `Unknown`, `ServerAhead`, `BackendIdMismatch`.
    Push(PushArgs),
    /// `SyncHttpRpc.Ping` (HTTP only). Answer with `Exit::PingOk`. Allowed error: `Unknown`.
    Ping(PingArgs),
}

#[derive(Debug, Clone)]
pub struct PullArgs {
    pub store_id: String,
    /// The app's sync payload (same JSON as in the URL), verbatim; `None` when absent.
    pub payload: Option<Box<RawValue>>,
    /// WS only; always `false` for `SyncHttpRpc.Pull`, which has no such field.
    pub live: bool,
    /// `None`: pull from the beginning.
    pub cursor: Option<PullCursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullCursor {
    pub backend_id: String,
    /// The last global seqNum the client already has.
    pub event_sequence_number: u64,
}

#[derive(Debug, Clone)]
pub struct PushArgs {
    pub store_id: String,
    pub payload: Option<Box<RawValue>>,
    pub batch: Vec<WireEvent>,
    /// `None` until the client has learned the backend id from a pull; not checked then.
    pub backend_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PingArgs {
    pub store_id: String,
    pub payload: Option<Box<RawValue>>,
}

impl PartialEq for PullArgs {
    fn eq(&self, o: &Self) -> bool {
        self.store_id == o.store_id
            && same_raw(&self.payload, &o.payload)
            && self.live == o.live
            && self.cursor == o.cursor
    }
}
impl Eq for PullArgs {}

impl PartialEq for PushArgs {
    fn eq(&self, o: &Self) -> bool {
        self.store_id == o.store_id
            && same_raw(&self.payload, &o.payload)
            && self.batch == o.batch
            && self.backend_id == o.backend_id
    }
}
impl Eq for PushArgs {}

impl PartialEq for PingArgs {
    fn eq(&self, o: &Self) -> bool {
        self.store_id == o.store_id && same_raw(&self.payload, &o.payload)
    }
}
impl Eq for PingArgs {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Ws,
    Http,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "_tag", default, borrow, deserialize_with = "present")]
    tag: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(rename = "tag", default, borrow, deserialize_with = "present")]
    rpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(rename = "requestId", default, borrow, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayloadEnvelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    store_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    live: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    cursor: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    batch: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    backend_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CursorEnvelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    backend_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    event_sequence_number: Option<&'a RawValue>,
}

/// Decodes one client WebSocket text frame. Accepts only `SyncWsRpc.*` requests; an
/// `SyncHttpRpc.*` tag on WS is an unknown RPC, as it is for the Effect server.
pub fn decode_ws_message(frame: &str) -> Result<ClientMessage, DecodeError> {
    let envelope: Envelope = parse_envelope(frame).map_err(|kind| DecodeError::new(None, kind))?;
    let tag = tag_of(envelope.tag).map_err(|kind| DecodeError::new(None, kind))?;
    let stream_control = |tag: &str| {
        required::<String>(envelope.request_id, "requestId")
            .map_err(|detail| DecodeError::new(None, DecodeErrorKind::InvalidMessage { tag: tag.to_owned(), detail }))
    };
    match tag.as_str() {
        "Request" => decode_request(&envelope, Transport::Ws).map(ClientMessage::Request),
        "Ack" => stream_control("Ack").map(|request_id| ClientMessage::Ack { request_id }),
        "Interrupt" => stream_control("Interrupt").map(|request_id| ClientMessage::Interrupt { request_id }),
        "Ping" => Ok(ClientMessage::Ping),
        "Eof" => Ok(ClientMessage::Eof),
        _ => Err(DecodeError::new(None, DecodeErrorKind::UnknownTag(tag))),
    }
}

/// Decodes the body of an HTTP POST: exactly one `Request` object. Accepts only
/// `SyncHttpRpc.*` requests.
pub fn decode_http_request(body: &str) -> Result<Request, DecodeError> {
    let envelope: Envelope = parse_envelope(body).map_err(|kind| DecodeError::new(None, kind))?;
    let tag = tag_of(envelope.tag).map_err(|kind| DecodeError::new(None, kind))?;
    match tag.as_str() {
        "Request" => decode_request(&envelope, Transport::Http),
        "Ack" | "Interrupt" | "Ping" | "Eof" => Err(DecodeError::new(None, DecodeErrorKind::UnexpectedMessage(tag))),
        _ => Err(DecodeError::new(None, DecodeErrorKind::UnknownTag(tag))),
    }
}

fn decode_request(envelope: &Envelope, transport: Transport) -> Result<Request, DecodeError> {
    let id: String = required(envelope.id, "id").map_err(|detail| {
        DecodeError::new(None, DecodeErrorKind::InvalidMessage { tag: "Request".to_owned(), detail })
    })?;
    let invalid = |tag: &str, detail: String| {
        DecodeError::new(Some(id.clone()), DecodeErrorKind::InvalidMessage { tag: tag.to_owned(), detail })
    };
    let rpc: String = required(envelope.rpc, "tag").map_err(|detail| invalid("Request", detail))?;
    let kind = match (transport, rpc.as_str()) {
        (Transport::Ws, "SyncWsRpc.Pull") | (Transport::Http, "SyncHttpRpc.Pull") => RpcKind::Pull,
        (Transport::Ws, "SyncWsRpc.Push") | (Transport::Http, "SyncHttpRpc.Push") => RpcKind::Push,
        (Transport::Http, "SyncHttpRpc.Ping") => RpcKind::Ping,
        _ => {
            return Err(DecodeError::new(Some(id), DecodeErrorKind::UnknownRpc(rpc)));
        }
    };
    let call = decode_call(kind, transport, envelope.payload).map_err(|detail| invalid(&rpc, detail))?;
    Ok(Request { id, call })
}

enum RpcKind {
    Pull,
    Push,
    Ping,
}

fn decode_call(kind: RpcKind, transport: Transport, raw: Option<&RawValue>) -> Result<RpcCall, String> {
    let raw = raw.ok_or("missing field `payload`")?;
    let p: PayloadEnvelope = object_from_raw(raw).map_err(|detail| format!("field `payload`: {detail}"))?;
    let store_id: String = required(p.store_id, "storeId")?;
    let payload = optional_raw(p.payload);
    Ok(match kind {
        RpcKind::Pull => RpcCall::Pull(PullArgs {
            store_id,
            payload,
            live: match transport {
                Transport::Ws => required(p.live, "live")?,
                Transport::Http => false,
            },
            cursor: required_effect_option(p.cursor, "cursor")?.map(decode_cursor).transpose()?,
        }),
        RpcKind::Push => RpcCall::Push(PushArgs {
            store_id,
            payload,
            batch: required_batch(p.batch)?,
            backend_id: required_effect_option(p.backend_id, "backendId")?
                .map(|raw| required::<String>(Some(raw), "backendId.value"))
                .transpose()?,
        }),
        RpcKind::Ping => RpcCall::Ping(PingArgs { store_id, payload }),
    })
}

fn decode_cursor(raw: &RawValue) -> Result<PullCursor, String> {
    let c: CursorEnvelope = object_from_raw(raw).map_err(|detail| format!("field `cursor.value`: {detail}"))?;
    Ok(PullCursor {
        backend_id: required(c.backend_id, "cursor.value.backendId")?,
        event_sequence_number: required_seq_num(c.event_sequence_number, "cursor.value.eventSequenceNumber")?,
    })
}

/// One element of a pull stream (`SyncMessage.PullResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResponse {
    pub batch: Vec<SyncedEvent>,
    pub page_info: PageInfo,
    /// Required in every page; the store's persisted backend id.
    pub backend_id: String,
}

/// `NoMore` marks the last page of the initial sync (and every live broadcast); without it the
/// client's initial sync and its local pushes stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "_tag")]
pub enum PageInfo {
    NoMore,
    /// `remaining`: events (not pages) still to come after this page.
    MoreKnown {
        remaining: u64,
    },
    MoreUnknown,
}

impl PullResponse {
    pub fn to_json(&self) -> String {
        to_json_string(&PullResponseWire {
            batch: EncodeBatch { items: &self.batch, format: MetadataFormat::V04 },
            page_info: self.page_info,
            backend_id: &self.backend_id,
        })
    }

    /// Encodes the page once, to wrap it for many subscribers (broadcast fan-out) and to
    /// measure it against [`MAX_PAGE_BYTES`].
    pub fn encode(&self) -> EncodedPullResponse {
        EncodedPullResponse(self.to_json())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PullResponseWire<'a> {
    batch: EncodeBatch<'a>,
    page_info: PageInfo,
    backend_id: &'a str,
}

/// A [`PullResponse`] already encoded to JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPullResponse(String);

impl EncodedPullResponse {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: even an empty page encodes its `pageInfo` and `backendId`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `{"_tag":"Chunk","requestId":…,"values":[<this page>]}`, byte-identical to
    /// `ServerMessage::Chunk { .. }.to_json()`.
    pub fn chunk_frame(&self, request_id: &str) -> String {
        format!(r#"{{"_tag":"Chunk","requestId":{},"values":[{}]}}"#, to_json_string(request_id), self.0)
    }
}

/// The typed errors the 0.4 client can decode. Any other error tag becomes a
/// client-side defect, so there is deliberately no other variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "_tag")]
pub enum SyncError {
    /// Push only. `minimum_expected_num` = the server's head,
    /// `provided_num` = the pushed `batch[0].parentSeqNum`.
    #[serde(rename = "ServerAheadError", rename_all = "camelCase")]
    ServerAhead { minimum_expected_num: u64, provided_num: u64 },
    /// `expected` = the server's backend id, `received` = the client's.
    #[serde(rename = "BackendIdMismatchError")]
    BackendIdMismatch { expected: String, received: String },
    /// Retried forever by the client for pushes; ends sync for pulls.
    #[serde(rename = "UnknownError")]
    Unknown {
        cause: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

impl SyncError {
    pub fn unknown(cause: impl Into<String>) -> Self {
        SyncError::Unknown { cause: cause.into(), note: None }
    }
}

/// How a request ends. The success shape depends on the RPC, and the client rejects the
/// wrong one, so each RPC has its own variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// End of a non-live pull: `{"_tag":"Success"}`. Never send it for a live pull.
    PullComplete,
    /// Push accepted: `{"_tag":"Success","value":{}}` (the empty `value` object is mandatory).
    PushOk,
    /// `SyncHttpRpc.Ping` answered: `{"_tag":"Success","value":{"_tag":"SyncMessage.Pong"}}`.
    PingOk,
    /// `{"_tag":"Failure","cause":{"_tag":"Fail","error":…}}`.
    Failure(SyncError),
}

/// A server → client message. On WS each is one text frame; over HTTP a response is
/// a JSON array of them ([`encode_http_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// `{"_tag":"Pong"}`, the answer to a WS `{"_tag":"Ping"}`.
    Pong,
    /// One pull page for the stream `request_id`. (Effect allows several values per chunk;
    /// one page per chunk keeps `values` non-empty by construction.)
    Chunk {
        request_id: String,
        page: PullResponse,
    },
    Exit {
        request_id: String,
        exit: Exit,
    },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        match self {
            ServerMessage::Pong => r#"{"_tag":"Pong"}"#.to_owned(),
            ServerMessage::Chunk { request_id, page } => page.encode().chunk_frame(request_id),
            ServerMessage::Exit { request_id, exit } => {
                to_json_string(&ExitFrameWire { request_id, exit: ExitWire(exit) })
            }
        }
    }

    /// The reply to a frame that failed to decode: an `Exit` failure with `UnknownError` for
    /// the request's id (never a `Defect`, which would fail every in-flight request).
    /// `None` when the frame carried no usable request id (not a `Request`, or no string `id`):
    /// there is nothing to address, so log it and drop it.
    pub fn reply_to_bad_frame(err: &DecodeError) -> Option<ServerMessage> {
        err.request_id.as_ref().map(|id| ServerMessage::Exit {
            request_id: id.clone(),
            exit: Exit::Failure(SyncError::unknown(err.to_string())),
        })
    }
}

/// The HTTP response body: a JSON array of messages, in order (the client refuses anything else).
pub fn encode_http_response(messages: &[ServerMessage]) -> String {
    let mut out = String::from("[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&message.to_json());
    }
    out.push(']');
    out
}

#[derive(Serialize)]
#[serde(tag = "_tag", rename = "Exit", rename_all = "camelCase")]
struct ExitFrameWire<'a> {
    request_id: &'a str,
    exit: ExitWire<'a>,
}

struct ExitWire<'a>(&'a Exit);

impl Serialize for ExitWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.0 {
            Exit::PullComplete => map.serialize_entry("_tag", "Success")?,
            Exit::PushOk => {
                map.serialize_entry("_tag", "Success")?;
                map.serialize_entry("value", &EmptyObject)?;
            }
            Exit::PingOk => {
                map.serialize_entry("_tag", "Success")?;
                map.serialize_entry("value", &HttpPong)?;
            }
            Exit::Failure(error) => {
                map.serialize_entry("_tag", "Failure")?;
                map.serialize_entry("cause", &FailCause { error })?;
            }
        }
        map.end()
    }
}

struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

struct HttpPong;

impl Serialize for HttpPong {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("_tag", "SyncMessage.Pong")?;
        map.end()
    }
}

#[derive(Serialize)]
#[serde(tag = "_tag", rename = "Fail")]
struct FailCause<'a> {
    error: &'a SyncError,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::wire_event::SyncMetadata;
    use super::*;

    /// The example event of `WIRE.md`, substituted wherever a captured frame below shows
    /// `{…event…}` / `…events…`.
    const EVENT: &str = r#"{"name":"todoCreated-v1","args":{"id":"a","text":"x"},"seqNum":1,"parentSeqNum":0,"clientId":"c1","sessionId":"s1"}"#;
    const CREATED_AT: &str = "2025-01-01T00:00:00.000Z";

    fn event(json: &str) -> WireEvent {
        serde_json::from_str(json).unwrap()
    }

    fn synced(json: &str) -> SyncedEvent {
        SyncedEvent { event: event(json), metadata: Some(SyncMetadata { created_at: CREATED_AT.into() }) }
    }

    fn raw(json: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(json.to_owned()).unwrap())
    }

    fn ws_request(frame: &str) -> Request {
        match decode_ws_message(frame).unwrap() {
            ClientMessage::Request(request) => request,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn ws_err(frame: &str) -> DecodeError {
        decode_ws_message(frame).unwrap_err()
    }

    fn ws_pull_frame(id: &str, payload: &str) -> String {
        format!(r#"{{"_tag":"Request","id":"{id}","tag":"SyncWsRpc.Pull","payload":{payload},"headers":[]}}"#)
    }

    fn ws_push_frame(id: &str, payload: &str) -> String {
        format!(r#"{{"_tag":"Request","id":"{id}","tag":"SyncWsRpc.Push","payload":{payload},"headers":[]}}"#)
    }

    fn spec_page() -> PullResponse {
        PullResponse {
            batch: vec![synced(EVENT)],
            page_info: PageInfo::MoreKnown { remaining: 5 },
            backend_id: "b1".into(),
        }
    }

    /// A captured `PullResponse`; the line break in the literal is only for layout, and removed.
    fn spec_page_json() -> String {
        r#"{"batch":[{"eventEncoded":{…event…},"metadata":{"_tag":"Some","value":{"_tag":"SyncMessage.SyncMetadata","createdAt":"2025-01-01T00:00:00.000Z"}}}],
 "pageInfo":{"_tag":"MoreKnown","remaining":5},"backendId":"b1"}"#
            .replace("{…event…}", EVENT)
            .replace("\n ", "")
    }

    /// The client frames of the goldens below (WebSocket, then HTTP), as seeds for the fuzz
    /// run (`crate::fuzz`).
    pub(crate) fn fuzz_seeds() -> (Vec<String>, Vec<String>) {
        let push = r#"{"storeId":"s","payload":{"authToken":"t"},"batch":[…events…],"backendId":{"_tag":"None"}}"#
            .replace("…events…", &[EVENT, EVENT.replace(":1,", ":2,").replace(":0,", ":1,").as_str()].join(","));
        let ws = vec![
            r#"{"_tag":"Ping"}"#.to_owned(),
            r#"{"_tag":"Ack","requestId":"0"}"#.to_owned(),
            r#"{"_tag":"Interrupt","requestId":"12","interruptors":[]}"#.to_owned(),
            r#"{"_tag":"Eof"}"#.to_owned(),
            r#"{"_tag":"Request","id":"0","tag":"SyncWsRpc.Pull","payload":{"storeId":"s","payload":{"authToken":"t"},"live":true,"cursor":{"_tag":"None"}},"headers":[],"traceId":"342f","spanId":"d8d6","sampled":true}"#.to_owned(),
            ws_pull_frame("5", r#"{"storeId":"s","live":false,"cursor":{"_tag":"Some","value":{"backendId":"b1","eventSequenceNumber":3}}}"#),
            ws_push_frame("1", &push),
            ws_push_frame("2", r#"{"storeId":"s","batch":[],"backendId":{"_tag":"Some","value":"b1"}}"#),
        ];
        let http = vec![
            r#"{"_tag":"Request","id":"2","tag":"SyncHttpRpc.Pull","payload":{"storeId":"s","payload":{"authToken":"t"},"cursor":{"_tag":"Some","value":{"backendId":"b1","eventSequenceNumber":3}}},"headers":[],"traceId":"a","spanId":"b","sampled":true}"#.to_owned(),
            format!(
                r#"{{"_tag":"Request","id":"3","tag":"SyncHttpRpc.Push","payload":{{"storeId":"s","batch":[{EVENT}],"backendId":{{"_tag":"Some","value":"b1"}}}},"headers":[]}}"#
            ),
            r#"{"_tag":"Request","id":"0","tag":"SyncHttpRpc.Ping","payload":{"storeId":"s"},"headers":[]}"#.to_owned(),
        ];
        (ws, http)
    }

    // ---- client → server goldens ----

    #[test]
    fn decodes_stream_control_frames() {
        assert_eq!(decode_ws_message(r#"{"_tag":"Ping"}"#).unwrap(), ClientMessage::Ping);
        assert_eq!(
            decode_ws_message(r#"{"_tag":"Ack","requestId":"0"}"#).unwrap(),
            ClientMessage::Ack { request_id: "0".into() }
        );
        assert_eq!(
            decode_ws_message(r#"{"_tag":"Interrupt","requestId":"0"}"#).unwrap(),
            ClientMessage::Interrupt { request_id: "0".into() }
        );
        assert_eq!(
            decode_ws_message(r#"{"_tag":"Interrupt","requestId":"12","interruptors":[]}"#).unwrap(),
            ClientMessage::Interrupt { request_id: "12".into() }
        );
        assert_eq!(decode_ws_message(r#"{"_tag":"Eof"}"#).unwrap(), ClientMessage::Eof);
    }

    #[test]
    fn decodes_live_pull_request_golden() {
        let frame = r#"{"_tag":"Request","id":"0","tag":"SyncWsRpc.Pull","payload":{…},"headers":[],"traceId":"342f…","spanId":"d8d6…","sampled":true}"#
            .replace(
                "{…}",
                r#"{"storeId":"s","payload":{"authToken":"t"},"live":true,"cursor":{"_tag":"None"}}"#,
            );
        assert_eq!(
            ws_request(&frame),
            Request {
                id: "0".into(),
                call: RpcCall::Pull(PullArgs {
                    store_id: "s".into(),
                    payload: raw(r#"{"authToken":"t"}"#),
                    live: true,
                    cursor: None,
                }),
            }
        );
    }

    #[test]
    fn decodes_pull_with_cursor_golden() {
        let payload = r#"{"storeId":"s","live":false,"cursor":{"_tag":"Some","value":{"backendId":"b1","eventSequenceNumber":3}}}"#;
        assert_eq!(
            ws_request(&ws_pull_frame("5", payload)),
            Request {
                id: "5".into(),
                call: RpcCall::Pull(PullArgs {
                    store_id: "s".into(),
                    payload: None,
                    live: false,
                    cursor: Some(PullCursor { backend_id: "b1".into(), event_sequence_number: 3 }),
                }),
            }
        );
    }

    #[test]
    fn decodes_push_golden() {
        let payload = r#"{"storeId":"s","payload":{…},"batch":[…events…],"backendId":{"_tag":"None"}}"#
            .replace("{…}", r#"{"authToken":"t"}"#)
            .replace("…events…", EVENT);
        assert_eq!(
            ws_request(&ws_push_frame("1", &payload)),
            Request {
                id: "1".into(),
                call: RpcCall::Push(PushArgs {
                    store_id: "s".into(),
                    payload: raw(r#"{"authToken":"t"}"#),
                    batch: vec![event(EVENT)],
                    backend_id: None,
                }),
            }
        );

        let payload = r#"{"storeId":"s","batch":[],"backendId":{"_tag":"Some","value":"b1"}}"#;
        let Request { call: RpcCall::Push(push), .. } = ws_request(&ws_push_frame("2", payload)) else {
            unreachable!()
        };
        assert_eq!(push.backend_id.as_deref(), Some("b1"));
        assert!(push.batch.is_empty() && push.payload.is_none());
    }

    #[test]
    fn keeps_big_request_ids_and_null_payload() {
        let id = "123456789012345678901234567890";
        let payload = r#"{"storeId":"s","payload":null,"live":true,"cursor":{"_tag":"None"}}"#;
        let request = ws_request(&ws_pull_frame(id, payload));
        assert_eq!(request.id, id);
        let RpcCall::Pull(pull) = request.call else { unreachable!() };
        assert_eq!(pull.payload.as_deref().map(RawValue::get), Some("null"));
    }

    #[test]
    fn decodes_http_requests() {
        let body = r#"{"_tag":"Request","id":"2","tag":"SyncHttpRpc.Pull","payload":{"storeId":"s","payload":{…},"cursor":{"_tag":"None"}},"headers":[],"traceId":"…","spanId":"…","sampled":true}"#
            .replace("{…}", r#"{"authToken":"t"}"#);
        assert_eq!(
            decode_http_request(&body).unwrap(),
            Request {
                id: "2".into(),
                call: RpcCall::Pull(PullArgs {
                    store_id: "s".into(),
                    payload: raw(r#"{"authToken":"t"}"#),
                    live: false,
                    cursor: None,
                }),
            }
        );

        let body = format!(
            r#"{{"_tag":"Request","id":"3","tag":"SyncHttpRpc.Push","payload":{{"storeId":"s","batch":[{EVENT}],"backendId":{{"_tag":"Some","value":"b1"}}}},"headers":[]}}"#
        );
        let Request { call: RpcCall::Push(push), .. } = decode_http_request(&body).unwrap() else { unreachable!() };
        assert_eq!(push.batch, vec![event(EVENT)]);

        let body = r#"{"_tag":"Request","id":"0","tag":"SyncHttpRpc.Ping","payload":{"storeId":"s"},"headers":[]}"#;
        assert_eq!(
            decode_http_request(body).unwrap(),
            Request { id: "0".into(), call: RpcCall::Ping(PingArgs { store_id: "s".into(), payload: None }) }
        );
    }

    // ---- server → client goldens ----

    #[test]
    fn encodes_pong() {
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"_tag":"Pong"}"#);
    }

    #[test]
    fn encodes_pull_response_golden() {
        assert_eq!(spec_page().to_json(), spec_page_json());
    }

    #[test]
    fn encodes_chunk_golden() {
        let golden = r#"{"_tag":"Chunk","requestId":"0","values":[ <success value>, … ]}"#
            .replace("[ <success value>, … ]", &format!("[{}]", spec_page_json()));
        let chunk = ServerMessage::Chunk { request_id: "0".into(), page: spec_page() };
        assert_eq!(chunk.to_json(), golden);
        assert_eq!(spec_page().encode().chunk_frame("0"), golden);
    }

    #[test]
    fn encodes_empty_and_broadcast_pages() {
        let empty = PullResponse { batch: vec![], page_info: PageInfo::NoMore, backend_id: "b1".into() };
        assert_eq!(
            empty.to_json(),
            r#"{"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":…}"#.replace('…', r#""b1""#)
        );

        let broadcast =
            PullResponse { batch: vec![synced(EVENT)], page_info: PageInfo::NoMore, backend_id: "b1".into() };
        let golden = r#"{"_tag":"Chunk","requestId":"<that pull id>","values":[{"batch":[…with metadata Some(createdAt)…],"pageInfo":{"_tag":"NoMore"},"backendId":"…"}]}"#
            .replace("<that pull id>", "4")
            .replace(
                "…with metadata Some(createdAt)…",
                &format!(r#"{{"eventEncoded":{EVENT},"metadata":{{"_tag":"Some","value":{{"_tag":"SyncMessage.SyncMetadata","createdAt":"{CREATED_AT}"}}}}}}"#),
            )
            .replace(r#""backendId":"…""#, r#""backendId":"b1""#);
        let encoded = broadcast.encode();
        assert_eq!(encoded.chunk_frame("4"), golden);
        assert_eq!(encoded.len(), broadcast.to_json().len());
        assert!(!encoded.is_empty());

        let unknown = PullResponse { batch: vec![], page_info: PageInfo::MoreUnknown, backend_id: "b1".into() };
        assert_eq!(unknown.to_json(), r#"{"batch":[],"pageInfo":{"_tag":"MoreUnknown"},"backendId":"b1"}"#);
    }

    #[test]
    fn encodes_exit_successes() {
        let exit = |request_id: &str, exit| ServerMessage::Exit { request_id: request_id.into(), exit };
        assert_eq!(
            exit("1", Exit::PushOk).to_json(),
            r#"{"_tag":"Exit","requestId":"1","exit":{"_tag":"Success","value":{}}}"#
        );
        assert_eq!(
            exit("2", Exit::PullComplete).to_json(),
            r#"{"_tag":"Exit","requestId":"2","exit":{"_tag":"Success"}}"#
        );
        assert_eq!(
            exit("0", Exit::PingOk).to_json(),
            r#"{"_tag":"Exit","requestId":"0","exit":{"_tag":"Success","value":{"_tag":"SyncMessage.Pong"}}}"#
        );
    }

    #[test]
    fn encodes_typed_errors_golden() {
        let cases = [
            (
                SyncError::ServerAhead { minimum_expected_num: 3, provided_num: 1 },
                r#"{"_tag":"ServerAheadError","minimumExpectedNum":3,"providedNum":1}"#,
            ),
            (
                SyncError::BackendIdMismatch {
                    expected: "<server backendId>".into(),
                    received: "<client's backendId>".into(),
                },
                r#"{"_tag":"BackendIdMismatchError","expected":"<server backendId>","received":"<client's backendId>"}"#,
            ),
            (
                SyncError::Unknown { cause: "text".into(), note: Some("optional".into()) },
                r#"{"_tag":"UnknownError","cause":"text","note":"optional"}"#,
            ),
            (SyncError::unknown("boom"), r#"{"_tag":"UnknownError","cause":"boom"}"#),
        ];
        for (error, golden) in cases {
            assert_eq!(to_json_string(&error), golden);
            let frame = ServerMessage::Exit { request_id: "3".into(), exit: Exit::Failure(error) };
            assert_eq!(
                frame.to_json(),
                r#"{"_tag":"Exit","requestId":"3","exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":{…typed error…}}}}"#
                    .replace("{…typed error…}", golden)
            );
        }
    }

    #[test]
    fn encodes_http_responses_golden() {
        let exit = |request_id: &str, exit| ServerMessage::Exit { request_id: request_id.into(), exit };
        let pull = [ServerMessage::Chunk { request_id: "2".into(), page: spec_page() }, exit("2", Exit::PullComplete)];
        assert_eq!(
            encode_http_response(&pull),
            r#"[{"_tag":"Chunk","requestId":"2","values":[<PullResponse>,…]},{"_tag":"Exit","requestId":"2","exit":{"_tag":"Success"}}]"#
                .replace("<PullResponse>,…", &spec_page_json())
        );
        assert_eq!(
            encode_http_response(&[exit("3", Exit::PushOk)]),
            r#"[{"_tag":"Exit","requestId":"3","exit":{"_tag":"Success","value":{}}}]"#
        );
        assert_eq!(
            encode_http_response(&[exit(
                "5",
                Exit::Failure(SyncError::ServerAhead { minimum_expected_num: 3, provided_num: 1 })
            )]),
            r#"[{"_tag":"Exit","requestId":"5","exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":{"_tag":"ServerAheadError","minimumExpectedNum":3,"providedNum":1}}}}]"#
        );
        assert_eq!(
            encode_http_response(&[exit("0", Exit::PingOk)]),
            r#"[{"_tag":"Exit","requestId":"0","exit":{"_tag":"Success","value":{"_tag":"SyncMessage.Pong"}}}]"#
        );
        assert_eq!(encode_http_response(&[]), "[]");
    }

    #[test]
    fn escapes_request_ids_in_chunks() {
        let frame = spec_page().encode().chunk_frame("a\"b\\");
        assert!(frame.starts_with(r#"{"_tag":"Chunk","requestId":"a\"b\\","values":["#), "{frame}");
        let parsed: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed["requestId"], "a\"b\\");
    }

    // ---- bad input ----

    #[test]
    fn rejects_missing_option_keys() {
        let err = ws_err(&ws_pull_frame("7", r#"{"storeId":"s","live":true}"#));
        assert_eq!(err.request_id.as_deref(), Some("7"));
        assert_eq!(
            err.to_string(),
            r#"invalid SyncWsRpc.Pull: missing field `cursor` (an Option field is required; send {"_tag":"None"})"#
        );
        assert_eq!(
            ServerMessage::reply_to_bad_frame(&err).unwrap().to_json(),
            r#"{"_tag":"Exit","requestId":"7","exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":{"_tag":"UnknownError","cause":"invalid SyncWsRpc.Pull: missing field `cursor` (an Option field is required; send {\"_tag\":\"None\"})"}}}}"#
        );

        let err = ws_err(&ws_push_frame("8", &format!(r#"{{"storeId":"s","batch":[{EVENT}]}}"#)));
        assert_eq!(err.request_id.as_deref(), Some("8"));
        assert!(err.to_string().contains("missing field `backendId`"), "{err}");
    }

    #[test]
    fn rejects_malformed_options() {
        for (cursor, expected) in [
            (r#"null"#, "field `cursor`: expected an Option object: expected a JSON object, got null"),
            (r#"["None"]"#, "expected a JSON object, got an array"),
            (r#"{}"#, "Option has no string `_tag`"),
            (r#"{"_tag":"Maybe"}"#, r#"Option `_tag` must be "None" or "Some", got "Maybe""#),
            (r#"{"_tag":"Some"}"#, "Option `Some` has no `value`"),
            (r#"{"_tag":"Some","value":{"backendId":"b1"}}"#, "missing field `cursor.value.eventSequenceNumber`"),
            (
                r#"{"_tag":"Some","value":{"backendId":"b1","eventSequenceNumber":1.5}}"#,
                "floating point `1.5`, expected `cursor.value.eventSequenceNumber` to be a non-negative JSON integer",
            ),
            (r#"{"_tag":"Some","value":{"backendId":"b1","eventSequenceNumber":"3"}}"#, "invalid type: string \"3\""),
            (
                r#"{"_tag":"Some","value":{"backendId":7,"eventSequenceNumber":3}}"#,
                "field `cursor.value.backendId`: invalid type: integer `7`",
            ),
        ] {
            let payload = format!(r#"{{"storeId":"s","live":true,"cursor":{cursor}}}"#);
            let err = ws_err(&ws_pull_frame("9", &payload));
            assert_eq!(err.request_id.as_deref(), Some("9"));
            assert!(err.to_string().contains(expected), "{cursor}: {err}");
        }

        let payload = r#"{"storeId":"s","batch":[],"backendId":{"_tag":"Some","value":null}}"#;
        let err = ws_err(&ws_push_frame("10", payload));
        assert!(err.to_string().contains("field `backendId.value`: invalid type: null"), "{err}");
    }

    #[test]
    fn rejects_wrong_types() {
        for (payload, expected) in [
            (r#"{"live":true,"cursor":{"_tag":"None"}}"#, "missing field `storeId`"),
            (r#"{"storeId":1,"live":true,"cursor":{"_tag":"None"}}"#, "field `storeId`: invalid type: integer `1`"),
            (r#"{"storeId":"s","cursor":{"_tag":"None"}}"#, "missing field `live`"),
            (r#"{"storeId":"s","live":"true","cursor":{"_tag":"None"}}"#, "field `live`: invalid type: string"),
            (r#"[]"#, "field `payload`: expected a JSON object, got an array"),
        ] {
            let err = ws_err(&ws_pull_frame("11", payload));
            assert_eq!(err.request_id.as_deref(), Some("11"));
            assert!(err.to_string().contains(expected), "{payload}: {err}");
        }
        let err = ws_err(r#"{"_tag":"Request","id":"12","tag":"SyncWsRpc.Pull"}"#);
        assert_eq!(err.to_string(), "invalid SyncWsRpc.Pull: missing field `payload`");
    }

    #[test]
    fn rejects_non_integer_seq_nums_in_push() {
        for (bad, expected) in [("1.5", "floating point `1.5`"), (r#""1""#, r#"string "1""#), ("-1", "integer `-1`")] {
            let payload = format!(
                r#"{{"storeId":"s","batch":[{EVENT},{{"name":"n","seqNum":{bad},"parentSeqNum":1,"clientId":"c","sessionId":"s"}}],"backendId":{{"_tag":"None"}}}}"#
            );
            let err = ws_err(&ws_push_frame("13", &payload));
            assert_eq!(err.request_id.as_deref(), Some("13"));
            let text = err.to_string();
            assert!(text.starts_with("invalid SyncWsRpc.Push: batch[1]: "), "{text}");
            assert!(text.contains(expected) && text.contains("`seqNum`"), "{text}");
        }
        let payload = r#"{"storeId":"s","batch":[["n",null,1,0,"c","s"]],"backendId":{"_tag":"None"}}"#;
        let err = ws_err(&ws_push_frame("14", payload));
        assert!(err.to_string().contains("batch[0]: expected a JSON object, got an array"), "{err}");
    }

    #[test]
    fn rejects_unknown_rpc_tags_with_addressable_error() {
        for rpc in ["SyncWsRpc.Ping", "SyncHttpRpc.Pull", "SyncWsRpc.Nope"] {
            let frame = format!(r#"{{"_tag":"Request","id":"15","tag":"{rpc}","payload":{{}},"headers":[]}}"#);
            let err = ws_err(&frame);
            assert_eq!(err, DecodeError::new(Some("15".into()), DecodeErrorKind::UnknownRpc(rpc.into())));
            assert_eq!(
                ServerMessage::reply_to_bad_frame(&err).unwrap().to_json(),
                format!(
                    r#"{{"_tag":"Exit","requestId":"15","exit":{{"_tag":"Failure","cause":{{"_tag":"Fail","error":{{"_tag":"UnknownError","cause":"unknown RPC \"{rpc}\""}}}}}}}}"#
                )
            );
        }
        let err =
            decode_http_request(r#"{"_tag":"Request","id":"16","tag":"SyncWsRpc.Push","payload":{},"headers":[]}"#)
                .unwrap_err();
        assert_eq!(err, DecodeError::new(Some("16".into()), DecodeErrorKind::UnknownRpc("SyncWsRpc.Push".into())));
    }

    #[test]
    fn unaddressable_errors_get_no_reply() {
        let cases = [
            ("not json", DecodeErrorKind::InvalidJson(String::new())),
            (r#"[{"_tag":"Ping"}]"#, DecodeErrorKind::NotAnObject),
            (r#"{"id":"1"}"#, DecodeErrorKind::MissingTag),
            (r#"{"_tag":"Pong"}"#, DecodeErrorKind::UnknownTag("Pong".into())),
            (r#"{"_tag":"Chunk","requestId":"0","values":[]}"#, DecodeErrorKind::UnknownTag("Chunk".into())),
            (
                r#"{"_tag":"Ack"}"#,
                DecodeErrorKind::InvalidMessage { tag: "Ack".into(), detail: "missing field `requestId`".into() },
            ),
            (
                r#"{"_tag":"Interrupt","requestId":0}"#,
                DecodeErrorKind::InvalidMessage {
                    tag: "Interrupt".into(),
                    detail: "field `requestId`: invalid type: integer `0`, expected a string".into(),
                },
            ),
            (
                r#"{"_tag":"Request","id":0,"tag":"SyncWsRpc.Pull","payload":{}}"#,
                DecodeErrorKind::InvalidMessage {
                    tag: "Request".into(),
                    detail: "field `id`: invalid type: integer `0`, expected a string".into(),
                },
            ),
        ];
        for (frame, expected) in cases {
            let err = ws_err(frame);
            assert_eq!(err.request_id, None, "{frame}");
            match (&err.kind, &expected) {
                (DecodeErrorKind::InvalidJson(_), DecodeErrorKind::InvalidJson(_)) => {}
                _ => assert_eq!(err.kind, expected, "{frame}"),
            }
            assert_eq!(ServerMessage::reply_to_bad_frame(&err), None, "{frame}");
        }
        let err = ws_err(r#"{"_tag":"Request","id":"17","payload":{}}"#);
        assert_eq!(err.request_id.as_deref(), Some("17"));
        assert_eq!(err.to_string(), "invalid Request: missing field `tag`");
    }

    #[test]
    fn http_body_must_be_one_request_object() {
        let err = decode_http_request(r#"{"_tag":"Ping"}"#).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnexpectedMessage("Ping".into()));
        let err =
            decode_http_request(r#"[{"_tag":"Request","id":"2","tag":"SyncHttpRpc.Ping","payload":{"storeId":"s"}}]"#)
                .unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::NotAnObject);
    }
}
