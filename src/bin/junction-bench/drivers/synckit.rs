//! SyncKit at `/ws`, in binary frames, as `@synckit-js/sdk` speaks it (`protocols/synckit/WIRE.md`):
//! `auth` only when a token is given, `subscribe` answered by `sync_response`, writes as `delta`
//! (one field) or `delta_batch` (several), each acknowledged by an `ack` echoing its `messageId`,
//! and one `delta` broadcast per field to every subscriber of the document (the writer included).
//! Frames are built and read with Junction's own SyncKit codec.
//!
//! Every event is its own field (`w<writer>-<n>`), so that a server free to coalesce writes to
//! one field within a flush window still has to deliver each event.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use junction::protocols::synckit::frame::Framing;
use junction::protocols::synckit::message::{
    Auth, BatchOp, ClientMessage, Delta, DeltaBatch, DocumentRef, ServerMessage,
};
use junction::protocols::synckit::raw::{Json, RawObject, VectorClock};
use tokio_tungstenite::tungstenite::Message;

use crate::mark::{Mark, Tally};
use crate::net::{Socket, now_micros, now_millis};

use super::Target;

async fn connect(target: &Target) -> anyhow::Result<Socket> {
    let mut socket = target.dialer.connect(target.path.as_deref().unwrap_or("/ws")).await?;
    if let Some(token) = &target.token {
        send(&mut socket, &ClientMessage::Auth(Auth { token: Some(token.clone()), api_key: None })).await?;
        loop {
            match next_message(&mut socket).await?.context("the server closed the socket during auth")? {
                ServerMessage::AuthSuccess(_) => break,
                ServerMessage::AuthError(error) => bail!("auth refused: {}", error.error),
                ServerMessage::Error(error) => bail!("auth refused: {}", error.error),
                _ => {}
            }
        }
    }
    Ok(socket)
}

/// Subscribes to `document` and waits for its `sync_response`.
async fn subscribe(socket: &mut Socket, document: &str) -> anyhow::Result<()> {
    send(socket, &ClientMessage::Subscribe(DocumentRef::new(document))).await?;
    loop {
        match next_message(socket).await?.context("the server closed the socket before sync_response")? {
            ServerMessage::SyncResponse(response) if response.document_id == document => return Ok(()),
            ServerMessage::Error(error) => bail!("subscribe refused: {}", error.error),
            _ => {}
        }
    }
}

pub struct Subscriber {
    socket: Socket,
}

impl Subscriber {
    pub async fn open(target: &Target, document: &str) -> anyhow::Result<Subscriber> {
        let mut socket = connect(target).await?;
        subscribe(&mut socket, document).await?;
        Ok(Subscriber { socket })
    }

    pub async fn next(&mut self, tally: &mut Tally) -> anyhow::Result<bool> {
        let Some(message) = next_message(&mut self.socket).await? else { return Ok(false) };
        tally.frame();
        if let ServerMessage::Delta(delta) = message
            && let Some(mark) = parse_mark(delta.value.get())
        {
            tally.receive(mark, now_micros());
        }
        Ok(true)
    }
}

pub struct Writer {
    socket: Socket,
    document: String,
    client_id: String,
    clock: VectorClock,
    next_message: u64,
}

impl Writer {
    /// Connects and subscribes to the document first, as the SDK's `doc.init()` does.
    pub async fn open(target: &Target, document: &str, writer: u32) -> anyhow::Result<Writer> {
        let mut socket = connect(target).await?;
        subscribe(&mut socket, document).await?;
        Ok(Writer {
            socket,
            document: document.to_owned(),
            client_id: format!("bench-w{writer}"),
            clock: VectorClock::new(),
            next_message: 1,
        })
    }

    /// Writes one field per mark (a `delta` for one, a `delta_batch` for several) and waits for
    /// the `ack`. SyncKit has no refusals to retry.
    pub async fn publish(&mut self, marks: &[Mark]) -> anyhow::Result<u32> {
        let message_id = format!("bench-{}-{}", self.client_id, self.next_message);
        self.next_message += 1;
        let now = now_millis();
        let mut sets = marks.iter().map(|mark| {
            self.clock.increment(&self.client_id);
            let field = format!("w{}-{}", mark.w, mark.n);
            let value = Json::parse(&mark.to_json()).expect("a mark is JSON");
            Delta::sdk_set(&self.document, &field, value, self.clock.clone(), &self.client_id, now, &message_id)
        });
        let message = if marks.len() == 1 {
            ClientMessage::Delta(sets.next().expect("one mark"))
        } else {
            let deltas = sets
                .map(|mut set| {
                    set.message_id = None;
                    let op: RawObject = serde_json::from_str(&serde_json::to_string(&set).expect("a delta serializes"))
                        .expect("a delta is an object");
                    BatchOp::Object(op)
                })
                .collect();
            ClientMessage::DeltaBatch(DeltaBatch {
                document_id: self.document.clone(),
                deltas,
                message_id: Some(Json::string(&message_id)),
            })
        };
        send(&mut self.socket, &message).await?;
        loop {
            match next_message(&mut self.socket).await?.context("the server closed the socket during a write")? {
                ServerMessage::Ack(ack) if ack.message_id.as_string().as_deref() == Some(message_id.as_str()) => {
                    return Ok(0);
                }
                ServerMessage::Error(error) => bail!("write refused: {}", error.error),
                _ => {}
            }
        }
    }
}

async fn send(socket: &mut Socket, message: &ClientMessage) -> anyhow::Result<()> {
    let encoded = message.encode(Framing::Binary, now_millis(), None)?;
    socket.send(Message::binary(encoded.into_bytes())).await?;
    Ok(())
}

/// The next server message, `None` once the socket is closed.
async fn next_message(socket: &mut Socket) -> anyhow::Result<Option<ServerMessage>> {
    loop {
        let (data, ws_text) = match socket.next().await {
            Some(Ok(Message::Binary(data))) => (data.to_vec(), false),
            Some(Ok(Message::Text(text))) => (text.as_bytes().to_vec(), true),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
        };
        let (_, message) =
            ServerMessage::decode(&data, ws_text).map_err(|e| anyhow::anyhow!("undecodable frame: {e:?}"))?;
        return Ok(Some(message));
    }
}

fn parse_mark(value: &str) -> Option<Mark> {
    serde_json::from_str(value).ok()
}
