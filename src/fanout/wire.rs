//! The frames instances exchange through Redis. Pure: bytes in, typed messages out, and back.
//!
//! A frame carries any number of messages from one instance, so that the publisher can send
//! whatever queued up while its previous publish was in flight as one Redis `PUBLISH`. Binary and
//! length-prefixed (all integers big-endian), because ephemeral payloads are arbitrary bytes and
//! event args are already JSON text that must not be re-encoded:
//!
//! ```text
//! frame     = "JNF" version:u8 origin:u128 count:u32 message{count}
//! message   = 1 store:i64 position:u64 backend_id:str prev_head:u64 n:u32 event{n}   batch with its events
//!           | 2 store:i64 position:u64 backend_id:str head:u64                        batch notice (events in storage)
//!           | 3 store:i64 backend_id:str                                              reset
//!           | 4 topic:str payload:bytes                                               ephemeral
//! event     = seq:u64 parent_seq:u64 change_pos:u64 name:str args:str client_id:str session_id:str created_at:str
//! str/bytes = len:u32 byte{len}
//! ```
//!
//! `position` 0 means "no change-log position" (a notice that did not come from a commit).
//! A receiver refuses a frame of another version as a whole; what it carried is then recovered
//! from the change log like any other lost message.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use super::LiveMessage;
use crate::eventlog::{ChangePos, CommittedBatch, Event, EventBody, SeqNum, StoreId};

const MAGIC: &[u8; 3] = b"JNF";
pub const VERSION: u8 = 1;

const TAG_BATCH: u8 = 1;
const TAG_NOTICE: u8 = 2;
const TAG_RESET: u8 = 3;
const TAG_EPHEMERAL: u8 = 4;

/// Identifies one running instance, so that it can recognise (and skip) its own frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub u128);

impl InstanceId {
    pub fn random() -> InstanceId {
        InstanceId(rand::random())
    }
}

/// What an instance hands to its publisher.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Live(Arc<LiveMessage>),
    Ephemeral { topic: Arc<str>, payload: Bytes },
}

/// A decoded frame.
#[derive(Debug)]
pub struct Frame {
    pub origin: InstanceId,
    pub messages: Vec<Incoming>,
}

#[derive(Debug)]
pub enum Incoming {
    /// `position` is the batch's change-log position, when the message stands for a batch.
    Live {
        position: Option<ChangePos>,
        message: LiveMessage,
    },
    /// A batch of a store the receiver said it does not want: its events were skipped unread.
    Unwanted {
        position: ChangePos,
    },
    Ephemeral {
        topic: String,
        payload: Bytes,
    },
}

/// Size limits of the encoder.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest batch (approximate encoded size) that travels with its events; larger ones go
    /// as a notice and receivers read the events from the database.
    pub inline_max_bytes: usize,
    /// A frame is closed once it reaches this size (a single larger message still goes alone).
    pub frame_max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a Junction fan-out frame")]
    NotAFrame,
    #[error("frame version {0} is not supported (this build speaks {VERSION})")]
    Version(u8),
    #[error("truncated frame")]
    Truncated,
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error("event args are not JSON")]
    NotJson,
    #[error("{0} bytes after the last message")]
    TrailingBytes(usize),
}

/// Encodes `messages` into as few frames as `limits` allow, keeping their order.
pub fn encode(origin: InstanceId, messages: &[Outgoing], limits: Limits) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut frame = BytesMut::new();
    let mut count = 0u32;
    let mut scratch = BytesMut::new();
    for message in messages {
        scratch.clear();
        encode_message(&mut scratch, message, limits.inline_max_bytes);
        if count > 0 && frame.len() + scratch.len() > limits.frame_max_bytes {
            frames.push(finish(frame, count));
            frame = BytesMut::new();
            count = 0;
        }
        if count == 0 {
            frame.put_slice(MAGIC);
            frame.put_u8(VERSION);
            frame.put_u128(origin.0);
            frame.put_u32(0); // count, patched in `finish`
        }
        frame.put_slice(&scratch);
        count += 1;
    }
    if count > 0 {
        frames.push(finish(frame, count));
    }
    frames
}

