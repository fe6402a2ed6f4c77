//! LiveStore sync-cf 0.3 (WebSocket) and 0.4 (WebSocket and HTTP) client messages.

use super::{Verdict, assert_json, run, seeds_of, text};
use crate::protocols::livestore::wire_event::{WireEvent, to_json_string};
use crate::protocols::livestore::{v03, v04};

/// What is accepted into a push batch is stored and relayed to every other client: it must
/// encode to JSON that decodes to the same event.
fn assert_relays(batch: &[WireEvent]) {
    for event in batch {
        let json = to_json_string(event);
        let back: WireEvent =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("relayed event does not decode ({e}): {json}"));
        assert_eq!(&back, event, "relayed event differs: {json}");
    }
}

fn v03_target(input: &[u8]) -> Verdict {
    match v03::decode_request(&text(input)) {
        Ok(request) => {
            if let v03::Request::PushReq { batch, .. } = &request {
                assert_relays(batch);
            }
            Verdict::Accepted
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            assert_json(&v03::Response::bad_frame(&error).to_json());
            Verdict::Rejected
        }
    }
}

fn v04_ws_target(input: &[u8]) -> Verdict {
    match v04::decode_ws_message(&text(input)) {
        Ok(message) => {
            if let v04::ClientMessage::Request(v04::Request { call: v04::RpcCall::Push(push), .. }) = &message {
                assert_relays(&push.batch);
            }
            Verdict::Accepted
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            if let Some(reply) = v04::ServerMessage::reply_to_bad_frame(&error) {
                assert_json(&reply.to_json());
            }
            Verdict::Rejected
        }
    }
}

fn v04_http_target(input: &[u8]) -> Verdict {
    match v04::decode_http_request(&text(input)) {
        Ok(request) => {
            if let v04::RpcCall::Push(push) = &request.call {
                assert_relays(&push.batch);
            }
            Verdict::Accepted
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            let replies: Vec<_> = v04::ServerMessage::reply_to_bad_frame(&error).into_iter().collect();
            assert_json(&v04::encode_http_response(&replies));
            Verdict::Rejected
        }
    }
}

#[test]
fn livestore_v03_messages() {
    run("livestore-0.3", seeds_of(v03::tests::fuzz_seeds()), v03_target);
}

#[test]
fn livestore_v04_ws_messages() {
    run("livestore-0.4-ws", seeds_of(v04::tests::fuzz_seeds().0), v04_ws_target);
}

#[test]
fn livestore_v04_http_requests() {
    run("livestore-0.4-http", seeds_of(v04::tests::fuzz_seeds().1), v04_http_target);
}
