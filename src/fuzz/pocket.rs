//! Pocket client messages over WebSocket and HTTP (and the server-message decoder the Rust
//! test clients use).

use super::{Verdict, assert_json, run, seeds_of, text};
use crate::protocols::pocket::client::{
    ClientFrame, ClientMessage, HttpRoute, decode_client_frame_bytes, decode_client_message, decode_http_body,
    peek_request_id,
};
use crate::protocols::pocket::decode::DecodeError;
use crate::protocols::pocket::golden::fuzz_seeds;
use crate::protocols::pocket::server::{ErrorMessage, ServerFrame, ServerMessage, decode_server_frame};

/// What the server accepted it relays (changes) and stores: the encoding of the decoded
/// message must decode to the same message.
fn assert_reencodes(message: &ClientMessage) {
    let json = message.to_json();
    match decode_client_message(&json) {
        Ok(again) => assert_eq!(&again, message, "re-encoded: {json}"),
        Err(e) => panic!("re-encoded message does not decode ({e:?}): {json}"),
    }
}

fn assert_clean_error(error: &DecodeError) {
    let reply = ServerMessage::Error(ErrorMessage::from_decode_error(error, 1)).to_json();
    assert_json(&reply);
    // The Rust test clients read the reply back.
    assert!(matches!(decode_server_frame(&reply), Ok(ServerFrame::Message(ServerMessage::Error(_)))), "{reply}");
}

fn ws_target(input: &[u8]) -> Verdict {
    let _ = peek_request_id(&text(input));
    let verdict = match decode_client_frame_bytes(input) {
        Ok(ClientFrame::Ping) => Verdict::Accepted,
        Ok(ClientFrame::Message(message)) => {
            assert_reencodes(&message);
            Verdict::Accepted
        }
        Err(error) => {
            assert_clean_error(&error);
            Verdict::Rejected
        }
    };
    if decode_server_frame(&text(input)).is_ok() { Verdict::Accepted } else { verdict }
}

fn http_target(input: &[u8]) -> Verdict {
    let mut verdict = Verdict::Rejected;
    for route in [HttpRoute::Push, HttpRoute::Pull, HttpRoute::Any] {
        match decode_http_body(route, input) {
            Ok(message) => {
                assert_reencodes(&message);
                verdict = Verdict::Accepted;
            }
            Err(error) => assert_clean_error(&error),
        }
    }
    verdict
}

#[test]
fn pocket_ws_frames() {
    run("pocket-ws", seeds_of(fuzz_seeds()), ws_target);
}

#[test]
fn pocket_http_bodies() {
    let seeds = fuzz_seeds()
        .into_iter()
        .filter(|s| s.contains(r#""type":"pu"#) && !s.contains("-response"))
        .collect::<Vec<_>>();
    run("pocket-http", seeds_of(seeds), http_target);
}
