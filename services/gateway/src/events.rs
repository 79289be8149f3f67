//! The event plumbing every dialect shares: one handler per socket for all of its events, run
//! in the order they arrived, each in its own span (whose trace id is the `correlationId`),
//! counted in the metrics, held to the dialect's inbound size cap and to the socket's event
//! budget, and answered with the dialect's reply or its rendering of the error.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

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

    /// Joins the socket to `room` under the core's rules (see [`Core::join`]); its recovery
    /// session remembers the room.
    pub async fn join(&self, room: &RoomKey) -> Result<(), DomainError> {
        self.gw.core.join(&self.socket, &self.user, room).await?;
        self.gw
            .session_joined(&self.socket, &room.socket_room())
            .await;
        Ok(())
    }

    /// Joins the socket to `room`, already authorized (see [`Core::join_checked`]).
    pub async fn join_checked(&self, room: &RoomKey) -> Result<(), DomainError> {
        self.gw.core.join_checked(&self.socket, room)?;
        self.gw
            .session_joined(&self.socket, &room.socket_room())
            .await;
        Ok(())
    }

    /// Takes the socket out of `room` (and out of its recovery session).
    pub async fn leave(&self, room: &RoomKey) {
        let name = room.socket_room();
        self.socket.leave(name.clone());
        self.gw.session_left(&self.socket, &name).await;
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
pub(crate) fn register(gw: &Arc<Gateway>, s: &SocketRef<Adapter>, user: Arc<str>, mount: &Mount) {
    let namespace = mount.namespace.clone();
    let dialect = mount.dialect.clone();
    let budget = Budget {
        per_second: gw.config.socket_events_per_second,
        burst: gw.config.socket_event_burst,
        overrun: gw.config.socket_event_overrun,
    };
    let gw = gw.clone();
    let state = Arc::new(Mutex::new(SocketEvents {
        previous: None,
        tokens: budget.burst,
        refilled_at: Instant::now(),
        refused_in_a_row: 0,
    }));
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
            let (previous, done, admission) = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .arrive(&budget, Instant::now());
            async move {
                if admission == Admission::Disconnect {
                    tracing::warn!(user_id = %cx.user, socket_id = %cx.socket.id, "socket disconnected: it kept sending past its event budget");
                    cx.gw.metrics.error("EVENT_BUDGET_OVERRUN");
                    let _ = cx.socket.clone().disconnect();
                    return;
                }
                if let Some(previous) = previous {
                    // Err = the previous event's handler finished (or its task ended).
                    let _ = previous.await;
                }
                let over_budget = admission == Admission::Refuse;
                handle(cx, dialect.as_ref(), &name, data, ack, over_budget).await;
                drop(done);
            }
        },
    );
}

/// A socket's event budget: a token bucket (`SWITCHBOARD_SOCKET_EVENTS_PER_SECOND`, holding
/// at most `SWITCHBOARD_SOCKET_EVENT_BURST`) and how many refusals in a row end the socket.
#[derive(Debug, Clone, Copy)]
struct Budget {
    per_second: f64,
    burst: f64,
    overrun: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admit,
    /// Answered with the contract's rate-limit error, not handled.
    Refuse,
    /// The socket kept sending past its budget: it is disconnected.
    Disconnect,
}

/// Per socket: the turn of its latest event (each event waits for the one before it to
/// finish) and its event budget. One lock, one allocation per socket.
struct SocketEvents {
    previous: Option<oneshot::Receiver<()>>,
    tokens: f64,
    refilled_at: Instant,
    refused_in_a_row: u32,
}

impl SocketEvents {
    /// An event arrives at `now`: the previous event's completion to wait for, this event's
    /// (dropped when done), and whether the budget admits it.
    fn arrive(
        &mut self,
        budget: &Budget,
        now: Instant,
    ) -> (
        Option<oneshot::Receiver<()>>,
        oneshot::Sender<()>,
        Admission,
    ) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * budget.per_second).min(budget.burst);
        self.refilled_at = now;
        let admission = if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            Admission::Admit
        } else {
            self.refused_in_a_row += 1;
            // Exactly once: later events only meet a socket that is closing.
            if self.refused_in_a_row == budget.overrun {
                Admission::Disconnect
            } else {
                Admission::Refuse
            }
        };
        let (done, finished) = oneshot::channel();
        let previous = self.previous.replace(finished);
        (previous, done, admission)
    }
}

/// Runs the dialect's handler for `event` in its own span and answers as the dialect says.
async fn handle(
    cx: EventCx,
    dialect: &dyn crate::dialect::Dialect,
    event: &str,
    data: Result<Value, ParserError>,
    ack: AckSender<Adapter>,
    over_budget: bool,
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
        let outcome = if over_budget {
            // Answered like the contract's own rate limit; an event outside the contract gets
            // no answer, as always.
            if dialect.handle(cx, event, Value::Null).is_none() {
                return;
            }
            Err(DomainError::new(
                ErrorCode::RateLimited,
                "Too many events: slow down",
            ))
        } else if too_large {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_budget_admits_a_burst_refills_at_its_rate_and_ends_an_overrun() {
        let budget = Budget {
            per_second: 10.0,
            burst: 3.0,
            overrun: 4,
        };
        let t0 = Instant::now();
        let mut s = SocketEvents {
            previous: None,
            tokens: budget.burst,
            refilled_at: t0,
            refused_in_a_row: 0,
        };
        let at =
            |s: &mut SocketEvents, ms: u64| s.arrive(&budget, t0 + Duration::from_millis(ms)).2;
        for _ in 0..3 {
            assert_eq!(at(&mut s, 0), Admission::Admit, "the burst");
        }
        assert_eq!(at(&mut s, 0), Admission::Refuse, "empty");
        // 100 ms at 10/s is one token.
        assert_eq!(at(&mut s, 100), Admission::Admit, "refilled");
        assert_eq!(at(&mut s, 100), Admission::Refuse);
        assert_eq!(at(&mut s, 100), Admission::Refuse);
        assert_eq!(at(&mut s, 100), Admission::Refuse);
        assert_eq!(
            at(&mut s, 100),
            Admission::Disconnect,
            "four refusals in a row"
        );
        assert_eq!(
            at(&mut s, 100),
            Admission::Refuse,
            "the disconnect is decided once"
        );
        // A long pause refills no more than the burst.
        for _ in 0..3 {
            assert_eq!(at(&mut s, 60_000), Admission::Admit);
        }
        assert_eq!(at(&mut s, 60_000), Admission::Refuse);
    }

    #[test]
    fn each_event_waits_for_the_one_before_it() {
        let budget = Budget {
            per_second: 1.0,
            burst: 1.0,
            overrun: 10,
        };
        let now = Instant::now();
        let mut s = SocketEvents {
            previous: None,
            tokens: 1.0,
            refilled_at: now,
            refused_in_a_row: 0,
        };
        let (first_waits, first_done, _) = s.arrive(&budget, now);
        assert!(first_waits.is_none());
        let (second_waits, _second_done, _) = s.arrive(&budget, now);
        let mut second_waits = second_waits.expect("the second waits for the first");
        assert!(second_waits.try_recv().is_err(), "the first is not done");
        drop(first_done);
        assert!(matches!(
            second_waits.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
