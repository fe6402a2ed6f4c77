//! SyncKit frames (binary and JSON text) and `delta_batch_chunk` reassembly.

use super::{Verdict, run};
use crate::protocols::synckit::chunk::{ChunkAssembler, ChunkLimits};
use crate::protocols::synckit::frame::{Encoded, Framing, HEADER_LEN, decode_frame};
use crate::protocols::synckit::golden_tests::fuzz_seeds;
use crate::protocols::synckit::message::{ClientMessage, DecodeErrorKind, DeltaBatchChunk, Incoming, ServerMessage};
use crate::protocols::synckit::policy::CHUNK_TIMEOUT_MS;
use crate::protocols::synckit::raw::Json;

/// Mutating a binary frame's payload breaks its length field, and the frame is then refused
/// before its JSON is read. Half of the mutants get the length put right again so that the
/// payload decoders see them too.
fn fix_length(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() < HEADER_LEN || input[0] == b'{' || input.len() - HEADER_LEN > u32::MAX as usize {
        return None;
    }
    let mut fixed = input.to_vec();
    fixed[9..HEADER_LEN].copy_from_slice(&((input.len() - HEADER_LEN) as u32).to_be_bytes());
    (fixed != input).then_some(fixed)
}

/// One WebSocket message through what the server does with it: the client decoder, the error
/// reply, and (for test clients) the server-message decoder.
fn message(data: &[u8], ws_text: bool) -> Verdict {
    let mut verdict = Verdict::Rejected;
    if !ws_text && let Ok(frame) = decode_frame(data) {
        assert_eq!(frame.encode(), data[..HEADER_LEN + frame.payload.len()], "binary frame does not re-encode");
    }
    match Incoming::decode(data, ws_text) {
        Ok(incoming) => {
            verdict = Verdict::Accepted;
            assert_reencodes(&incoming);
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            // The reply must be a frame the SDK can read.
            let reply = ServerMessage::Error(error.to_error()).encode(error.framing, "x", 1);
            let back = ServerMessage::decode(reply.as_bytes(), error.framing == Framing::Text);
            assert!(back.is_ok(), "error reply does not decode: {back:?}");
        }
    }
    if ServerMessage::decode(data, ws_text).is_ok() {
        verdict = Verdict::Accepted;
    }
    verdict
}

/// A decoded client message, encoded the way a client would, decodes to the same message.
fn assert_reencodes(incoming: &Incoming) {
    if incoming.framing == Framing::Text && incoming.header_timestamp == 0 {
        // A text frame's timestamp must be truthy, yet `0.5` is and truncates to 0, which the
        // (test clients') encoder then writes as it is.
        return;
    }
    let Ok(encoded) = incoming.message.encode(incoming.framing, incoming.header_timestamp, incoming.id.as_ref()) else {
        return;
    };
    let mut expected = incoming.message.clone();
    if let ClientMessage::Delta(delta) = &mut expected
        && incoming.framing == Framing::Text
    {
        // A text frame always has a top-level timestamp, which a delta takes as its own when
        // its (flattened) payload had none that was a number.
        delta.timestamp = delta.timestamp.or(Some(incoming.header_timestamp));
    }
    let again = Incoming::decode(encoded.as_bytes(), matches!(encoded, Encoded::Text(_)));
    match again {
        Ok(again) => assert_eq!(again.message, expected, "re-encoded: {}", String::from_utf8_lossy(encoded.as_bytes())),
        Err(e) => panic!("re-encoded message does not decode ({e}): {}", String::from_utf8_lossy(encoded.as_bytes())),
    }
}

fn frames_target(input: &[u8]) -> Verdict {
    let mut verdict = message(input, false);
    if std::str::from_utf8(input).is_ok() && message(input, true) == Verdict::Accepted {
        verdict = Verdict::Accepted;
    }
    if let Some(fixed) = fix_length(input) {
        message(&fixed, false);
    }
    verdict
}

