//! Protocol 0.3.x (`@livestore/sync-cf` 0.3.0 / 0.3.1): `WSMessage.*` JSON text frames
//! (`protocols/livestore/WIRE.md`, "Protocol 0.3.x").
//!
//! Decode each client text frame with [`decode_request`]; answer with [`Response::to_json`].
//! A frame that fails to decode can be answered with [`Response::bad_frame`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::decode::{
    DecodeErrorKind, optional_seq_num, parse_envelope, present, required, required_batch, string_if_present, tag_of,
};
use super::wire_event::{EncodeBatch, MetadataFormat, SyncedEvent, WireEvent, to_json_string};

pub use super::decode::DecodeError;

/// Events per `PullRes` page in the Cloudflare server.
pub const PULL_PAGE_SIZE: usize = 100;

/// `requestId` of every `Ping` and `Pong`; the client's schema accepts no other value.
pub const PING_REQUEST_ID: &str = "ping";

/// A decoded client → server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `cursor`: the last global seqNum the client has; `None` = from the beginning.
    PullReq {
        request_id: String,
        cursor: Option<u64>,
    },
    PushReq {
        request_id: String,
        batch: Vec<WireEvent>,
    },
    /// Its `requestId` is always the literal `"ping"`.
    Ping,
    AdminResetRoomReq {
        request_id: String,
        admin_secret: String,
    },
    AdminInfoReq {
        request_id: String,
        admin_secret: String,
    },
}

impl Request {
    pub fn request_id(&self) -> &str {
        match self {
            Request::PullReq { request_id, .. }
            | Request::PushReq { request_id, .. }
            | Request::AdminResetRoomReq { request_id, .. }
            | Request::AdminInfoReq { request_id, .. } => request_id,
            Request::Ping => PING_REQUEST_ID,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "_tag", default, borrow, deserialize_with = "present")]
    tag: Option<&'a RawValue>,
    #[serde(rename = "requestId", default, borrow, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    cursor: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    batch: Option<&'a RawValue>,
    #[serde(rename = "adminSecret", default, borrow, deserialize_with = "present")]
    admin_secret: Option<&'a RawValue>,
}

/// Decodes one client text frame. Unknown keys are ignored, as the client's schemas do.
pub fn decode_request(frame: &str) -> Result<Request, DecodeError> {
    let envelope: Envelope = parse_envelope(frame).map_err(|kind| DecodeError::new(None, kind))?;
    let request_id = string_if_present(envelope.request_id);
    let tag = tag_of(envelope.tag).map_err(|kind| DecodeError::new(request_id.clone(), kind))?;
    decode_fields(&tag, &envelope).map_err(|detail| {
        let kind = match detail {
            FieldError::UnknownTag => DecodeErrorKind::UnknownTag(tag.clone()),
            FieldError::Invalid(detail) => DecodeErrorKind::InvalidMessage { tag: tag.clone(), detail },
        };
        DecodeError::new(request_id, kind)
    })
}

enum FieldError {
    UnknownTag,
    Invalid(String),
}

impl From<String> for FieldError {
    fn from(detail: String) -> Self {
        FieldError::Invalid(detail)
    }
}

fn decode_fields(tag: &str, e: &Envelope) -> Result<Request, FieldError> {
    let request_id = || required::<String>(e.request_id, "requestId");
    Ok(match tag {
        "WSMessage.PullReq" => {
            Request::PullReq { request_id: request_id()?, cursor: optional_seq_num(e.cursor, "cursor")? }
        }
        "WSMessage.PushReq" => Request::PushReq { request_id: request_id()?, batch: required_batch(e.batch)? },
        "WSMessage.Ping" => {
            if request_id()? != PING_REQUEST_ID {
                return Err(FieldError::Invalid(format!("`requestId` must be {PING_REQUEST_ID:?}")));
            }
            Request::Ping
        }
        "WSMessage.AdminResetRoomReq" => Request::AdminResetRoomReq {
            request_id: request_id()?,
            admin_secret: required(e.admin_secret, "adminSecret")?,
        },
        "WSMessage.AdminInfoReq" => {
            Request::AdminInfoReq { request_id: request_id()?, admin_secret: required(e.admin_secret, "adminSecret")? }
        }
        _ => return Err(FieldError::UnknownTag),
    })
}

