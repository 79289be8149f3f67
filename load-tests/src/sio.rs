//! A lean Socket.IO 5 / Engine.IO 4 client over WebSocket only.
//!
//! Each client is one tokio task that owns its WebSocket and serves an unbounded command queue,
//! so 20,000 clients cost 20,000 small tasks, not 20,000 `socket.io-client`s. It answers pings,
//! joins the client's rooms after every (re)connect, tracks acknowledgements and, when allowed,
//! reconnects to the *next* gateway URL and re-sends the emits still waiting for an ack (what a
//! careful application does with `clientId`-idempotent sends).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Microseconds since the generator started: the clock embedded in message bodies, so a receiver
/// in this process computes delivery latency without any clock skew.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What a scenario sees of its clients' traffic. Called on the client's task: keep it short.
pub trait Handler: Send + Sync + 'static {
    fn on_event(&self, client: u32, event: &str, data: &Value);
    /// After a *re*connect, once the client is authenticated and has joined its rooms again.
    fn on_reconnected(&self, _client: u32, _node: usize) {}
    fn on_disconnected(&self, _client: u32) {}
}

/// Called once with the ack's first argument, or with `None` if the client gave up.
pub type AckFn = Box<dyn FnOnce(Option<Value>) + Send>;

enum Command {
    Emit {
        frame: String,
        ack: Option<AckFn>,
        retry: bool,
    },
    Close,
}

#[derive(Clone)]
pub struct ClientHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ClientHandle {
    /// Fire-and-forget emit.
    pub fn emit(&self, event: &str, data: &Value) {
        let frame = serde_json::to_string(&(event, data)).expect("json");
        let _ = self.tx.send(Command::Emit {
            frame,
            ack: None,
            retry: false,
        });
    }

    /// Emit with an acknowledgement; `retry` re-sends it after a reconnect until it is acked.
    pub fn emit_with_ack(&self, event: &str, data: &Value, retry: bool, ack: AckFn) {
        let frame = serde_json::to_string(&(event, data)).expect("json");
        let _ = self.tx.send(Command::Emit {
            frame,
            ack: Some(ack),
            retry,
        });
    }

    pub fn close(&self) {
        let _ = self.tx.send(Command::Close);
    }
}

/// Everything a client needs to (re)connect.
pub struct ClientSpec {
    pub id: u32,
    pub urls: Arc<Vec<String>>,
    /// Index in `urls` of the first gateway; reconnects try the following ones in turn.
    pub node: usize,
    pub token: String,
    /// Chats joined (`room:join`) after every connect.
    pub chats: Vec<String>,
    pub reconnect: bool,
}

/// `http://host:port` → the Engine.IO WebSocket URL.
pub fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")))
        .unwrap_or_else(|| base.to_string());
    format!("{rest}/socket.io/?EIO=4&transport=websocket")
}

