//! LiveStore sync-cf 0.4 over its WebSocket RPC, as `@livestore/sync-cf` 0.4 speaks it: one
//! socket per store (`?storeId=…&transport=ws`), a live `SyncWsRpc.Pull` answered by `Chunk`s
//! (each acknowledged with an `Ack`), and `SyncWsRpc.Push` answered by an `Exit`. A push must
//! continue the store's head; a writer that loses a race hears `ServerAheadError` with the head
//! and pushes again on top of it, as the real client rebases.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use junction::protocols::livestore::wire_event::WireEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::mark::{Mark, Tally};
use crate::net::{Socket, now_micros};

use super::Target;

/// Request id of the live pull; the only pull a subscriber makes.
const PULL_ID: &str = "0";

pub fn path(target: &Target, store: &str) -> String {
    let mut query = format!("storeId={}&transport=ws", encode(store));
    if let Some(token) = &target.token {
        let payload = serde_json::json!({ "authToken": token }).to_string();
        query.push_str(&format!("&payload={}", encode(&payload)));
    }
    let path = target.path.as_deref().unwrap_or("/");
    format!("{path}?{query}")
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub struct Subscriber {
    socket: Socket,
}

impl Subscriber {
    /// Opens the socket and starts a live pull from the beginning; returns once the initial
    /// part is over (the first `NoMore` page), so later pages are live.
    pub async fn open(target: &Target, store: &str) -> anyhow::Result<Subscriber> {
        let mut socket = target.dialer.connect(&path(target, store)).await?;
        let pull = serde_json::json!({
            "_tag": "Request", "id": PULL_ID, "tag": "SyncWsRpc.Pull",
            "payload": {"storeId": store, "live": true, "cursor": {"_tag": "None"}},
            "headers": [],
        });
        socket.send(Message::text(pull.to_string())).await?;
        loop {
            let text = next_text(&mut socket).await?.context("the server closed the socket during the initial pull")?;
            let frame: Frame = serde_json::from_str(&text)?;
            match frame.tag {
                "Chunk" => {
                    ack(&mut socket).await?;
                    if frame.values.iter().any(|page| page.page_info.tag == "NoMore") {
                        return Ok(Subscriber { socket });
                    }
                }
                "Exit" => bail!("the pull ended: {text}"),
                _ => {}
            }
        }
    }

    /// Reads one frame and tallies the marks it carries; `false` once the socket is closed.
    pub async fn next(&mut self, tally: &mut Tally) -> anyhow::Result<bool> {
        let Some(text) = next_text(&mut self.socket).await? else { return Ok(false) };
        tally.frame();
        let frame: Frame = serde_json::from_str(&text)?;
        match frame.tag {
            "Chunk" => {
                let now = now_micros();
                for page in &frame.values {
                    for item in &page.batch {
                        if let Some(mark) = item.event_encoded.args.and_then(parse_mark) {
                            tally.receive(mark, now);
                        }
                    }
                }
                ack(&mut self.socket).await?;
            }
            "Exit" => bail!("the live pull ended: {text}"),
            _ => {}
        }
        Ok(true)
    }
}

pub struct Writer {
    socket: Socket,
    store: String,
    client_id: String,
    head: u64,
    next_request: u64,
}

impl Writer {
    pub async fn open(target: &Target, store: &str, writer: u32) -> anyhow::Result<Writer> {
        let socket = target.dialer.connect(&path(target, store)).await?;
        Ok(Writer { socket, store: store.to_owned(), client_id: format!("bench-w{writer}"), head: 0, next_request: 1 })
    }

    /// Pushes `marks` as one batch on top of the head, until it is accepted; returns how many
    /// pushes were refused because another writer got there first.
    pub async fn publish(&mut self, marks: &[Mark]) -> anyhow::Result<u32> {
        let mut refused = 0;
        loop {
            let id = self.next_request.to_string();
            self.next_request += 1;
            let batch: Vec<WireEvent> = marks
                .iter()
                .enumerate()
                .map(|(i, mark)| WireEvent {
                    name: "benchEvent-v1".into(),
                    args: Some(RawValue::from_string(mark.to_json()).expect("a mark is JSON")),
                    seq_num: self.head + i as u64 + 1,
                    parent_seq_num: self.head + i as u64,
                    client_id: self.client_id.clone(),
                    session_id: "bench".into(),
                })
                .collect();
            let push = serde_json::json!({
                "_tag": "Request", "id": id, "tag": "SyncWsRpc.Push",
                "payload": {"storeId": self.store, "batch": batch, "backendId": {"_tag": "None"}},
                "headers": [],
            });
            self.socket.send(Message::text(push.to_string())).await?;
            let outcome = loop {
                let text = next_text(&mut self.socket).await?.context("the server closed the socket during a push")?;
                let frame: ExitFrame = serde_json::from_str(&text)?;
                if frame.tag != "Exit" || frame.request_id != Some(id.as_str()) {
                    continue;
                }
                let exit = frame.exit.context("an Exit without exit")?;
                break match exit.cause.and_then(|c| c.error) {
                    _ if exit.tag == "Success" => None,
                    Some(SyncError { tag: "ServerAheadError", minimum_expected_num: Some(head) }) => Some(Ok(head)),
                    _ => Some(Err(text.to_string())),
                };
            };
            match outcome {
                None => {
                    self.head += marks.len() as u64;
                    return Ok(refused);
                }
                Some(Ok(head)) => {
                    self.head = head;
                    refused += 1;
                }
                Some(Err(exit)) => bail!("push refused: {exit}"),
            }
        }
    }
}

async fn ack(socket: &mut Socket) -> anyhow::Result<()> {
    socket.send(Message::text(format!(r#"{{"_tag":"Ack","requestId":"{PULL_ID}"}}"#))).await?;
    Ok(())
}

/// The next text frame, `None` once the socket is closed.
async fn next_text(socket: &mut Socket) -> anyhow::Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(Some(text)),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

fn parse_mark(args: &RawValue) -> Option<Mark> {
    serde_json::from_str(args.get()).ok()
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: &'a str,
    #[serde(default, borrow)]
    values: Vec<Page<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    #[serde(borrow)]
    batch: Vec<Item<'a>>,
    #[serde(borrow)]
    page_info: Tagged<'a>,
}

#[derive(Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    #[serde(borrow)]
    event_encoded: EventArgs<'a>,
}

#[derive(Deserialize)]
struct EventArgs<'a> {
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExitFrame<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: &'a str,
    #[serde(borrow, default)]
    request_id: Option<&'a str>,
    #[serde(borrow, default)]
    exit: Option<Exit<'a>>,
}

#[derive(Deserialize)]
struct Exit<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: &'a str,
    #[serde(borrow, default)]
    cause: Option<Cause<'a>>,
}

#[derive(Deserialize)]
struct Cause<'a> {
    #[serde(borrow, default)]
    error: Option<SyncError<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncError<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: &'a str,
    #[serde(default)]
    minimum_expected_num: Option<u64>,
}