const COUNT_OFFSET: usize = MAGIC.len() + 1 + 16;

fn finish(mut frame: BytesMut, count: u32) -> Bytes {
    frame[COUNT_OFFSET..COUNT_OFFSET + 4].copy_from_slice(&count.to_be_bytes());
    frame.freeze()
}

fn encode_message(out: &mut BytesMut, message: &Outgoing, inline_max: usize) {
    match message {
        Outgoing::Live(live) => match &**live {
            LiveMessage::Batch(batch) if inline_size(batch) <= inline_max => {
                out.put_u8(TAG_BATCH);
                out.put_i64(batch.store.0);
                out.put_u64(batch.change_pos().0);
                put_str(out, &batch.backend_id);
                out.put_u64(batch.prev_head.0);
                out.put_u32(batch.events.len() as u32);
                for event in batch.events.iter() {
                    out.put_u64(event.seq.0);
                    out.put_u64(event.parent_seq.0);
                    out.put_u64(event.change_pos.0);
                    put_str(out, &event.body.name);
                    put_str(out, event.body.args.get());
                    put_str(out, &event.body.client_id);
                    put_str(out, &event.body.session_id);
                    put_str(out, &event.created_at);
                }
            }
            LiveMessage::Batch(batch) => {
                put_notice(out, batch.store, batch.change_pos(), &batch.backend_id, batch.last_seq())
            }
            LiveMessage::Advanced { store, backend_id, head } => {
                put_notice(out, *store, ChangePos(0), backend_id, *head)
            }
            LiveMessage::Reset { store, backend_id } => {
                out.put_u8(TAG_RESET);
                out.put_i64(store.0);
                put_str(out, backend_id);
            }
        },
        Outgoing::Ephemeral { topic, payload } => {
            out.put_u8(TAG_EPHEMERAL);
            put_str(out, topic);
            out.put_u32(payload.len() as u32);
            out.put_slice(payload);
        }
    }
}

fn put_notice(out: &mut BytesMut, store: StoreId, position: ChangePos, backend_id: &str, head: SeqNum) {
    out.put_u8(TAG_NOTICE);
    out.put_i64(store.0);
    out.put_u64(position.0);
    put_str(out, backend_id);
    out.put_u64(head.0);
}

/// Roughly what a batch adds to a frame with its events.
fn inline_size(batch: &CommittedBatch) -> usize {
    batch
        .events
        .iter()
        .map(|e| {
            44 + e.body.name.len()
                + e.body.args.get().len()
                + e.body.client_id.len()
                + e.body.session_id.len()
                + e.created_at.len()
        })
        .sum()
}

fn put_str(out: &mut BytesMut, text: &str) {
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
}

/// Decodes one frame. All or nothing: a frame with any defect is refused whole.
#[cfg(test)]
pub fn decode(input: &[u8]) -> Result<Frame, WireError> {
    decode_for(input, &|_| true)
}

/// Decodes one frame, reading the events of a batch only when `wanted(store)`: a store nobody
/// follows on this instance costs no allocation and no JSON check.
pub fn decode_for(mut input: &[u8], wanted: &dyn Fn(StoreId) -> bool) -> Result<Frame, WireError> {
    let buf = &mut input;
    if buf.len() < MAGIC.len() + 1 || &buf[..MAGIC.len()] != MAGIC {
        return Err(WireError::NotAFrame);
    }
    buf.advance(MAGIC.len());
    let version = buf.get_u8();
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let origin = InstanceId(take_u128(buf)?);
    let count = take_u32(buf)?;
    // Each message takes at least 9 bytes: bounds the allocation by what the input can hold.
    let mut messages = Vec::with_capacity((count as usize).min(buf.len() / 9));
    for _ in 0..count {
        messages.push(decode_message(buf, wanted)?);
    }
    if !buf.is_empty() {
        return Err(WireError::TrailingBytes(buf.len()));
    }
    Ok(Frame { origin, messages })
}

