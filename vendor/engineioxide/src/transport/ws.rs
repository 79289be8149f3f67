//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection through tasks and channels
//! and to handle upgrade from polling to ws

use std::{
    future::poll_fn,
    ops::ControlFlow,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::{FutureExt, SinkExt, StreamExt, future::Fuse};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use smallvec::smallvec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use crate::{
    DisconnectReason, Socket, body::ResponseBody, config::EngineIoConfig, engine::EngineIo,
    errors::Error, handler::EngineIoHandler, queue::PacketQueue, socket::QueuedPackets,
    transport::make_open_packet,
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts.clone(), body);

    let ws_key = parts
        .headers
        .get("Sec-WebSocket-Key")
        .ok_or(Error::InvalidWebSocketKey)?
        .clone();

    // Switchboard patch: what the task captures stays in its state for the connection's whole
    // life, so it captures the upgrade future (not the request) and the request head boxed,
    // unboxed (the box freed) as the session opens.
    let upgrade = hyper::upgrade::on(req);
    let parts = Box::new(without_upgrade_headers(parts));
    tokio::spawn(async move {
        let conn = upgrade.await.map(hyper_util::rt::TokioIo::new);

        let res = match conn {
            Ok(conn) => on_init(engine.clone(), conn, protocol, sid, unbox(parts)).await,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("ws upgrade error: {}", _e);
                return;
            }
        };

        match res {
            Ok(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed")
            }
            Err(Error::MultipleWebsocketRequests) => {}
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed with error: {_e}");
                if let Some(sid) = sid {
                    engine.close_session(sid, DisconnectReason::TransportError);
                }
            }
        }
    });

    Ok(ws_response(&ws_key))
}

/// Moves a value out of its box and frees the box at once (Switchboard patch). `*boxed` in a
/// task would leave the emptied box allocated until the task ends: for a connection's task, its
/// whole life.
#[allow(clippy::boxed_local)] // taking the box is the point: it is freed here
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// The request head a WebSocket session keeps (Switchboard patch): without the headers of the
/// upgrade handshake itself, which nothing reads once the connection is upgraded, in a header
/// map sized for what is left (a map of five entries is ≈ 0.6 KB per socket).
///
/// `Sec-WebSocket-Protocol` stays: applications pass credentials in it.
fn without_upgrade_headers(mut parts: Parts) -> Parts {
    use http::header::{
        CONNECTION, HeaderMap, HeaderName, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION, UPGRADE,
    };
    const UPGRADE_ONLY: [HeaderName; 5] = [
        CONNECTION,
        UPGRADE,
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_EXTENSIONS,
    ];
    let all = std::mem::take(&mut parts.headers);
    let kept_len = all
        .keys()
        .filter(|name| !UPGRADE_ONLY.contains(name))
        .count();
    let mut kept = HeaderMap::with_capacity(kept_len);
    let mut name = None;
    // `into_iter` names a header once, before its first value.
    for (next, value) in all {
        if next.is_some() {
            name = next;
        }
        if let Some(name) = name.as_ref().filter(|n| !UPGRADE_ONLY.contains(n)) {
            kept.append(name.clone(), value);
        }
    }
    parts.headers = kept;
    parts
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Read packets from the websocket and handle them, it will block until the connection is closed
pub fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> impl Future<Output = Result<(), Error>> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Switchboard patch: a future keeps its captured values and its arguments for its whole
    // life, even once they are moved on. Opening the session (the raw connection, the request
    // head, the handshakes) runs in a box of its own, freed once the session is open; the
    // long-lived future holds only the WebSocket, the heartbeat and the serving loop.
    let opening = Box::pin(open_session(engine.clone(), conn, protocol, sid, req_data));
    async move {
        let OpenSession {
            socket,
            mut ws,
            runs_heartbeat,
        } = opening.await?;
        serve_session(&engine, &socket, &mut ws, runs_heartbeat).await;
        Ok(())
    }
}

/// A session whose WebSocket is open and ready to be served.
struct OpenSession<D: Default + Send + Sync + 'static, S> {
    socket: Arc<Socket<D>>,
    ws: WebSocketStream<S>,
    /// The session started on WebSocket, so its connection task runs the heartbeat (a session
    /// upgraded from polling keeps the heartbeat task polling started).
    runs_heartbeat: bool,
}

