//! Pure validation rules, limits and constants of the reference server.
//! No clocks are read: callers pass `now_ms`.

use super::message::ErrorMessage;
use super::raw::js_len;

pub use super::message::MAX_MESSAGE_SIZE;

/// Longest accepted document id, in JS `String.length` units.
pub const MAX_DOCUMENT_ID_LEN: usize = 256;
/// Default `SYNCKIT_MAX_MESSAGES_PER_MINUTE`.
pub const DEFAULT_MAX_MESSAGES_PER_MINUTE: usize = 500;
/// Rate-limit sliding window.
pub const RATE_LIMIT_WINDOW_MS: i64 = 60_000;
/// Default `SYNCKIT_MAX_CONNECTIONS_PER_IP`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 50;
/// Default `WS_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Server-side broadcast batching: a fixed window from the first delta.
pub const BROADCAST_BATCH_WINDOW_MS: u64 = 50;
/// WebSocket control-ping interval.
pub const HEARTBEAT_INTERVAL_MS: u64 = 30_000;
/// Awareness entries older than this are dropped (checked every 30 s).
pub const AWARENESS_TIMEOUT_MS: i64 = 30_000;
/// Abandoned chunk sets are dropped after this.
pub const CHUNK_TIMEOUT_MS: i64 = 30_000;
/// The SDK reconnects if a `pong` doesn't arrive within this after its `ping`.
pub const SDK_PONG_TIMEOUT_MS: u64 = 5_000;
/// The SDK's `doc.init()` fails if no `sync_response` arrives within this.
pub const SDK_SYNC_TIMEOUT_MS: u64 = 10_000;
/// SDK 0.1.1's `set()` fails with "ACK timeout" after this.
pub const SDK_ACK_TIMEOUT_MS: u64 = 5_000;

/// WebSocket close codes and reasons the reference uses.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1001.
    pub const SERVER_SHUTDOWN: &str = "Server shutdown";
    /// 1008, after `auth_error`.
    pub const AUTHENTICATION_FAILED: &str = "Authentication failed";
    /// 1008, after ERROR `Authentication required`.
    pub const AUTHENTICATION_REQUIRED: &str = "Authentication required";
    /// 1008, on upgrade.
    pub const TOO_MANY_CONNECTIONS_FROM_IP: &str = "Too many connections from your IP";
    /// 1008, on upgrade.
    pub const SERVER_AT_CAPACITY: &str = "Server at maximum capacity";
}

/// `subscribe`'s document-id check, in the reference's order:
/// empty → `Invalid document ID`; longer than 256 UTF-16 units → `Document ID too long`;
/// not `^[a-zA-Z0-9_:-]+$` → `Document ID contains invalid characters`.
pub fn validate_document_id(document_id: &str) -> Result<(), ErrorMessage> {
    if document_id.is_empty() {
        return Err(ErrorMessage::invalid_document_id());
    }
    if js_len(document_id) > MAX_DOCUMENT_ID_LEN {
        return Err(ErrorMessage::document_id_too_long());
    }
    if !document_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-')) {
        return Err(ErrorMessage::document_id_invalid_characters());
    }
    Ok(())
}

/// The reference's demo whitelist for `subscribe`: `playground`, `playground:*`,
/// `wordwall`, `wordwall:*`, `room:*`, or an id whose first `:`-segment starts with ≥ 13 digits.
/// Refused ids get [`ErrorMessage::access_denied`]. Off by default in Junction.
pub fn demo_whitelist_allows(document_id: &str) -> bool {
    let prefixed =
        |base: &str| document_id == base || document_id.strip_prefix(base).is_some_and(|rest| rest.starts_with(':'));
    if prefixed("playground") || prefixed("wordwall") || document_id.starts_with("room:") {
        return true;
    }
    let base = document_id.split(':').next().unwrap_or("");
    base.bytes().take_while(u8::is_ascii_digit).count() >= 13
}

/// The `Message too large` check. `js_chars` is the message's size in JS string units; UTF-8 byte
/// length is never smaller, so checking a frame's byte length is at least as strict.
pub fn check_message_size(size: usize, max: usize) -> Result<(), ErrorMessage> {
    if size > max { Err(ErrorMessage::message_too_large(size, max)) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_id_rules() {
        assert_eq!(validate_document_id(""), Err(ErrorMessage::invalid_document_id()));
        assert_eq!(validate_document_id(&"a".repeat(257)), Err(ErrorMessage::document_id_too_long()));
        assert!(validate_document_id(&"a".repeat(256)).is_ok());
        assert_eq!(validate_document_id("room a"), Err(ErrorMessage::document_id_invalid_characters()));
        assert_eq!(validate_document_id("é"), Err(ErrorMessage::document_id_invalid_characters()));
        // Length is checked first, in UTF-16 units.
        assert_eq!(validate_document_id(&"😀".repeat(129)), Err(ErrorMessage::document_id_too_long()));
        for ok in ["room:p1", "doc-1", "test_doc:1", "A9"] {
            assert!(validate_document_id(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn demo_whitelist() {
        for ok in [
            "playground",
            "playground:x",
            "wordwall",
            "wordwall:a:b",
            "room:p1",
            "room:",
            "1769512101803",
            "1769512101803:text:block-1",
            "12345678901234abc",
        ] {
            assert!(demo_whitelist_allows(ok), "{ok}");
        }
        for no in ["doc-1", "playgroundx", "wordwall2", "room", "123456789012", "x:1769512101803", "test-doc-1"] {
            assert!(!demo_whitelist_allows(no), "{no}");
        }
    }

    #[test]
    fn size_limit() {
        assert!(check_message_size(2_000_000, MAX_MESSAGE_SIZE).is_ok());
        assert_eq!(
            check_message_size(2_000_001, MAX_MESSAGE_SIZE).unwrap_err().error,
            "Message too large (2000001 bytes, max 2000000)"
        );
    }
}