/// Whether a `PullRes` answers a pull or is the broadcast of an accepted push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullContext {
    Pull,
    Push,
}

/// A server → client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// On the wire `requestId` is the object `{"context":…,"requestId":…}`.
    /// For a pull page: the PullReq's id, `context: Pull`, `remaining` = events still to come
    /// after this page (0 on the last). For a push broadcast: the PushReq's id,
    /// `context: Push`, `remaining: 0`.
    PullRes {
        request_id: String,
        context: PullContext,
        batch: Vec<SyncedEvent>,
        remaining: u64,
    },
    PushAck {
        request_id: String,
    },
    Error {
        request_id: String,
        message: String,
    },
    /// Always sent with `requestId: "ping"`.
    Pong,
    AdminResetRoomRes {
        request_id: String,
    },
    AdminInfoRes {
        request_id: String,
        durable_object_id: String,
    },
}

impl Response {
    /// Rejection of a push whose `batch[0].parentSeqNum` is not the current head, in Cloudflare's
    /// exact words (the 0.3 client hands them to the app).
    pub fn invalid_parent(request_id: impl Into<String>, received: u64, expected: u64) -> Self {
        Response::Error {
            request_id: request_id.into(),
            message: format!("Invalid parent event number. Received e{received} but expected e{expected}"),
        }
    }

    pub fn invalid_admin_secret(request_id: impl Into<String>) -> Self {
        Response::Error { request_id: request_id.into(), message: "Invalid admin secret".to_owned() }
    }

    /// The reply to a frame that failed to decode: a `WSMessage.Error` addressed to the frame's
    /// `requestId` if it had a string one, else to `""` (which no client request matches, so
    /// the client drops it; it still shows up in wire logs).
    pub fn bad_frame(err: &DecodeError) -> Self {
        Response::Error { request_id: err.request_id.clone().unwrap_or_default(), message: err.to_string() }
    }

    pub fn to_json(&self) -> String {
        to_json_string(&self.wire())
    }

    fn wire(&self) -> Wire<'_> {
        match self {
            Response::PullRes { request_id, context, batch, remaining } => Wire::PullRes {
                batch: EncodeBatch { items: batch, format: MetadataFormat::V03 },
                request_id: PullResRequestId { context: *context, request_id },
                remaining: *remaining,
            },
            Response::PushAck { request_id } => Wire::PushAck { request_id },
            Response::Error { request_id, message } => Wire::Error { request_id, message },
            Response::Pong => Wire::Pong { request_id: PING_REQUEST_ID },
            Response::AdminResetRoomRes { request_id } => Wire::AdminResetRoomRes { request_id },
            Response::AdminInfoRes { request_id, durable_object_id } => {
                Wire::AdminInfoRes { request_id, info: AdminInfo { durable_object_id } }
            }
        }
    }
}