/// Opens the session of a new WebSocket (open packet), or takes over one that started on
/// polling (upgrade handshake).
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
async fn open_session<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<OpenSession<H::Data, S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => return Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => return Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, S>(&socket, &mut ws);
                match socket
                    .cancel
                    .run_until_cancelled(tokio::time::timeout(
                        engine.config.upgrade_timeout,
                        upgrade_fut,
                    ))
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                Ok(OpenSession {
                    socket,
                    ws,
                    runs_heartbeat: false,
                })
            }
        }
    } else {
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        init_handshake(socket.id, &mut ws, &engine.config).await?;
        Ok(OpenSession {
            socket,
            ws,
            runs_heartbeat: true,
        })
    }
}

/// Serves an open session until it ends, then closes it with the reason.
///
/// Switchboard patch: one task per WebSocket connection reads frames, writes queued packets and
/// (for a session that started on WebSocket) runs the heartbeat. Upstream spawns a writer task
/// and a heartbeat task beside the reader: two more task allocations, a split-stream lock and
/// their futures' state. The WebSocket and the heartbeat are lent to `serve_connection`, not
/// moved, so that each has one slot in the task's state.
async fn serve_session<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
    runs_heartbeat: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Built inside `pin!`: a future moved into a pinned slot would keep its first slot too.
    let heartbeat = pin!(if runs_heartbeat {
        socket
            .clone()
            .heartbeat(engine.config.ping_interval, engine.config.ping_timeout)
            .fuse()
    } else {
        Fuse::terminated()
    });
    match serve_connection(engine, socket, ws, heartbeat).await {
        Some(Err(ref e)) => {
            let reason =
                Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

            #[cfg(feature = "tracing")]
            tracing::debug!("error when handling packet: {:?}", e);
            engine.close_session(socket.id, reason);
        }
        Some(Ok(())) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws transport was closed");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
        }
        None => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "socket is closing");
        }
    }
}

/// What the connection task has taken from the socket's channels and not yet handed to the
/// WebSocket sink.
#[derive(Default)]
struct Outgoing {
    /// The rest of the packet group being written (a group is sent adjacently), last packet
    /// first. Switchboard patch: the boxed group itself (8 bytes in the connection task's state)
    /// rather than an iterator holding it inline (184).
    current: Option<QueuedPackets>,
    /// Frames were handed to the sink since the last flush.
    unflushed: bool,
    /// Switchboard patch: set when the sink first refused data (the client is not reading what
    /// is written to it), cleared once everything is written; the session ends when it fires.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Outgoing {
    /// The next packet to write: the rest of the current group, then the socket's queue
    /// (buffered groups, then the latest volatile one: upstream's order).
    fn next_packet(&mut self, cx: &mut Context<'_>, queue: &PacketQueue) -> Option<Packet> {
        loop {
            if let Some(packet) = self.current.as_mut().and_then(|group| group.pop()) {
                return Some(packet);
            }
            // Drop the spent group now: a spilled one holds a heap buffer.
            self.current = None;
            // Pending when empty; `None` once closed because the session is ending.
            let Poll::Ready(packets) = queue.poll_recv(cx) else {
                return None;
            };
            let mut packets = packets?;
            packets.reverse();
            self.current = Some(packets);
        }
    }
}