#[test]
fn synckit_frames() {
    run("synckit-frames", fuzz_seeds(), frames_target);
}

// ---- chunk reassembly ------------------------------------------------------------------------

/// Separates the frames of one chunk-stream input; no golden frame contains it.
const SEPARATOR: &[u8] = b"\xff\xfe";

/// Base64 with the standard alphabet and padding, as the reference's clients write it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Chunk streams: client frames split into 1 to 4 chunks, sent in order, backwards, or two
/// sets interleaved, in binary or JSON text framing.
fn chunk_seeds() -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = fuzz_seeds()
        .into_iter()
        .filter(|f| matches!(Incoming::decode(f, f.first() == Some(&b'{')), Ok(i) if !matches!(i.message, ClientMessage::DeltaBatchChunk(_))))
        .collect();
    let chunk_frames = |set: &str, whole: &[u8], parts: usize, text: bool| -> Vec<Vec<u8>> {
        whole
            .chunks(whole.len().div_ceil(parts).max(1))
            .enumerate()
            .map(|(i, piece)| {
                let chunk = DeltaBatchChunk {
                    chunk_id: set.to_owned(),
                    total_chunks: parts as u32,
                    chunk_index: i as u32,
                    data: base64(piece),
                };
                let (framing, id) =
                    if text { (Framing::Text, Some(Json::string("c-1"))) } else { (Framing::Binary, None) };
                ClientMessage::DeltaBatchChunk(chunk).encode(framing, 7, id.as_ref()).unwrap().into_bytes()
            })
            .collect()
    };
    let mut seeds = Vec::new();
    for (n, whole) in frames.iter().enumerate() {
        let parts = 1 + n % 4;
        let pieces = chunk_frames(&format!("set-{n}"), whole, parts, n % 3 == 2);
        if pieces.len() != parts {
            continue;
        }
        let mut stream: Vec<Vec<u8>> = pieces.clone();
        if n % 2 == 1 {
            stream.reverse();
        }
        if n % 5 == 4 {
            let other = chunk_frames("other", &frames[0], 2, false);
            stream = stream.into_iter().zip(other).flat_map(|(a, b)| [a, b]).collect();
        }
        seeds.push(stream.join(SEPARATOR));
    }
    seeds
}

/// The socket loop's chunk handling (`connection.rs`) with the real decoder and assembler:
/// each frame is decoded, chunks go to the assembler, a completed set is decoded as a frame.
/// Time advances between frames so that sets also expire.
fn chunks_target(input: &[u8]) -> Verdict {
    let limits = ChunkLimits { max_pending_bytes: 64 * 1024, ..ChunkLimits::default() };
    let mut assembler = ChunkAssembler::new(limits);
    let mut verdict = Verdict::Rejected;
    let mut now = 0i64;
    for data in split_on(input, SEPARATOR) {
        now += CHUNK_TIMEOUT_MS / 10;
        let ws_text = data.first() == Some(&b'{') && std::str::from_utf8(data).is_ok();
        let Ok(Incoming { message: ClientMessage::DeltaBatchChunk(chunk), .. }) = Incoming::decode(data, ws_text)
        else {
            continue;
        };
        assembler.expire(now);
        match assembler.accept(&chunk, now) {
            Ok(None) => {}
            Ok(Some(whole)) => {
                assert!(whole.len() <= limits.max_pending_bytes, "a set of {} bytes got through", whole.len());
                match Incoming::decode(&whole, false) {
                    Ok(_) => verdict = Verdict::Accepted,
                    Err(e) => assert!(matches!(e.kind, DecodeErrorKind::Frame(_)) || !e.to_string().is_empty()),
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        assert!(assembler.pending_sets() <= limits.max_pending_sets);
    }
    verdict
}

fn split_on<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(separator.len()).position(|w| w == separator) {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[test]
fn synckit_chunk_reassembly() {
    run("synckit-chunks", chunk_seeds(), chunks_target);
}
