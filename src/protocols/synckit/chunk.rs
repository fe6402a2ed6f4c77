//! `delta_batch_chunk` (0x23) reassembly, sans-I/O.
//!
//! Each chunk's `data` is base64; when every index of a `chunkId` has arrived the decoded
//! pieces are concatenated and the result is a complete frame (binary, or JSON text if it
//! starts with `{`) to feed to [`super::message::Incoming::decode`] with `ws_text = false`.
//! The reference never answers chunk problems on the wire (it only logs), so the
//! [`ChunkError`]s here are for logging. No SDK sends chunks; support is optional.

use thiserror::Error;

use super::message::DeltaBatchChunk;
use super::policy::CHUNK_TIMEOUT_MS;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("chunk data is not valid base64")]
    InvalidBase64,
    #[error("chunk {index} is outside 0..{total}")]
    IndexOutOfRange { index: u32, total: u32 },
    #[error("totalChunks {got} differs from the {expected} of the set's first chunk")]
    TotalMismatch { expected: u32, got: u32 },
    #[error("unfinished chunk sets would hold {size} bytes, over {max}")]
    TooLarge { size: usize, max: usize },
    #[error("chunk set would exceed {0} chunks")]
    TooManyChunks(u32),
    #[error("more than {0} chunk sets pending")]
    TooManyPendingSets(usize),
}

/// Limits the reference does not have (it trusts `totalChunks`); ours keep memory bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    pub max_chunks_per_set: u32,
    /// Decoded bytes of all of a connection's unfinished sets together, so also the largest
    /// reassembled message: the connection's message-size limit.
    pub max_pending_bytes: usize,
    pub max_pending_sets: usize,
    pub timeout_ms: i64,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_chunks_per_set: 1024,
            max_pending_bytes: super::policy::MAX_MESSAGE_SIZE,
            max_pending_sets: 16,
            timeout_ms: CHUNK_TIMEOUT_MS,
        }
    }
}

#[derive(Debug)]
struct ChunkSet {
    id: String,
    chunks: Vec<Option<Vec<u8>>>,
    bytes: usize,
    started_ms: i64,
}

/// Per-connection chunk buffers.
#[derive(Debug, Default)]
pub struct ChunkAssembler {
    limits: ChunkLimits,
    sets: Vec<ChunkSet>,
}

impl ChunkAssembler {
    pub fn new(limits: ChunkLimits) -> Self {
        ChunkAssembler { limits, sets: Vec::new() }
    }

    pub fn pending_sets(&self) -> usize {
        self.sets.len()
    }

    /// Adds one chunk; returns the reassembled frame when the set is complete. A repeated
    /// index replaces the earlier piece (as in the reference). On error the set is dropped.
    pub fn accept(&mut self, chunk: &DeltaBatchChunk, now_ms: i64) -> Result<Option<Vec<u8>>, ChunkError> {
        self.expire(now_ms);
        let result = self.accept_inner(chunk, now_ms);
        if result.is_err() {
            self.sets.retain(|s| s.id != chunk.chunk_id);
        }
        result
    }