/// A parsed Socket.IO packet of the default namespace.
enum Packet<'a> {
    Ping,
    Connected,
    ConnectError(&'a str),
    Disconnected,
    Event(&'a str),
    Ack(u64, &'a str),
    Other,
}

fn parse(frame: &str) -> Packet<'_> {
    let b = frame.as_bytes();
    match b.first() {
        Some(b'2') => return Packet::Ping,
        Some(b'4') => {}
        _ => return Packet::Other, // open (0), noop (6), ...
    }
    let rest = &frame[2.min(frame.len())..];
    match b.get(1) {
        Some(b'0') => Packet::Connected,
        Some(b'1') => Packet::Disconnected,
        Some(b'4') => Packet::ConnectError(rest),
        Some(b'2') => Packet::Event(rest.trim_start_matches(|c: char| c.is_ascii_digit())),
        Some(b'3') => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            match rest[..digits].parse() {
                Ok(id) => Packet::Ack(id, &rest[digits..]),
                Err(_) => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// Opens the WebSocket and completes the Socket.IO handshake with `auth: { token }`.
pub async fn handshake(url: &str, token: &str) -> anyhow::Result<Ws> {
    // tungstenite zero-fills the free part of its read buffer (128 KiB by default) before every
    // read, including the read that finds the socket empty: a quarter of the generator's CPU
    // in a persisted-send profile. Our frames are small; 4 KiB is plenty.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(ws_url(url), Some(config), true).await?;
    let auth = serde_json::json!({ "token": token });
    let mut sent_connect = false;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .context("handshake timed out")?
            .ok_or_else(|| anyhow!("closed during handshake"))??;
        let WsMessage::Text(text) = frame else {
            continue;
        };
        if text.starts_with('0') && !sent_connect {
            ws.send(WsMessage::text(format!("40{auth}"))).await?;
            sent_connect = true;
            continue;
        }
        match parse(&text) {
            Packet::Ping => ws.send(WsMessage::text("3")).await?,
            Packet::Connected => return Ok(ws),
            Packet::ConnectError(e) => bail!("connect_error {e}"),
            _ => {}
        }
    }
}

struct Pending {
    frame: String,
    ack: AckFn,
    retry: bool,
}

/// Starts a connected client: it joins its chats (the result is returned once every join is
/// acknowledged), then runs until it is closed, or, without reconnects, until its connection
/// ends.
pub async fn spawn_joined(
    spec: ClientSpec,
    ws: Ws,
    handler: Arc<dyn Handler>,
) -> (ClientHandle, anyhow::Result<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(run(spec, ws, rx, handler, joined_tx));
    let joined = joined_rx
        .await
        .unwrap_or_else(|_| Err(anyhow!("client task ended")));
    (ClientHandle { tx }, joined)
}

async fn run(
    spec: ClientSpec,
    mut ws: Ws,
    mut rx: mpsc::UnboundedReceiver<Command>,
    handler: Arc<dyn Handler>,
    joined: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) {
    let mut next_ack: u64 = 0;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut node = spec.node;
    let first = join_chats(&mut ws, &spec, &mut next_ack, &*handler).await;
    let failed = first.is_err();
    let _ = joined.send(first);
    if failed {
        return;
    }
    loop {
        let closed = serve(
            &mut ws,
            &spec,
            &mut rx,
            &mut next_ack,
            &mut pending,
            &*handler,
        )
        .await;
        if closed || !spec.reconnect {
            let _ = ws.close(None).await;
            for (_, p) in pending.drain() {
                (p.ack)(None);
            }
            return;
        }
        handler.on_disconnected(spec.id);
        // Reconnect to the following gateways in turn, backing off like socket.io-client
        // (starting at 100 ms, at most 1 s between attempts).
        let mut delay = Duration::from_millis(100);
        loop {
            node = (node + 1) % spec.urls.len();
            if let Ok(mut fresh) = handshake(&spec.urls[node], &spec.token).await
                && join_chats(&mut fresh, &spec, &mut next_ack, &*handler)
                    .await
                    .is_ok()
            {
                ws = fresh;
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        // Emits that were in flight when the connection died: send them again (same payload,
        // so same clientId) or give up on them.
        let old: Vec<Pending> = pending.drain().map(|(_, p)| p).collect();
        for p in old {
            if p.retry {
                next_ack += 1;
                if ws
                    .send(WsMessage::text(format!("42{next_ack}{}", p.frame)))
                    .await
                    .is_err()
                {
                    (p.ack)(None);
                    continue;
                }
                pending.insert(next_ack, p);
            } else {
                (p.ack)(None);
            }
        }
        handler.on_reconnected(spec.id, node);
    }
}

/// Serves one connection; returns true when the client was closed on purpose.
async fn serve(
    ws: &mut Ws,
    spec: &ClientSpec,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    next_ack: &mut u64,
    pending: &mut HashMap<u64, Pending>,
    handler: &dyn Handler,
) -> bool {
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None | Some(Command::Close) => return true,
                Some(Command::Emit { frame, ack, retry }) => {
                    let text = match ack {
                        None => format!("42{frame}"),
                        Some(ack) => {
                            *next_ack += 1;
                            let text = format!("42{}{frame}", *next_ack);
                            pending.insert(*next_ack, Pending { frame, ack, retry });
                            text
                        }
                    };
                    if ws.send(WsMessage::text(text)).await.is_err() {
                        return false;
                    }
                }
            },
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { return false };
                let WsMessage::Text(text) = frame else {
                    if matches!(frame, WsMessage::Close(_)) { return false; }
                    continue;
                };
                match parse(&text) {
                    Packet::Ping if ws.send(WsMessage::text("3")).await.is_err() => return false,
                    Packet::Event(json) => dispatch(spec.id, json, handler),
                    Packet::Ack(id, json) => {
                        if let Some(p) = pending.remove(&id) {
                            (p.ack)(first_arg(json));
                        }
                    }
                    Packet::Disconnected => return false,
                    _ => {}
                }
            }
        }
    }
}

fn first_arg(json: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(mut a)) if !a.is_empty() => Some(a.swap_remove(0)),
        _ => None,
    }
}

