//! Pocket at `/sync`, as the `@pocket/sync` SyncEngine speaks it (`protocols/pocket/WIRE.md`): JSON text
//! frames, a `pull` of a collection (which subscribes the client to it) answered by a
//! `pull-response` with the same id, a `push` of inserts answered by a `push-response` with the
//! same id, and every other client of the collection getting the pushed changes as a
//! `pull-response` broadcast (`broadcast_…` id). Frames are built and read with Junction's own
//! Pocket codec.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use junction::protocols::pocket::change::{ChangeEvent, Operation};
use junction::protocols::pocket::checkpoint::Checkpoint;
use junction::protocols::pocket::client::{ClientMessage, DEFAULT_PULL_LIMIT, Pull, Push};
use junction::protocols::pocket::server::{ServerFrame, ServerMessage, decode_server_frame};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::mark::{Mark, Tally};
use crate::net::{Socket, now_micros, now_millis};

use super::Target;

fn path(target: &Target) -> String {
    let path = target.path.as_deref().unwrap_or("/sync");
    match &target.token {
        Some(token) => {
            format!("{path}?token={}", percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC))
        }
        None => path.to_owned(),
    }
}

/// A client id like the real client's (`<ms base36>-<6 base36>`), unique per connection.
fn request_id(node: &str, n: u64) -> String {
    format!("{node}-{n}")
}

pub struct Subscriber {
    socket: Socket,
    collection: String,
}

impl Subscriber {
    /// Connects and pulls the collection until `hasMore` is false.
    pub async fn open(target: &Target, collection: &str, node: u32) -> anyhow::Result<Subscriber> {
        let mut socket = target.dialer.connect(&path(target)).await?;
        let node_id = format!("bench-s{node}");
        let mut checkpoint = Checkpoint::new_client(&node_id, now_millis() as u64);
        for n in 0.. {
            let id = request_id(&node_id, n);
            let pull = ClientMessage::Pull(Pull {
                id: id.clone(),
                timestamp: Some((now_millis() as u64).into()),
                collections: vec![collection.to_owned()],
                checkpoint: checkpoint.clone(),
                limit: Some(DEFAULT_PULL_LIMIT),
            });
            socket.send(Message::text(pull.to_json())).await?;
            let response = loop {
                match next_message(&mut socket).await?.context("the server closed the socket during a pull")? {
                    ServerMessage::PullResponse(response) if response.id == id => break response,
                    ServerMessage::Error(error) if error.id == id => bail!("pull refused: {}", error.message),
                    _ => {}
                }
            };
            let mut sequences = checkpoint.sequences.take().unwrap_or_default();
            if let Some(server) = &response.checkpoint.sequences {
                sequences.merge_max(server);
            }
            checkpoint.sequences = Some(sequences);
            if !response.has_more {
                break;
            }
        }
        Ok(Subscriber { socket, collection: collection.to_owned() })
    }

    pub async fn next(&mut self, tally: &mut Tally) -> anyhow::Result<bool> {
        let Some(message) = next_message(&mut self.socket).await? else { return Ok(false) };
        tally.frame();
        if let ServerMessage::PullResponse(response) = message {
            let now = now_micros();
            for change in response.changes.get(&self.collection).unwrap_or_default() {
                if let Some(mark) = change.document.as_deref().and_then(parse_mark) {
                    tally.receive(mark, now);
                }
            }
        }
        Ok(true)
    }
}

pub struct Writer {
    socket: Socket,
    collection: String,
    node_id: String,
    checkpoint: Checkpoint,
    next_request: u64,
    sequence: u64,
}

impl Writer {
    pub async fn open(target: &Target, collection: &str, writer: u32) -> anyhow::Result<Writer> {
        let socket = target.dialer.connect(&path(target)).await?;
        let node_id = format!("bench-w{writer}");
        let checkpoint = Checkpoint::new_client(&node_id, now_millis() as u64);
        Ok(Writer { socket, collection: collection.to_owned(), node_id, checkpoint, next_request: 0, sequence: 0 })
    }

    /// Pushes one insert per mark and waits for the `push-response`.
    pub async fn publish(&mut self, marks: &[Mark]) -> anyhow::Result<u32> {
        let id = request_id(&self.node_id, self.next_request);
        self.next_request += 1;
        let now = now_millis() as u64;
        let changes = marks
            .iter()
            .map(|mark| {
                self.sequence += 1;
                let document_id = format!("w{}-{}", mark.w, mark.n);
                let document = format!(
                    r#"{{"_id":"{document_id}","w":{},"n":{},"t":{},"_rev":"1-bench","_createdAt":{now},"_updatedAt":{now},"_vclock":{{"{}":1}}}}"#,
                    mark.w, mark.n, mark.t, self.node_id
                );
                ChangeEvent {
                    operation: Operation::Insert,
                    document_id,
                    document: Some(RawValue::from_string(document).expect("a document is JSON")),
                    previous_document: None,
                    is_from_sync: false,
                    timestamp: Some(now.into()),
                    sequence: self.sequence,
                }
            })
            .collect();
        let push = ClientMessage::Push(Push {
            id: id.clone(),
            timestamp: Some(now.into()),
            collection: self.collection.clone(),
            changes,
            checkpoint: Some(self.checkpoint.clone()),
        });
        self.socket.send(Message::text(push.to_json())).await?;
        loop {
            match next_message(&mut self.socket).await?.context("the server closed the socket during a push")? {
                ServerMessage::PushResponse(response) if response.id == id => {
                    anyhow::ensure!(response.success, "push refused with {} conflicts", response.conflicts.len());
                    let mut sequences = self.checkpoint.sequences.take().unwrap_or_default();
                    if let Some(server) = &response.checkpoint.sequences {
                        sequences.merge_max(server);
                    }
                    self.checkpoint.sequences = Some(sequences);
                    return Ok(0);
                }
                ServerMessage::Error(error) if error.id == id => bail!("push refused: {}", error.message),
                _ => {}
            }
        }
    }
}

/// The next JSON message (the text `pong` is skipped), `None` once the socket is closed.
async fn next_message(socket: &mut Socket) -> anyhow::Result<Option<ServerMessage>> {
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
        };
        match decode_server_frame(&text).map_err(|e| anyhow::anyhow!("undecodable frame: {e:?}"))? {
            ServerFrame::Pong => continue,
            ServerFrame::Message(message) => return Ok(Some(message)),
        }
    }
}

fn parse_mark(document: &RawValue) -> Option<Mark> {
    serde_json::from_str(document.get()).ok()
}