/// Serves a WebSocket session until the client closes it, it fails, or the session is closed
/// (`None`): frames from the client go to the handler, packets queued on the socket go to the
/// client, and `heartbeat` (when given) runs alongside. On the way out, packets still queued are
/// written and the WebSocket is closed, as upstream's writer task did.
async fn serve_connection<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
    mut heartbeat: Pin<&mut Fuse<impl Future<Output = ()>>>,
) -> Option<Result<(), Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A polling request that was in progress during the upgrade may still hold the lock.
    let Some(_internal_rx) = socket
        .cancel
        .run_until_cancelled(socket.internal_rx.lock())
        .await
    else {
        #[cfg(feature = "tracing")]
        tracing::debug!(sid = %socket.id, "session closed before the ws connection started");
        return None;
    };
    let mut outgoing = Outgoing::default();
    // A client that does not read what is written to it for this long is disconnected: as long
    // as it has to answer a ping.
    let write_deadline = engine.config.ping_timeout;

    let result = loop {
        tokio::select! {
            biased;
            res = poll_fn(|cx| poll_connection(cx, engine, socket, ws, &mut outgoing, write_deadline)) => {
                break Some(res);
            }
            _ = socket.cancel.cancelled() => break None,
            // The heartbeat only ends by closing the session, which the next turn sees as a
            // cancellation; a fused future stays pending once done.
            () = heartbeat.as_mut() => {}
        }
    };

    // Write what is still queued (a close packet, a disconnect), then close the WebSocket.
    // Switchboard patch: within the write deadline, and not at all for a client that stopped
    // reading (the session's close waits for this task to release the channels).
    let gave_up = outgoing
        .stalled
        .as_ref()
        .is_some_and(|stalled| stalled.is_elapsed());
    if !gave_up {
        #[cfg(feature = "tracing")]
        tracing::trace!(sid = %socket.id, "ws closing flush");
        // A write already waiting (the session ended otherwise, say by a missed pong) keeps its
        // deadline: the client does not get a fresh one.
        let deadline = outgoing.stalled.as_ref().map_or_else(
            || tokio::time::Instant::now() + write_deadline,
            |stalled| stalled.deadline(),
        );
        let closing = async {
            poll_fn(|cx| poll_write(cx, socket, ws, &mut outgoing, write_deadline)).await;
            SinkExt::close(ws).await.ok();
        };
        if tokio::time::timeout_at(deadline, closing).await.is_err() {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws closing flush timed out");
        }
    }
    result
}

/// The error ending a session whose client stopped reading.
fn slow_consumer() -> Error {
    Error::WsTransport(Box::new(tungstenite::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "slow consumer: the client did not read what was written to it",
    ))))
}

/// Reads every frame the client has sent and writes every queued packet the sink accepts.
/// Ready when the client closed the connection or an error ends it.
fn poll_connection<H: EngineIoHandler, S>(
    cx: &mut Context<'_>,
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
    outgoing: &mut Outgoing,
    write_deadline: std::time::Duration,
) -> Poll<Result<(), Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        match ws.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(msg))) => match on_ws_message(engine, socket, msg) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            },
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => break,
        }
    }

    let _ = poll_write(cx, socket, ws, outgoing, write_deadline);
    if let Some(stalled) = outgoing.stalled.as_mut()
        && stalled.as_mut().poll(cx).is_ready()
    {
        #[cfg(feature = "tracing")]
        tracing::warn!(sid = %socket.id, ?write_deadline, "disconnecting a slow consumer: its client stopped reading");
        return Poll::Ready(Err(slow_consumer()));
    }
    Poll::Pending
}

/// Hands queued packets to the sink while it has room, then flushes: ready once nothing is left
/// to write.
fn poll_write<D: Default + Send + Sync + 'static, S>(
    cx: &mut Context<'_>,
    socket: &Socket<D>,
    ws: &mut WebSocketStream<S>,
    outgoing: &mut Outgoing,
    write_deadline: std::time::Duration,
) -> Poll<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The sink refuses data only while it holds data it could not write: the clock starts.
    let stall = |outgoing: &mut Outgoing| {
        if outgoing.stalled.is_none() {
            outgoing.stalled = Some(Box::pin(tokio::time::sleep(write_deadline)));
        }
    };
    // Take a packet only when the sink has room for it, so nothing taken has to be put back.
    loop {
        let Poll::Ready(ready) = ws.poll_ready_unpin(cx) else {
            stall(outgoing);
            return Poll::Pending;
        };
        let Some(packet) = outgoing.next_packet(cx, &socket.queue) else {
            break;
        };
        let Some(msg) = packet_to_message(socket.protocol, packet) else {
            continue;
        };
        // A failed write drops the frame, as upstream's writer did; the read side reports the
        // broken connection.
        match ready.and_then(|()| ws.start_send_unpin(msg)) {
            Ok(()) => outgoing.unflushed = true,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("[sid={}] error sending packet: {}", socket.id, _e);
            }
        }
    }

    if outgoing.unflushed {
        let Poll::Ready(_res) = ws.poll_flush_unpin(cx) else {
            stall(outgoing);
            return Poll::Pending;
        };
        #[cfg(feature = "tracing")]
        tracing::trace!(sid = %socket.id, "ws flush");
        outgoing.unflushed = false;
    }
    outgoing.stalled = None;
    Poll::Ready(())
}

