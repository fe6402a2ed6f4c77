//! Hostile connections: half-sent HTTP requests (slowloris), stalled uploads, sockets that flood
//! the server with messages, and WebSocket messages fragmented without end. Each test checks
//! that the server bounds what such a client can hold and keeps serving everyone else.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use junction::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::helpers::{Kind, TestApp, TestDatabase, spawn_app_with, test_config};

async fn app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    configure(&mut config);
    spawn_app_with(config, db).await
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap()
}

fn counter(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

/// Waits until the server closes `socket` (end of stream or reset); panics after 10 s. Bytes
/// the server sends first (a response) are skipped.
async fn closed_by_server(socket: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server still holds the connection after 10 s"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout_and_health_answers_meanwhile() {
    let app = app_with(|c| {
        c.limits.http_header_timeout_secs = 1;
        c.limits.max_http_connections = 50;
    })
    .await;
    // Four times the limit of connections that never finish their request head.
    let mut half_open = Vec::new();
    for _ in 0..200 {
        let mut socket = TcpStream::connect(app.addr).await.unwrap();
        socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        half_open.push(socket);
    }
    // Health checks and WebSocket upgrades still get in: the longest-waiting half-open
    // connection makes room for each.
    for _ in 0..5 {
        let health = reqwest::get(app.url("/health")).await.unwrap();
        assert_eq!(health.status(), 200);
    }
    let mut ws = crate::helpers::WsClient::connect(&format!("ws://{}/websocket?storeId=s", app.addr)).await;
    ws.send(r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#).await;
    assert!(ws.recv().await.contains("WSMessage.Pong"));

    for socket in &mut half_open {
        closed_by_server(socket).await;
    }
    let text = metrics(&app).await;
    let timed_out = counter(&text, r#"junction_connections_closed_total{protocol="http",reason="header_timeout"}"#);
    let evicted = counter(&text, r#"junction_connections_closed_total{protocol="http",reason="evicted"}"#);
    assert!(evicted >= 150 && timed_out >= 1, "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_and_a_stalled_upload_are_closed() {
    let app = app_with(|c| {
        c.limits.http_header_timeout_secs = 1;
        c.limits.http_idle_timeout_secs = 3;
    })
    .await;
    // One request answered, then nothing: the wait for the next head is timed too.
    let mut kept_alive = TcpStream::connect(app.addr).await.unwrap();
    kept_alive.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    closed_by_server(&mut kept_alive).await;

    // A body announced at 100 bytes that stops after 10.
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(b"POST /sync/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":\"1\",")
        .await
        .unwrap();
    closed_by_server(&mut stalled).await;

    let text = metrics(&app).await;
    assert_eq!(counter(&text, r#"junction_connections_closed_total{protocol="http",reason="header_timeout"}"#), 1);
    assert_eq!(counter(&text, r#"junction_connections_closed_total{protocol="http",reason="idle_timeout"}"#), 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Flooders

/// One protocol's flooder: where it connects, what it sends, and how the server's answer and its
/// "slow down" look.
struct Flood {
    protocol: &'static str,
    path: &'static str,
    message: &'static str,
    is_answer: fn(&str) -> bool,
    is_refusal: fn(&str) -> bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synckit_flooder_is_answered_then_closed() {
    flooder_is_answered_then_closed(Flood {
        protocol: "synckit",
        path: "/ws",
        message: r#"{"type":"ping","id":"p","timestamp":1}"#,
        is_answer: |r| r.contains(r#""type":"pong""#),
        is_refusal: |r| r.contains("RATE_LIMIT_EXCEEDED"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_livestore_03_flooder_is_answered_then_closed() {
    flooder_is_answered_then_closed(Flood {
        protocol: "livestore",
        path: "/websocket?storeId=flood03",
        message: r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#,
        is_answer: |r| r.contains("WSMessage.Pong"),
        is_refusal: |r| r.contains("Too many messages. Please slow down."),
    })
    .await;
}

/// 0.4 pings carry no id to refuse them with: over the rate they are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_livestore_04_ping_flooder_is_answered_then_closed() {
    flooder_is_answered_then_closed(Flood {
        protocol: "livestore",
        path: "/?storeId=flood04&transport=ws",
        message: r#"{"_tag":"Ping"}"#,
        is_answer: |r| r == r#"{"_tag":"Pong"}"#,
        is_refusal: |_| false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_livestore_04_request_flooder_is_answered_then_closed() {
    flooder_is_answered_then_closed(Flood {
        protocol: "livestore",
        path: "/?storeId=flood04&transport=ws",
        message: r#"{"_tag":"Request","id":"7","tag":"SyncWsRpc.Push","payload":{"storeId":"flood04","batch":[],"backendId":{"_tag":"None"}},"headers":[]}"#,
        is_answer: |r| r.contains(r#""requestId":"7""#) && !r.contains("slow down"),
        is_refusal: |r| r.contains(r#""requestId":"7""#) && r.contains("too many messages, please slow down"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pocket_flooder_is_answered_then_closed() {
    flooder_is_answered_then_closed(Flood {
        protocol: "pocket",
        path: "/sync",
        message: "ping",
        is_answer: |r| r == "pong",
        is_refusal: |r| r.contains("RATE_LIMITED"),
    })
    .await;
}

/// A burst far over the rate is answered message for message; a client that keeps sending
/// anyway is closed once the grace period is over, with a reason that says why.
async fn flooder_is_answered_then_closed(flood: Flood) {
    let app = app_with(|c| {
        c.limits.messages_per_second = 5;
        c.limits.flood_grace_secs = 1;
    })
    .await;
    let what = format!("{} at {}", flood.protocol, flood.path);
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}{}", app.addr, flood.path)).await.unwrap();
    let (mut sink, mut stream) = socket.split();

    let burst = 40;
    for _ in 0..burst {
        sink.send(Message::text(flood.message)).await.unwrap();
    }
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < burst {
        let reply = next_text(&mut stream, &what).await;
        if (flood.is_answer)(&reply) {
            answered += 1;
        } else if (flood.is_refusal)(&reply) {
            refused += 1;
        } else {
            panic!("{what}: unexpected reply {reply}");
        }
    }
    assert!(answered >= 5, "{what}: {answered} answered");

    // Keep flooding until the server closes the socket.
    let message = flood.message;
    let sending = tokio::spawn(async move {
        while sink.send(Message::text(message)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let close = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close frame with a code"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("{what}: the flooder was not closed with a close frame: {other:?}"),
        }
    };
    sending.abort();
    assert_eq!(u16::from(close.code), 1008, "{what}");
    assert_eq!(close.reason.as_str(), junction::protocols::socket::FLOODING, "{what}");
    let text = metrics(&app).await;
    let closed = format!(r#"junction_connections_closed_total{{protocol="{}",reason="flooding"}}"#, flood.protocol);
    assert_eq!(counter(&text, &closed), 1, "{text}");
    app.stop().await;
}

async fn next_text(
    stream: &mut (impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    what: &str,
) -> String {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: a message went unanswered for 10 s"));
        match next {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("{what}: expected a text reply, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fragmented WebSocket messages

/// A message whose continuation frames never end is refused once the reassembled size passes
/// the transport's limit (twice the larger of `limits.max_frame_bytes` and, for SyncKit,
/// `max_message_bytes`), not buffered without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_fragmented_message_is_refused_at_the_size_limit() {
    let app = app_with(|c| {
        c.limits.max_frame_bytes = 4096;
        c.limits.ws_max_write_buffer_bytes = 64 * 1024;
        c.protocols.synckit.max_message_bytes = 4096;
    })
    .await;
    for path in ["/ws", "/websocket?storeId=frag", "/?storeId=frag&transport=ws", "/sync"] {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", app.addr)).await.unwrap();
        let piece = vec![b'a'; 1024];
        let first = Frame::message(piece.clone(), OpCode::Data(Data::Text), false);
        socket.send(Message::Frame(first)).await.unwrap();
        let mut sent = piece.len();
        // Far more than the limit, if the server kept taking it.
        while sent < 4 * 1024 * 1024 {
            let header =
                FrameHeader { is_final: false, opcode: OpCode::Data(Data::Continue), ..FrameHeader::default() };
            let frame = Frame::from_payload(header, piece.clone().into());
            if socket.send(Message::Frame(frame)).await.is_err() {
                break;
            }
            sent += piece.len();
        }
        // Sends may succeed into the kernel's buffers for a while after the server gave up: what
        // tells is that the socket ends.
        let ended =
            tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = socket.next().await {} })
                .await;
        assert!(ended.is_ok(), "{path}: the server kept the socket after {sent} bytes of one message");
        assert!(sent < 4 * 1024 * 1024, "{path}: the server took {sent} bytes of one message");
    }
    app.stop().await;
}