fn decode_message(buf: &mut &[u8], wanted: &dyn Fn(StoreId) -> bool) -> Result<Incoming, WireError> {
    let tag = take_u8(buf)?;
    match tag {
        TAG_BATCH => {
            let store = StoreId(take_u64(buf)? as i64);
            let position = ChangePos(take_u64(buf)?);
            let backend_id: Arc<str> = take_str(buf)?.into();
            let prev_head = SeqNum(take_u64(buf)?);
            let n = take_u32(buf)?;
            if !wanted(store) {
                for _ in 0..n {
                    skip(buf, 24)?;
                    for _ in 0..5 {
                        let len = take_u32(buf)? as usize;
                        skip(buf, len)?;
                    }
                }
                return Ok(Incoming::Unwanted { position });
            }
            let mut events = Vec::with_capacity((n as usize).min(buf.len() / 44));
            for _ in 0..n {
                let seq = SeqNum(take_u64(buf)?);
                let parent_seq = SeqNum(take_u64(buf)?);
                let change_pos = ChangePos(take_u64(buf)?);
                let name = take_str(buf)?;
                let args = RawValue::from_string(take_str(buf)?).map_err(|_| WireError::NotJson)?;
                let client_id = take_str(buf)?;
                let session_id = take_str(buf)?;
                let created_at = take_str(buf)?;
                events.push(Event {
                    seq,
                    parent_seq,
                    body: EventBody { name, args, client_id, session_id },
                    created_at,
                    change_pos,
                });
            }
            let message = LiveMessage::Batch(CommittedBatch { store, backend_id, prev_head, events: events.into() });
            Ok(Incoming::Live { position: Some(position), message })
        }
        TAG_NOTICE => {
            let store = StoreId(take_u64(buf)? as i64);
            let position = take_u64(buf)?;
            let backend_id = take_str(buf)?.into();
            let head = SeqNum(take_u64(buf)?);
            let position = (position != 0).then_some(ChangePos(position));
            Ok(Incoming::Live { position, message: LiveMessage::Advanced { store, backend_id, head } })
        }
        TAG_RESET => {
            let store = StoreId(take_u64(buf)? as i64);
            let backend_id = take_str(buf)?.into();
            Ok(Incoming::Live { position: None, message: LiveMessage::Reset { store, backend_id } })
        }
        TAG_EPHEMERAL => {
            let topic = take_str(buf)?;
            let len = take_u32(buf)? as usize;
            if buf.len() < len {
                return Err(WireError::Truncated);
            }
            let payload = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            Ok(Incoming::Ephemeral { topic, payload })
        }
        other => Err(WireError::UnknownTag(other)),
    }
}

fn take_u8(buf: &mut &[u8]) -> Result<u8, WireError> {
    buf.try_get_u8().map_err(|_| WireError::Truncated)
}

fn take_u32(buf: &mut &[u8]) -> Result<u32, WireError> {
    buf.try_get_u32().map_err(|_| WireError::Truncated)
}

fn take_u64(buf: &mut &[u8]) -> Result<u64, WireError> {
    buf.try_get_u64().map_err(|_| WireError::Truncated)
}

fn take_u128(buf: &mut &[u8]) -> Result<u128, WireError> {
    buf.try_get_u128().map_err(|_| WireError::Truncated)
}

fn skip(buf: &mut &[u8], len: usize) -> Result<(), WireError> {
    if buf.len() < len {
        return Err(WireError::Truncated);
    }
    buf.advance(len);
    Ok(())
}