/// `[event, data, …]`: a stored event carries a further argument, its delivery-log offset
/// (connection state recovery), which the scenarios do not need.
fn dispatch(client: u32, json: &str, handler: &dyn Handler) {
    if let Ok(Value::Array(args)) = serde_json::from_str::<Value>(json)
        && let [Value::String(event), data, ..] = args.as_slice()
    {
        handler.on_event(client, event, data);
    }
}

/// `room:join` for each of the client's chats, waiting for every ack; events that arrive
/// meanwhile still reach the handler.
async fn join_chats(
    ws: &mut Ws,
    spec: &ClientSpec,
    next_ack: &mut u64,
    handler: &dyn Handler,
) -> anyhow::Result<()> {
    let mut waiting = HashMap::new();
    for chat in &spec.chats {
        *next_ack += 1;
        let frame = serde_json::to_string(&("room:join", serde_json::json!({ "chatId": chat })))?;
        ws.send(WsMessage::text(format!("42{}{frame}", *next_ack)))
            .await?;
        waiting.insert(*next_ack, chat.clone());
    }
    while !waiting.is_empty() {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .context("room:join timed out")?
            .ok_or_else(|| anyhow!("closed while joining"))??;
        let WsMessage::Text(text) = frame else {
            continue;
        };
        match parse(&text) {
            Packet::Ping => ws.send(WsMessage::text("3")).await?,
            Packet::Event(json) => dispatch(spec.id, json, handler),
            Packet::Ack(id, json) => {
                if let Some(chat) = waiting.remove(&id) {
                    let ok = first_arg(json)
                        .and_then(|v| v.get("ok").and_then(Value::as_bool))
                        .unwrap_or(false);
                    if !ok {
                        bail!("room:join {chat} refused: {json}");
                    }
                }
            }
            Packet::Disconnected => bail!("disconnected while joining"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_handler_with_or_without_an_offset() {
        #[derive(Default)]
        struct Seen(std::sync::Mutex<Vec<(String, Value)>>);
        impl Handler for Seen {
            fn on_event(&self, _client: u32, event: &str, data: &Value) {
                self.0
                    .lock()
                    .unwrap()
                    .push((event.to_string(), data.clone()));
            }
        }
        let seen = Seen::default();
        dispatch(0, r#"["typing:update",{"a":1}]"#, &seen);
        dispatch(0, r#"["message:new",{"b":2},"1700000000000-0"]"#, &seen);
        dispatch(0, r#"[1,2]"#, &seen);
        let seen = seen.0.into_inner().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].0, "message:new");
        assert_eq!(seen[1].1["b"], 2);
    }

    #[test]
    fn parses_the_packets_we_rely_on() {
        assert!(matches!(parse("2"), Packet::Ping));
        assert!(matches!(parse("40{\"sid\":\"x\"}"), Packet::Connected));
        assert!(matches!(
            parse("44{\"message\":\"UNAUTHORIZED\"}"),
            Packet::ConnectError(_)
        ));
        assert!(matches!(parse("42[\"a\",1]"), Packet::Event("[\"a\",1]")));
        match parse("4312[{\"ok\":true}]") {
            Packet::Ack(12, json) => assert_eq!(first_arg(json).unwrap()["ok"], true),
            _ => panic!("ack"),
        }
        assert_eq!(
            ws_url("http://127.0.0.1:3000/"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
    }
}