    fn accept_inner(&mut self, chunk: &DeltaBatchChunk, now_ms: i64) -> Result<Option<Vec<u8>>, ChunkError> {
        let total = chunk.total_chunks;
        if total > self.limits.max_chunks_per_set {
            return Err(ChunkError::TooManyChunks(self.limits.max_chunks_per_set));
        }
        if chunk.chunk_index >= total {
            return Err(ChunkError::IndexOutOfRange { index: chunk.chunk_index, total });
        }
        let piece = decode_base64(&chunk.data).ok_or(ChunkError::InvalidBase64)?;
        let pos = match self.sets.iter().position(|s| s.id == chunk.chunk_id) {
            Some(pos) => pos,
            None => {
                if self.sets.len() >= self.limits.max_pending_sets {
                    return Err(ChunkError::TooManyPendingSets(self.limits.max_pending_sets));
                }
                self.sets.push(ChunkSet {
                    id: chunk.chunk_id.clone(),
                    chunks: vec![None; total as usize],
                    bytes: 0,
                    started_ms: now_ms,
                });
                self.sets.len() - 1
            }
        };
        let set = &mut self.sets[pos];
        if set.chunks.len() != total as usize {
            return Err(ChunkError::TotalMismatch { expected: set.chunks.len() as u32, got: total });
        }
        let old = set.chunks[chunk.chunk_index as usize].as_ref().map_or(0, Vec::len);
        let bytes = set.bytes - old + piece.len();
        let pending = self.sets.iter().map(|s| s.bytes).sum::<usize>() - old + piece.len();
        if pending > self.limits.max_pending_bytes {
            return Err(ChunkError::TooLarge { size: pending, max: self.limits.max_pending_bytes });
        }
        let set = &mut self.sets[pos];
        set.chunks[chunk.chunk_index as usize] = Some(piece);
        set.bytes = bytes;
        if set.chunks.iter().all(Option::is_some) {
            let set = self.sets.remove(pos);
            let mut out = Vec::with_capacity(set.bytes);
            for piece in set.chunks.into_iter().flatten() {
                out.extend_from_slice(&piece);
            }
            return Ok(Some(out));
        }
        Ok(None)
    }

    /// Drops sets older than the timeout; returns how many were dropped.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let before = self.sets.len();
        let timeout = self.limits.timeout_ms;
        self.sets.retain(|s| now_ms - s.started_ms <= timeout);
        before - self.sets.len()
    }
}

/// Base64 as Node's `Buffer.from(s, 'base64')` reads it, minus its silent skipping of junk:
/// standard and URL-safe alphabets, ASCII whitespace ignored, padding optional, decoding stops
/// at the first `=`. A dangling single sextet is dropped. Other characters → `None`.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, total: u32, index: u32, data: &str) -> DeltaBatchChunk {
        DeltaBatchChunk { chunk_id: id.into(), total_chunks: total, chunk_index: index, data: data.into() }
    }

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("a*b"), None);
    }

    #[test]
    fn reassembles_out_of_order() {
        let mut asm = ChunkAssembler::default();
        // "hello world" split as "hello" / " world"
        assert_eq!(asm.accept(&chunk("c1", 2, 1, "IHdvcmxk"), 0).unwrap(), None);
        assert_eq!(asm.pending_sets(), 1);
        assert_eq!(asm.accept(&chunk("c1", 2, 0, "aGVsbG8="), 5).unwrap().unwrap(), b"hello world");
        assert_eq!(asm.pending_sets(), 0);
    }

    #[test]
    fn expiry_and_errors() {
        let mut asm = ChunkAssembler::default();
        asm.accept(&chunk("c1", 2, 0, "aGVsbG8="), 0).unwrap();
        assert_eq!(asm.expire(30_001), 1);
        assert_eq!(asm.accept(&chunk("c2", 2, 2, ""), 0), Err(ChunkError::IndexOutOfRange { index: 2, total: 2 }));
        asm.accept(&chunk("c3", 2, 0, ""), 0).unwrap();
        assert_eq!(asm.accept(&chunk("c3", 3, 1, ""), 0), Err(ChunkError::TotalMismatch { expected: 2, got: 3 }));
        assert_eq!(asm.pending_sets(), 0, "a failed set is dropped");
        assert_eq!(asm.accept(&chunk("c4", 1, 0, "!!"), 0), Err(ChunkError::InvalidBase64));
        let mut small = ChunkAssembler::new(ChunkLimits { max_pending_bytes: 8, ..ChunkLimits::default() });
        assert_eq!(
            small.accept(&chunk("c5", 2, 0, "aGVsbG8gd29ybGQ="), 0),
            Err(ChunkError::TooLarge { size: 11, max: 8 })
        );
        // The limit holds for all unfinished sets together, not for each.
        small.accept(&chunk("c6", 2, 0, "aGVsbG8="), 0).unwrap();
        assert_eq!(small.accept(&chunk("c7", 2, 0, "aGVsbG8="), 0), Err(ChunkError::TooLarge { size: 10, max: 8 }));
        assert_eq!(small.accept(&chunk("c6", 2, 1, "aGk="), 0).unwrap().unwrap(), b"hellohi");
    }
}