fn take_str(buf: &mut &[u8]) -> Result<String, WireError> {
    let len = take_u32(buf)? as usize;
    if buf.len() < len {
        return Err(WireError::Truncated);
    }
    let text = std::str::from_utf8(&buf[..len]).map_err(|_| WireError::NotUtf8)?.to_owned();
    buf.advance(len);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: InstanceId = InstanceId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
    const LIMITS: Limits = Limits { inline_max_bytes: 1024, frame_max_bytes: 64 * 1024 };

    fn event(seq: u64, args: &str) -> Event {
        Event {
            seq: SeqNum(seq),
            parent_seq: SeqNum(seq - 1),
            body: EventBody {
                name: "e".into(),
                args: RawValue::from_string(args.into()).unwrap(),
                client_id: "c".into(),
                session_id: "s".into(),
            },
            created_at: "t".into(),
            change_pos: ChangePos(9),
        }
    }

    fn batch(events: Vec<Event>) -> Arc<LiveMessage> {
        let prev_head = SeqNum(events[0].seq.0 - 1);
        Arc::new(LiveMessage::Batch(CommittedBatch {
            store: StoreId(7),
            backend_id: "b".into(),
            prev_head,
            events: events.into(),
        }))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn golden_batch_and_ephemeral_frame() {
        let messages = [
            Outgoing::Live(batch(vec![event(3, "1")])),
            Outgoing::Ephemeral { topic: "t".into(), payload: Bytes::from_static(&[0, 255]) },
        ];
        let frames = encode(ORIGIN, &messages, LIMITS);
        assert_eq!(frames.len(), 1);
        let expected = [
            "4a4e4601",                         // "JNF", version 1
            "0102030405060708090a0b0c0d0e0f10", // origin
            "00000002",                         // two messages
            "01",                               // batch
            "0000000000000007",                 // store 7
            "0000000000000009",                 // change position 9
            "0000000162",                       // backend id "b"
            "0000000000000002",                 // prev head 2
            "00000001",                         // one event
            "0000000000000003",                 // seq 3
            "0000000000000002",                 // parent 2
            "0000000000000009",                 // change position 9
            "0000000165",                       // name "e"
            "0000000131",                       // args "1"
            "0000000163",                       // client "c"
            "0000000173",                       // session "s"
            "0000000174",                       // created at "t"
            "04",                               // ephemeral
            "0000000174",                       // topic "t"
            "0000000200ff",                     // payload 00 ff
        ]
        .concat();
        assert_eq!(hex(&frames[0]), expected);
    }

    #[test]
    fn golden_notice_and_reset() {
        let messages = [
            Outgoing::Live(Arc::new(LiveMessage::Reset { store: StoreId(1), backend_id: "n".into() })),
            Outgoing::Live(Arc::new(LiveMessage::Advanced {
                store: StoreId(2),
                backend_id: "b".into(),
                head: SeqNum(5),
            })),
        ];
        let frames = encode(ORIGIN, &messages, LIMITS);
        let expected = [
            "4a4e4601",
            "0102030405060708090a0b0c0d0e0f10",
            "00000002",
            "03",
            "0000000000000001",
            "000000016e",
            "02",
            "0000000000000002",
            "0000000000000000", // no change position
            "0000000162",
            "0000000000000005",
        ]
        .concat();
        assert_eq!(hex(&frames[0]), expected);
    }

    #[test]
    fn round_trip_keeps_everything() {
        let big_args = format!(r#"{{"text":"{}","emoji":"héllo 👋","nested":[1,{{"a":null}}]}}"#, "x".repeat(100));
        let original = batch(vec![event(10, &big_args), event(11, "null")]);
        let messages = [
            Outgoing::Live(original.clone()),
            Outgoing::Ephemeral { topic: "synckit:awareness:doc".into(), payload: Bytes::from(vec![7u8; 300]) },
            Outgoing::Live(Arc::new(LiveMessage::Reset { store: StoreId(3), backend_id: "fresh".into() })),
        ];
        let frames = encode(ORIGIN, &messages, LIMITS);
        let frame = decode(&frames[0]).unwrap();
        assert_eq!(frame.origin, ORIGIN);
        assert_eq!(frame.messages.len(), 3);
        match &frame.messages[0] {
            Incoming::Live { position, message } => {
                assert_eq!(*position, Some(ChangePos(9)));
                assert_eq!(message, &*original);
            }
            other => panic!("{other:?}"),
        }
        match &frame.messages[1] {
            Incoming::Ephemeral { topic, payload } => {
                assert_eq!(topic, "synckit:awareness:doc");
                assert_eq!(payload.as_ref(), &[7u8; 300][..]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&frame.messages[2], Incoming::Live { position: None, message: LiveMessage::Reset { .. } }));
    }

    #[test]
    fn batches_of_unwanted_stores_are_skipped_unread() {
        let messages = [
            Outgoing::Live(batch(vec![event(1, "[1]"), event(2, "{}")])),
            Outgoing::Ephemeral { topic: "t".into(), payload: Bytes::from_static(b"p") },
        ];
        let mut frame = encode(ORIGIN, &messages, LIMITS)[0].to_vec();
        let decoded = decode_for(&frame, &|store| store != StoreId(7)).unwrap();
        assert!(matches!(decoded.messages[0], Incoming::Unwanted { position: ChangePos(9) }));
        assert!(matches!(&decoded.messages[1], Incoming::Ephemeral { topic, .. } if topic == "t"));
        // Skipped, so not checked as JSON; but the frame's structure still is.
        let args_at = frame.windows(3).position(|w| w == b"[1]").unwrap();
        frame[args_at] = b'{';
        assert!(decode_for(&frame, &|store| store != StoreId(7)).is_ok());
        assert_eq!(decode(&frame).unwrap_err(), WireError::NotJson);
        assert_eq!(decode_for(&frame[..frame.len() - 3], &|_| false).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn a_large_batch_travels_as_a_notice() {
        let args = format!("\"{}\"", "x".repeat(2000));
        let frames = encode(ORIGIN, &[Outgoing::Live(batch(vec![event(4, &args), event(5, "1")]))], LIMITS);
        assert!(frames[0].len() < 100);
        let frame = decode(&frames[0]).unwrap();
        match &frame.messages[0] {
            Incoming::Live { position, message: LiveMessage::Advanced { store, backend_id, head } } => {
                assert_eq!((*position, *store, &**backend_id, *head), (Some(ChangePos(9)), StoreId(7), "b", SeqNum(5)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_are_split_at_the_size_limit_in_order() {
        let limits = Limits { inline_max_bytes: 1024, frame_max_bytes: 300 };
        let messages: Vec<Outgoing> = (1..=20).map(|seq| Outgoing::Live(batch(vec![event(seq, "1")]))).collect();
        let frames = encode(ORIGIN, &messages, limits);
        assert!(frames.len() > 1);
        assert!(frames.iter().all(|f| f.len() <= 300));
        let seqs: Vec<u64> = frames
            .iter()
            .flat_map(|f| decode(f).unwrap().messages)
            .map(|m| match m {
                Incoming::Live { message: LiveMessage::Batch(b), .. } => b.last_seq().0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        // A message larger than a frame still goes, alone.
        let huge = Outgoing::Ephemeral { topic: "t".into(), payload: Bytes::from(vec![0u8; 1000]) };
        assert_eq!(encode(ORIGIN, &[huge.clone(), huge], limits).len(), 2);
    }

    #[test]
    fn defective_frames_are_refused_whole() {
        let frames = encode(ORIGIN, &[Outgoing::Live(batch(vec![event(1, "[1,2]")]))], LIMITS);
        let good = frames[0].to_vec();
        assert!(decode(&good).is_ok());
        assert_eq!(decode(b"hello").unwrap_err(), WireError::NotAFrame);
        let mut other_version = good.clone();
        other_version[3] = 2;
        assert_eq!(decode(&other_version).unwrap_err(), WireError::Version(2));
        for cut in [5, 30, good.len() - 1] {
            assert_eq!(decode(&good[..cut]).unwrap_err(), WireError::Truncated, "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing).unwrap_err(), WireError::TrailingBytes(1));
        let mut unknown = good.clone();
        unknown[COUNT_OFFSET + 4] = 99;
        assert_eq!(decode(&unknown).unwrap_err(), WireError::UnknownTag(99));
        let args_at = good.windows(5).position(|w| w == b"[1,2]").unwrap();
        let mut not_json = good.clone();
        not_json[args_at] = b'{';
        assert_eq!(decode(&not_json).unwrap_err(), WireError::NotJson);
        // A huge count with no messages behind it fails without allocating for it.
        let mut lying = good[..COUNT_OFFSET].to_vec();
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&lying).unwrap_err(), WireError::Truncated);
    }
}
