//! The event plumbing every dialect shares: one handler per socket for all of its events, run
//! in the order they arrived, each in its own span (whose trace id is the `correlationId`),
//! counted in the metrics, held to the dialect's inbound size cap, and answered with the
//! dialect's reply or its rendering of the error.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::{
    ParserError,
    extract::{AckSender, Event, SocketRef, TryData},
};
use switchboard_common::{DomainError, ErrorCode, RoomKey, telemetry};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::{
    Gateway,
    core::{Core, Origin},
    dialect::{Mount, Reply},
    fanout::Adapter,
};

/// What a dialect's handler gets: the node, the socket, the socket's user (fixed at the
/// handshake, never taken from a payload) and the namespace it is mounted on.
#[derive(Clone)]
pub(crate) struct EventCx {
    pub gw: Arc<Gateway>,
    pub socket: SocketRef<Adapter>,
    pub user: Arc<str>,
    pub namespace: Arc<str>,
}

impl EventCx {
    pub fn core(&self) -> &Core {
        &self.gw.core
    }

    /// Joins the socket to `room` under the core's rules (see [`Core::join`]).
    pub async fn join(&self, room: &RoomKey) -> Result<(), DomainError> {
        self.gw.core.join(&self.socket, &self.user, room).await
    }

    /// This socket, as the origin of something it caused (a message it sent).
    pub fn origin(&self) -> Origin {
        Origin {
            namespace: self.namespace.to_string(),
            socket: self.socket.id,
        }
    }
}

/// Registers `mount`'s events on a socket authenticated as `user_id`: one handler for all of
/// them (socketioxide boxes every handler of every socket and keeps a map of them per socket,
/// which costs idle sockets memory). Events outside the contract get no answer.
///
/// A socket's events are handled one after the other, in the order they arrived (socketioxide
/// runs each handler as its own task): a `typing:stop` never overtakes its `typing:start`, and
/// two sends from one socket are stored in the order they were sent.
pub(crate) fn register(gw: &Arc<Gateway>, s: &SocketRef<Adapter>, user_id: &str, mount: &Mount) {
    let user: Arc<str> = Arc::from(user_id);
    let namespace: Arc<str> = Arc::from(mount.namespace.as_str());
    let dialect = mount.dialect.clone();
    let gw = gw.clone();
    let in_order = Arc::new(InOrder::default());
    s.on_fallback(
        move |s: SocketRef<Adapter>,
              Event(name): Event,
              TryData(data): TryData<Value>,
              ack: AckSender<Adapter>| {
            let cx = EventCx {
                gw: gw.clone(),
                socket: s,
                user: user.clone(),
                namespace: namespace.clone(),
            };
            let dialect = dialect.clone();
            // Taken here, synchronously, as the event arrives: the turn follows arrival order.
            let (previous, done) = in_order.turn();
            async move {
                if let Some(previous) = previous {
                    // Err = the previous event's handler finished (or its task ended).
                    let _ = previous.await;
                }
                handle(cx, dialect.as_ref(), &name, data, ack).await;
                drop(done);
            }
        },
    );
}

/// Turns for one socket's events: each waits for the one before it to finish.
#[derive(Default)]
struct InOrder(std::sync::Mutex<Option<oneshot::Receiver<()>>>);

impl InOrder {
    /// The previous event's completion to wait for, and this event's (dropped when done).
    fn turn(&self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, finished) = oneshot::channel();
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(finished);
        (previous, done)
    }
}

/// Runs the dialect's handler for `event` in its own span and answers as the dialect says.
async fn handle(
    cx: EventCx,
    dialect: &dyn crate::dialect::Dialect,
    event: &str,
    data: Result<Value, ParserError>,
    ack: AckSender<Adapter>,
) {
    let gw = cx.gw.clone();
    let socket = cx.socket.clone();
    let namespace = cx.namespace.clone();
    let span = tracing::info_span!("socket.event", namespace = %namespace, event, user_id = %cx.user, socket_id = %socket.id);
    async move {
        let too_large = match (&data, dialect.inbound_cap()) {
            (Ok(v), Some(cap)) => serde_json::to_vec(v).map_or(0, |b| b.len()) > cap,
            _ => false,
        };
        let outcome = if too_large {
            Err(DomainError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "Payload exceeds {} bytes",
                    dialect.inbound_cap().unwrap_or_default()
                ),
            ))
        } else {
            match data {
                Ok(v) => match dialect.handle(cx, event, v) {
                    Some(handler) => handler.await,
                    // Not an event of this contract: no answer, as for any unknown event.
                    None => return,
                },
                // No argument at all (`socket.emit('presence:heartbeat')`): a null payload,
                // which events that need one refuse as malformed.
                Err(_) => match dialect.handle(cx, event, Value::Null) {
                    Some(handler) => handler.await,
                    None => return,
                },
            }
        };
        gw.metrics.event_in(&namespace, event);
        let reply = match outcome {
            Ok(reply) => reply,
            Err(e) => {
                let correlation_id = telemetry::current_trace_id();
                // Logged here, where it is handled, with the id the client sees.
                tracing::info!(code = e.code.name(), message = %e.message, %correlation_id, "event refused");
                gw.metrics.error(e.code.name());
                let mut reply = dialect.error(event, &e, &correlation_id);
                // An event over the cap is dropped: its acknowledgement is never answered.
                if e.code == ErrorCode::PayloadTooLarge {
                    reply.ack = None;
                }
                reply
            }
        };
        send(&socket, reply, ack);
    }
    .instrument(span)
    .await
}

fn send(socket: &SocketRef<Adapter>, reply: Reply, ack: AckSender<Adapter>) {
    for e in reply.emits {
        if let Err(err) = socket.emit(e.event, &e.data) {
            tracing::debug!(error = %err, event = e.event, "reply not sent");
        }
    }
    if let Some(data) = reply.ack {
        // A client that passed no callback simply gets nothing.
        let _ = ack.send(&data);
    }
}