/// Hands one frame from the client to the session: `Break` once the client has closed it.
fn on_ws_message<H: EngineIoHandler>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    msg: Message,
) -> Result<ControlFlow<()>, Error> {
    match msg {
        Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
            Packet::Close => {
                #[cfg(feature = "tracing")]
                tracing::debug!("[sid={}] closing session", socket.id);
                engine.close_session(socket.id, DisconnectReason::TransportClose);
                return Ok(ControlFlow::Break(()));
            }
            Packet::Pong | Packet::Ping => {
                // A signal still pending means that the client is already known to be alive.
                socket.client_heartbeat.notify_one();
            }
            Packet::Message(msg) => engine.handler.on_message(msg, socket.clone()),
            p => return Err(Error::BadPacket(p)),
        },
        Message::Binary(mut data) => {
            if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                // The first byte is the message type, which we don't need.
                data = data.split_off(1);
            }
            engine.handler.on_binary(data, socket.clone());
        }
        Message::Close(_) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("websocket closed, closing session");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
            return Ok(ControlFlow::Break(()));
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = ?socket.id, "unexpected ws message");
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// The WebSocket frame for a packet; `None` for a Noop, which only a polling request needs
/// (one may still be queued from an upgrade).
fn packet_to_message(protocol: ProtocolVersion, packet: Packet) -> Option<Message> {
    match packet {
        Packet::Binary(bin) | Packet::BinaryV3(bin) => {
            if protocol == ProtocolVersion::V3 {
                // v3 protocol requires packet type as the first byte.
                let mut buff = Vec::with_capacity(bin.len() + 1);
                buff.push(0x04);
                buff.extend(bin);
                Some(Message::Binary(buff.into()))
            } else {
                Some(Message::Binary(bin))
            }
        }
        Packet::Noop => None,
        packet => {
            let packet = String::from(packet);
            Some(Message::Text(packet.into()))
        }
    }
}