// Field order below is the wire's key order (the order Cloudflare's server writes).
#[derive(Serialize)]
#[serde(tag = "_tag", rename_all_fields = "camelCase")]
enum Wire<'a> {
    #[serde(rename = "WSMessage.PullRes")]
    PullRes { batch: EncodeBatch<'a>, request_id: PullResRequestId<'a>, remaining: u64 },
    #[serde(rename = "WSMessage.PushAck")]
    PushAck { request_id: &'a str },
    #[serde(rename = "WSMessage.Error")]
    Error { request_id: &'a str, message: &'a str },
    #[serde(rename = "WSMessage.Pong")]
    Pong { request_id: &'static str },
    #[serde(rename = "WSMessage.AdminResetRoomRes")]
    AdminResetRoomRes { request_id: &'a str },
    #[serde(rename = "WSMessage.AdminInfoRes")]
    AdminInfoRes { request_id: &'a str, info: AdminInfo<'a> },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PullResRequestId<'a> {
    context: PullContext,
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdminInfo<'a> {
    durable_object_id: &'a str,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::wire_event::SyncMetadata;
    use super::*;

    /// The example event of `WIRE.md`, substituted wherever a captured frame below shows `{…event…}`
    /// or `…`.
    const EVENT: &str = r#"{"name":"todoCreated-v1","args":{"id":"a","text":"x"},"seqNum":1,"parentSeqNum":0,"clientId":"c1","sessionId":"s1"}"#;
    const PUSHED_EVENT: &str = r#"{"name":"todoCreated","args":{"id":"t1","text":"todo 1"},"seqNum":1,"parentSeqNum":0,"clientId":"node-client","sessionId":"s1"}"#;

    fn event(json: &str) -> WireEvent {
        serde_json::from_str(json).unwrap()
    }

    fn synced(json: &str, created_at: Option<&str>) -> SyncedEvent {
        SyncedEvent { event: event(json), metadata: created_at.map(|c| SyncMetadata { created_at: c.into() }) }
    }

    fn decode_err(frame: &str) -> DecodeError {
        decode_request(frame).unwrap_err()
    }

    /// The client frames of the goldens below, as seeds for the fuzz run (`crate::fuzz`).
    pub(crate) fn fuzz_seeds() -> Vec<String> {
        let mut seeds: Vec<String> = [
            r#"{"_tag":"WSMessage.PullReq","requestId":"ewTcF_jzH_3F8byLtc0K9"}"#,
            r#"{"_tag":"WSMessage.PullReq","requestId":"r1","cursor":5}"#,
            r#"{"_tag":"WSMessage.PushReq","requestId":"r","batch":[]}"#,
            r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#,
            r#"{"_tag":"WSMessage.AdminResetRoomReq","requestId":"r3","adminSecret":"x"}"#,
            r#"{"_tag":"WSMessage.AdminInfoReq","requestId":"r4","adminSecret":"x"}"#,
            r#"{"cursor":7,"extra":{"a":[1]},"requestId":"r","_tag":"WSMessage.PullReq"}"#,
        ]
        .map(str::to_owned)
        .into();
        seeds.push(format!(
            r#"{{"_tag":"WSMessage.PushReq","requestId":"JiuuTB8qyV3eCniFYCze4","batch":[{PUSHED_EVENT},{EVENT}]}}"#
        ));
        seeds
    }

    // ---- client → server goldens ----

    #[test]
    fn decodes_pull_without_cursor() {
        let frame = r#"{"_tag":"WSMessage.PullReq","requestId":"ewTcF_jzH_3F8byLtc0K9"}"#;
        assert_eq!(
            decode_request(frame).unwrap(),
            Request::PullReq { request_id: "ewTcF_jzH_3F8byLtc0K9".into(), cursor: None }
        );
    }

    #[test]
    fn decodes_pull_with_cursor() {
        let frame = r#"{"_tag":"WSMessage.PullReq","requestId":"r1","cursor":5}"#;
        assert_eq!(decode_request(frame).unwrap(), Request::PullReq { request_id: "r1".into(), cursor: Some(5) });
    }

    #[test]
    fn decodes_push() {
        let frame = r#"{"_tag":"WSMessage.PushReq","requestId":"JiuuTB8qyV3eCniFYCze4","batch":[{"name":"todoCreated","args":{"id":"t1","text":"todo 1"},"seqNum":1,"parentSeqNum":0,"clientId":"node-client","sessionId":"s1"}]}"#;
        let request = decode_request(frame).unwrap();
        assert_eq!(request.request_id(), "JiuuTB8qyV3eCniFYCze4");
        assert_eq!(
            request,
            Request::PushReq { request_id: "JiuuTB8qyV3eCniFYCze4".into(), batch: vec![event(PUSHED_EVENT)] }
        );
        let Request::PushReq { batch, .. } = request else { unreachable!() };
        assert_eq!(to_json_string(&batch[0]), PUSHED_EVENT);
    }

    #[test]
    fn decodes_empty_push() {
        let frame = r#"{"_tag":"WSMessage.PushReq","requestId":"r","batch":[]}"#;
        assert_eq!(decode_request(frame).unwrap(), Request::PushReq { request_id: "r".into(), batch: vec![] });
    }

    #[test]
    fn decodes_ping() {
        let request = decode_request(r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#).unwrap();
        assert_eq!(request, Request::Ping);
        assert_eq!(request.request_id(), "ping");
    }

    #[test]
    fn decodes_admin_requests() {
        assert_eq!(
            decode_request(r#"{"_tag":"WSMessage.AdminResetRoomReq","requestId":"r3","adminSecret":"x"}"#).unwrap(),
            Request::AdminResetRoomReq { request_id: "r3".into(), admin_secret: "x".into() }
        );
        assert_eq!(
            decode_request(r#"{"_tag":"WSMessage.AdminInfoReq","requestId":"r4","adminSecret":"x"}"#).unwrap(),
            Request::AdminInfoReq { request_id: "r4".into(), admin_secret: "x".into() }
        );
    }

    #[test]
    fn ignores_extra_keys_and_key_order() {
        let frame = r#"{"cursor":7,"extra":{"a":[1]},"requestId":"r","_tag":"WSMessage.PullReq"}"#;
        assert_eq!(decode_request(frame).unwrap(), Request::PullReq { request_id: "r".into(), cursor: Some(7) });
    }

    // ---- server → client goldens ----

    #[test]
    fn encodes_pull_page() {
        let golden = r#"{"_tag":"WSMessage.PullRes","batch":[{"eventEncoded":{…event…},"metadata":{"_tag":"Some","value":{"createdAt":"2025-01-01T00:00:00.000Z"}}}],"requestId":{"context":"pull","requestId":"ewTcF_jzH_3F8byLtc0K9"},"remaining":0}"#
            .replace("{…event…}", EVENT);
        let response = Response::PullRes {
            request_id: "ewTcF_jzH_3F8byLtc0K9".into(),
            context: PullContext::Pull,
            batch: vec![synced(EVENT, Some("2025-01-01T00:00:00.000Z"))],
            remaining: 0,
        };
        assert_eq!(response.to_json(), golden);
    }

    #[test]
    fn encodes_push_broadcast() {
        let second =
            r#"{"name":"todoCreated-v1","args":null,"seqNum":2,"parentSeqNum":1,"clientId":"c1","sessionId":"s1"}"#;
        let golden = r#"{"_tag":"WSMessage.PullRes","batch":[{"eventEncoded":…,"metadata":{"_tag":"Some","value":{"createdAt":…}}},…],"requestId":{"context":"push","requestId":"<the PushReq's requestId>"},"remaining":0}"#
            .replacen("\"eventEncoded\":…", &format!("\"eventEncoded\":{EVENT}"), 1)
            .replacen("\"createdAt\":…", "\"createdAt\":\"2025-01-01T00:00:00.000Z\"", 1)
            .replacen(
                ",…]",
                &format!(r#",{{"eventEncoded":{second},"metadata":{{"_tag":"Some","value":{{"createdAt":"2025-01-01T00:00:00.000Z"}}}}}}]"#),
                1,
            )
            .replace("<the PushReq's requestId>", "JiuuTB8qyV3eCniFYCze4");
        let response = Response::PullRes {
            request_id: "JiuuTB8qyV3eCniFYCze4".into(),
            context: PullContext::Push,
            batch: vec![
                synced(EVENT, Some("2025-01-01T00:00:00.000Z")),
                synced(second, Some("2025-01-01T00:00:00.000Z")),
            ],
            remaining: 0,
        };
        assert_eq!(response.to_json(), golden);
    }

    #[test]
    fn encodes_empty_pull_and_none_metadata() {
        let empty =
            Response::PullRes { request_id: "r1".into(), context: PullContext::Pull, batch: vec![], remaining: 0 };
        assert_eq!(
            empty.to_json(),
            r#"{"_tag":"WSMessage.PullRes","batch":[],"requestId":{"context":"pull","requestId":"r1"},"remaining":0}"#
        );
        let none = Response::PullRes {
            request_id: "r1".into(),
            context: PullContext::Pull,
            batch: vec![synced(EVENT, None)],
            remaining: 150,
        };
        assert_eq!(
            none.to_json(),
            format!(
                r#"{{"_tag":"WSMessage.PullRes","batch":[{{"eventEncoded":{EVENT},"metadata":{{"_tag":"None"}}}}],"requestId":{{"context":"pull","requestId":"r1"}},"remaining":150}}"#
            )
        );
    }

    #[test]
    fn encodes_push_ack() {
        let response = Response::PushAck { request_id: "JiuuTB8qyV3eCniFYCze4".into() };
        assert_eq!(response.to_json(), r#"{"_tag":"WSMessage.PushAck","requestId":"JiuuTB8qyV3eCniFYCze4"}"#);
    }

    #[test]
    fn encodes_invalid_parent_error() {
        assert_eq!(
            Response::invalid_parent("wnXrEELyvxBEfXPvuzmAi", 1, 3).to_json(),
            r#"{"_tag":"WSMessage.Error","requestId":"wnXrEELyvxBEfXPvuzmAi","message":"Invalid parent event number. Received e1 but expected e3"}"#
        );
    }

    #[test]
    fn encodes_invalid_admin_secret() {
        assert_eq!(
            Response::invalid_admin_secret("r3").to_json(),
            r#"{"_tag":"WSMessage.Error","requestId":"r3","message":"Invalid admin secret"}"#
        );
    }

    #[test]
    fn encodes_pong() {
        assert_eq!(Response::Pong.to_json(), r#"{"_tag":"WSMessage.Pong","requestId":"ping"}"#);
    }

    #[test]
    fn encodes_admin_responses() {
        assert_eq!(
            Response::AdminResetRoomRes { request_id: "r3".into() }.to_json(),
            r#"{"_tag":"WSMessage.AdminResetRoomRes","requestId":"r3"}"#
        );
        assert_eq!(
            Response::AdminInfoRes { request_id: "r4".into(), durable_object_id: "abc".into() }.to_json(),
            r#"{"_tag":"WSMessage.AdminInfoRes","requestId":"r4","info":{"durableObjectId":"abc"}}"#
        );
    }

    #[test]
    fn escapes_strings() {
        let response = Response::Error { request_id: "a\"b".into(), message: "line\nbreak \u{1}".into() };
        assert_eq!(
            response.to_json(),
            r#"{"_tag":"WSMessage.Error","requestId":"a\"b","message":"line\nbreak \u0001"}"#
        );
    }

    // ---- bad input ----

    #[test]
    fn rejects_non_json_and_non_objects() {
        assert!(matches!(decode_err("{").kind, DecodeErrorKind::InvalidJson(_)));
        assert!(matches!(decode_err("").kind, DecodeErrorKind::InvalidJson(_)));
        assert_eq!(decode_err("[]").kind, DecodeErrorKind::NotAnObject);
        assert_eq!(decode_err(r#""WSMessage.Ping""#).kind, DecodeErrorKind::NotAnObject);
        assert_eq!(decode_err("null").kind, DecodeErrorKind::NotAnObject);
        let dup = decode_err(r#"{"_tag":"WSMessage.Ping","_tag":"WSMessage.Ping","requestId":"ping"}"#);
        assert!(matches!(dup.kind, DecodeErrorKind::InvalidJson(ref m) if m.contains("duplicate field")));
    }

    #[test]
    fn rejects_missing_or_non_string_tag() {
        let err = decode_err(r#"{"requestId":"r1"}"#);
        assert_eq!(err, DecodeError::new(Some("r1".into()), DecodeErrorKind::MissingTag));
        assert_eq!(decode_err(r#"{"_tag":5,"requestId":"r1"}"#).kind, DecodeErrorKind::MissingTag);
        assert_eq!(decode_err(r#"{"_tag":null}"#).kind, DecodeErrorKind::MissingTag);
    }

    #[test]
    fn rejects_unknown_and_server_only_tags() {
        for tag in ["WSMessage.Nope", "WSMessage.PullRes", "WSMessage.Pong", "Request"] {
            let err = decode_err(&format!(r#"{{"_tag":"{tag}","requestId":"r9"}}"#));
            assert_eq!(err.kind, DecodeErrorKind::UnknownTag(tag.into()));
            assert_eq!(err.request_id.as_deref(), Some("r9"));
        }
    }

    #[test]
    fn rejects_missing_or_wrong_type_fields() {
        let err = decode_err(r#"{"_tag":"WSMessage.PullReq"}"#);
        assert_eq!(err.request_id, None);
        assert_eq!(err.to_string(), "invalid WSMessage.PullReq: missing field `requestId`");

        let err = decode_err(r#"{"_tag":"WSMessage.PushReq","requestId":42,"batch":[]}"#);
        assert_eq!(err.request_id, None);
        assert!(err.to_string().contains("field `requestId`: invalid type: integer `42`"), "{err}");

        let err = decode_err(r#"{"_tag":"WSMessage.PushReq","requestId":"p1"}"#);
        assert_eq!(err.request_id.as_deref(), Some("p1"));
        assert_eq!(err.to_string(), "invalid WSMessage.PushReq: missing field `batch`");

        let err = decode_err(r#"{"_tag":"WSMessage.PushReq","requestId":"p1","batch":{}}"#);
        assert!(err.to_string().contains("field `batch`: invalid type: map"), "{err}");

        let err = decode_err(r#"{"_tag":"WSMessage.AdminInfoReq","requestId":"r4"}"#);
        assert_eq!(err.to_string(), "invalid WSMessage.AdminInfoReq: missing field `adminSecret`");
    }

    #[test]
    fn rejects_non_integer_seq_nums_in_push() {
        let ok = r#"{"name":"n","args":null,"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        let frame = format!(
            r#"{{"_tag":"WSMessage.PushReq","requestId":"p1","batch":[{ok},{{"name":"n","seqNum":1.5,"parentSeqNum":1,"clientId":"c","sessionId":"s"}}]}}"#
        );
        let err = decode_err(&frame);
        assert_eq!(err.request_id.as_deref(), Some("p1"));
        assert_eq!(
            err.to_string(),
            "invalid WSMessage.PushReq: batch[1]: invalid value: floating point `1.5`, expected `seqNum` to be a non-negative JSON integer no larger than 2^53-1"
        );
        for bad in [r#""1""#, "-1", "9007199254740992"] {
            let frame = format!(
                r#"{{"_tag":"WSMessage.PushReq","requestId":"p1","batch":[{{"name":"n","seqNum":2,"parentSeqNum":{bad},"clientId":"c","sessionId":"s"}}]}}"#
            );
            let err = decode_err(&frame);
            assert!(err.to_string().contains("batch[0]"), "{err}");
            assert!(err.to_string().contains("`parentSeqNum`"), "{err}");
        }
    }

    #[test]
    fn rejects_bad_cursor() {
        for bad in ["1.5", r#""5""#, "-1", "null"] {
            let err = decode_err(&format!(r#"{{"_tag":"WSMessage.PullReq","requestId":"r1","cursor":{bad}}}"#));
            assert_eq!(err.request_id.as_deref(), Some("r1"));
            assert!(err.to_string().contains("`cursor` to be a non-negative JSON integer"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_ping_with_other_request_id() {
        let err = decode_err(r#"{"_tag":"WSMessage.Ping","requestId":"x"}"#);
        assert_eq!(err.request_id.as_deref(), Some("x"));
        assert_eq!(err.to_string(), r#"invalid WSMessage.Ping: `requestId` must be "ping""#);
    }

    #[test]
    fn bad_frame_reply_is_an_error_frame_for_the_request() {
        let frame = r#"{"_tag":"WSMessage.PushReq","requestId":"p1","batch":[{"name":"n","seqNum":"1","parentSeqNum":0,"clientId":"c","sessionId":"s"}]}"#;
        let reply = Response::bad_frame(&decode_err(frame));
        assert_eq!(
            reply.to_json(),
            r#"{"_tag":"WSMessage.Error","requestId":"p1","message":"invalid WSMessage.PushReq: batch[0]: invalid type: string \"1\", expected `seqNum` to be a non-negative JSON integer no larger than 2^53-1"}"#
        );
        let reply = Response::bad_frame(&decode_err("not json"));
        let Response::Error { request_id, message } = &reply else { unreachable!() };
        assert_eq!(request_id, "");
        assert!(message.starts_with("frame is not valid JSON: "), "{message}");
    }
}