/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.send(Message::Text(packet.into())).await?;
    Ok(())
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    // Switchboard patch: a control packet, queued even if the buffer is full (upstream waited
    // for room).
    socket
        .queue
        .send_control(Box::new(smallvec![Packet::Noop]))
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http::Request;
    use tokio::io::DuplexStream;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    /// Switchboard patch: a WebSocket session keeps the handshake's headers but the upgrade's.
    #[test]
    fn a_session_keeps_the_request_head_without_the_upgrade_headers() {
        let (parts, ()) = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("host", "example.com")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("cookie", "a=1")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("cookie", "b=2")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("sec-websocket-protocol", "token.abc")
            .body(())
            .unwrap()
            .into_parts();
        let kept = without_upgrade_headers(parts);
        let names: Vec<_> = kept.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "cookie", "sec-websocket-protocol"]);
        let cookies: Vec<_> = kept.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(kept.uri, "/socket.io/?EIO=4&transport=websocket");
    }

    #[derive(Debug)]
    struct StubHandler;
    impl EngineIoHandler for StubHandler {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    fn socket() -> Arc<Socket<()>> {
        Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &EngineIoConfig::default(),
            Request::<()>::default().into_parts().0,
            Box::new(|_, _| ()),
            false,
        ))
    }

    async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = tokio::io::duplex(1024);
        (
            WebSocketStream::from_raw_socket(server, Role::Server, None).await,
            WebSocketStream::from_raw_socket(client, Role::Client, None).await,
        )
    }

    fn engine() -> Arc<EngineIo<StubHandler>> {
        Arc::new(EngineIo::new(
            Arc::new(StubHandler),
            EngineIoConfig::default(),
        ))
    }

    /// Serves `server` for `socket` in a task of its own, without a heartbeat.
    fn spawn_connection(
        socket: &Arc<Socket<()>>,
        server: WebSocketStream<DuplexStream>,
    ) -> tokio::task::JoinHandle<Option<Result<(), Error>>> {
        spawn_connection_of(engine(), socket, server)
    }

    fn spawn_connection_of(
        engine: Arc<EngineIo<StubHandler>>,
        socket: &Arc<Socket<()>>,
        server: WebSocketStream<DuplexStream>,
    ) -> tokio::task::JoinHandle<Option<Result<(), Error>>> {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut server = server;
            let no_heartbeat = pin!(Fuse::<std::future::Ready<()>>::terminated());
            serve_connection(&engine, &socket, &mut server, no_heartbeat).await
        })
    }

    /// Switchboard patch: the heartbeat runs on the connection task with one timer. Pings go
    /// out every interval while the client answers (virtual time: the schedule is exact), and a
    /// missed pong closes the session as a heartbeat timeout.
    #[tokio::test(start_paused = true)]
    async fn heartbeat_pings_every_interval_and_closes_on_a_missed_pong() {
        let interval = Duration::from_secs(25);
        let timeout = Duration::from_secs(20);
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let socket = Arc::new(Socket::<()>::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &EngineIoConfig::default(),
            Request::<()>::default().into_parts().0,
            Box::new(move |_, reason| closed_tx.send(reason).unwrap()),
            false,
        ));
        let (server, mut client) = ws_pair().await;
        let engine = engine();
        let connection = tokio::spawn({
            let socket = socket.clone();
            async move {
                let mut server = server;
                let heartbeat = pin!(socket.clone().heartbeat(interval, timeout).fuse());
                serve_connection(&engine, &socket, &mut server, heartbeat).await
            }
        });

        let start = tokio::time::Instant::now();
        for round in 0..4u32 {
            let ping = client.next().await.unwrap().unwrap();
            assert_eq!(ping, Message::text("2"), "round {round}");
            assert_eq!(start.elapsed(), interval * round, "round {round}");
            // A late pong (within the timeout) does not shift the schedule.
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.send(Message::text("3")).await.unwrap();
        }
        assert!(closed_rx.try_recv().is_err(), "closed while answering");

        // The next ping goes unanswered.
        let ping = client.next().await.unwrap().unwrap();
        assert_eq!(ping, Message::text("2"));
        let reason = closed_rx.recv().await.unwrap();
        assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
        assert_eq!(start.elapsed(), interval * 4 + timeout);
        connection.abort();
    }

    /// A polling request can still hold the lock at the end of an upgrade.
    #[tokio::test]
    async fn connection_waits_for_the_lock_of_a_polling_request() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;

        let polling = socket.internal_rx.lock().await;
        let connection = spawn_connection(&socket, server);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !connection.is_finished(),
            "the connection should wait for the lock"
        );

        drop(polling);
        socket.emit(Str::from("hello")).unwrap();
        let msg = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the connection should send the packet")
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("4hello"));
    }

    #[tokio::test]
    async fn connection_waiting_for_the_lock_stops_with_the_session() {
        let socket = socket();
        let (server, _client) = ws_pair().await;

        let _polling = socket.internal_rx.lock().await;
        let connection = spawn_connection(&socket, server);
        tokio::time::sleep(Duration::from_millis(20)).await;

        socket.cancel.cancel();
        let res = tokio::time::timeout(TIMEOUT, connection)
            .await
            .expect("the connection should stop")
            .unwrap();
        assert!(res.is_none());
    }

    /// Packets queued before the session closes are still written (a disconnect packet, say),
    /// then the WebSocket is closed; a packet group larger than the socket's buffer is written
    /// whole, in order.
    #[tokio::test]
    async fn connection_writes_queued_packets_then_closes_when_the_session_ends() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let connection = spawn_connection(&socket, server);
        // Wait until the connection serves the session (a session closed before that has
        // nothing to write to).
        socket.emit(Str::from("hello")).unwrap();
        let hello = tokio::time::timeout(TIMEOUT, client.next()).await.unwrap();
        assert_eq!(hello.unwrap().unwrap(), Message::text("4hello"));

        let many = (0..64).map(|i| Bytes::from(vec![i; 64])).collect();
        socket
            .reserve()
            .unwrap()
            .emit_many(Str::from("first"), many);
        socket.emit(Str::from("last")).unwrap();
        socket.cancel.cancel();

        let mut received = Vec::new();
        while let Some(Ok(msg)) = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the connection should close the websocket")
        {
            received.push(msg);
        }
        assert_eq!(received.len(), 1 + 64 + 1 + 1, "{received:?}");
        assert_eq!(received[0], Message::text("4first"));
        assert_eq!(received[64], Message::binary(vec![63u8; 64]));
        assert_eq!(received[65], Message::text("4last"));
        assert!(matches!(received[66], Message::Close(_)));
        tokio::time::timeout(TIMEOUT, connection)
            .await
            .expect("the connection should stop")
            .unwrap();
    }

    /// Frames from the client reach the handler while packets are written to it.
    #[tokio::test]
    async fn connection_reads_and_writes_on_one_task() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let connection = spawn_connection(&socket, server);

        client.send(Message::text("3")).await.unwrap();
        socket.emit(Str::from("ping?")).unwrap();
        let msg = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("4ping?"));

        client.send(Message::text("1")).await.unwrap();
        let res = tokio::time::timeout(TIMEOUT, connection)
            .await
            .expect("a close packet should end the connection")
            .unwrap();
        assert!(matches!(res, Some(Ok(()))));
    }

    /// An engine whose clients must read within `deadline` (its ping timeout).
    fn engine_with_write_deadline(deadline: Duration) -> Arc<EngineIo<StubHandler>> {
        let config = EngineIoConfig {
            ping_timeout: deadline,
            ..EngineIoConfig::default()
        };
        Arc::new(EngineIo::new(Arc::new(StubHandler), config))
    }

    /// Switchboard patch: a client that stops reading ends its session (an error, so the
    /// session closes as a transport error) once a write has waited for the deadline.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_disconnected_after_the_write_deadline() {
        let socket = socket();
        let (server, _client_not_reading) = ws_pair().await;
        let connection = spawn_connection_of(
            engine_with_write_deadline(Duration::from_millis(200)),
            &socket,
            server,
        );
        // Far more than the 1 KiB pipe and the sink's buffer hold.
        for _ in 0..64 {
            socket.emit(Str::from("x".repeat(4096))).unwrap();
        }
        let res = tokio::time::timeout(TIMEOUT, connection)
            .await
            .expect("a stalled connection should end")
            .unwrap();
        assert!(matches!(res, Some(Err(Error::WsTransport(_)))), "{res:?}");
    }

    /// Switchboard patch: a client that reads slowly but keeps up is not disconnected.
    #[tokio::test]
    async fn a_client_that_keeps_reading_is_not_disconnected() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let connection = spawn_connection_of(
            engine_with_write_deadline(Duration::from_millis(200)),
            &socket,
            server,
        );
        for round in 0..5 {
            for _ in 0..8 {
                socket.emit(Str::from("y".repeat(512))).unwrap();
            }
            for _ in 0..8 {
                let msg = tokio::time::timeout(TIMEOUT, client.next()).await.unwrap();
                assert!(msg.unwrap().is_ok(), "round {round}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!connection.is_finished());
    }

    /// Switchboard patch: the closing flush to a client that does not read ends within the
    /// deadline instead of holding the session's channels (and its close) forever.
    #[tokio::test]
    async fn the_closing_flush_gives_up_on_a_client_that_does_not_read() {
        let socket = socket();
        let (server, _client_not_reading) = ws_pair().await;
        let connection = spawn_connection_of(
            engine_with_write_deadline(Duration::from_millis(300)),
            &socket,
            server,
        );
        socket.emit(Str::from("hello")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..16 {
            let _ = socket.emit(Str::from("z".repeat(4096)));
        }
        socket.cancel.cancel();
        tokio::time::timeout(TIMEOUT, connection)
            .await
            .expect("the closing flush should give up")
            .unwrap();
    }
}
