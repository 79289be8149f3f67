//! Delivery to sockets on every node: emits what dialects render from core events (their
//! namespace, rooms and payload) through the Redis adapter, or locally when every node handles
//! the event itself (presence and typing expiries, which every node receives from Redis
//! already), plus raw publishes, room removals and disconnects in every mounted namespace.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use socketioxide::{BroadcastError, SocketIo, socket::Sid};

use switchboard_common::RoomKey;

use crate::metrics::Metrics;

/// The Socket.IO adapter of every gateway node: Redis pub/sub through fred.
pub type Adapter = socketioxide_redis::FredAdapter<socketioxide::adapter::Emitter>;

/// One emit: an event with its payload to the sockets of `rooms` in `namespace`.
#[derive(Debug, Clone)]
pub struct Emission {
    pub namespace: String,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub event: &'static str,
    pub data: serde_json::Value,
    /// Only this node's sockets (the event reaches every node by other means).
    pub local: bool,
    /// Leave out this socket (of this node), e.g. the one that sent the message.
    pub except_socket: Option<Sid>,
    /// Every socket of the namespace (`rooms` is then ignored).
    pub everyone: bool,
}

impl Emission {
    /// To every socket of `rooms` in `namespace`, on every node.
    pub fn new(
        namespace: &str,
        rooms: Vec<String>,
        event: &'static str,
        data: serde_json::Value,
    ) -> Self {
        Emission {
            namespace: namespace.to_string(),
            rooms,
            except: vec![],
            event,
            data,
            local: false,
            except_socket: None,
            everyone: false,
        }
    }
}

pub struct Fanout {
    io: SocketIo<Adapter>,
    metrics: Arc<Metrics>,
    /// The namespaces of the mounted dialects.
    namespaces: Vec<String>,
    /// Until when (epoch ms) a successful publish proves nothing: Redis pub/sub delivers only to
    /// nodes subscribed at that instant, and after a Redis restart the other nodes may not have
    /// re-subscribed yet. Deliveries in that window are left unconfirmed, so the outbox
    /// broadcasts them again once it has passed (receivers deduplicate by message id).
    recovering_until_ms: AtomicI64,
}

impl Fanout {
    pub fn new(io: SocketIo<Adapter>, metrics: Arc<Metrics>, namespaces: Vec<String>) -> Self {
        Self {
            io,
            metrics,
            namespaces,
            recovering_until_ms: AtomicI64::new(0),
        }
    }

    /// This node (re)connected to Redis: do not trust publishes for `window`.
    pub fn mark_recovering(&self, window: std::time::Duration) {
        let until = switchboard_common::time_fmt::now_ms() + window.as_millis() as i64;
        self.recovering_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// May a delivery published now be confirmed (its outbox entry removed)?
    pub fn may_confirm(&self) -> bool {
        switchboard_common::time_fmt::now_ms() >= self.recovering_until_ms.load(Ordering::Relaxed)
    }

    pub fn io(&self) -> &SocketIo<Adapter> {
        &self.io
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The namespaces of every mounted dialect.
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces.clone()
    }

    /// Emits; answers false when the adapter could not publish (Redis away).
    pub async fn emit(&self, e: Emission) -> bool {
        // No rooms means nobody; Socket.IO would read it as "every socket".
        if e.rooms.is_empty() && !e.everyone {
            return true;
        }
        let Some(op) = self.io.of(&e.namespace) else {
            return true;
        };
        // A socket's own broadcast operator leaves that socket out, on every node.
        let op = match e.except_socket.and_then(|sid| op.get_socket(sid)) {
            Some(socket) => socket.broadcast(),
            None => op,
        };
        let mut op = if e.everyone { op } else { op.within(e.rooms) };
        if !e.except.is_empty() {
            op = op.except(e.except);
        }
        if e.local {
            op = op.local();
        }
        match op.emit(e.event, &e.data).await {
            Ok(()) => {
                self.metrics.event_out(&e.namespace, e.event);
                true
            }
            Err(BroadcastError::Socket(failed)) => {
                self.dropped(failed.len(), e.event);
                self.metrics.event_out(&e.namespace, e.event);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, event = e.event, "broadcast failed");
                false
            }
        }
    }

    /// Removes the user's sockets from rooms, on every node and in every namespace.
    pub async fn leave_rooms(&self, user_id: &str, rooms: &[RoomKey]) {
        let names = rooms.iter().map(RoomKey::socket_room).collect::<Vec<_>>();
        for ns in self.namespaces() {
            if let Some(op) = self.io.of(&ns)
                && let Err(e) = op
                    .within(crate::core::user_room(user_id))
                    .leave(names.clone())
                    .await
            {
                tracing::warn!(error = %e, "could not remove sockets from rooms");
            }
        }
    }

    /// A server-side event to a socket room, in `namespace` or in every namespace.
    pub async fn publish(
        &self,
        namespace: Option<&str>,
        room: String,
        event: &str,
        data: &serde_json::Value,
    ) -> bool {
        let mut ok = true;
        for ns in self.namespaces() {
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            if let Some(op) = self.io.of(&ns) {
                match op.within(room.clone()).emit(event, data).await {
                    Ok(()) => self.metrics.event_out(&ns, "published"),
                    Err(BroadcastError::Socket(failed)) => {
                        self.dropped(failed.len(), event);
                        self.metrics.event_out(&ns, "published");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed");
                        ok = false;
                    }
                }
            }
        }
        ok
    }

    /// A broadcast only some local sockets could not take (their queue full: a slow consumer,
    /// which its write deadline disconnects; or closing): everyone else has it, so it counts
    /// as delivered. Broadcasting it again would repeat it to all of them. (Deliveries arriving
    /// from other nodes that a full queue refuses are socketioxide's to log.)
    fn dropped(&self, sockets: usize, event: &str) {
        self.metrics.dropped_deliveries.inc_by(sockets as u64);
        tracing::debug!(
            sockets,
            event,
            "delivery dropped to sockets that cannot take it"
        );
    }

    /// Disconnects every socket of `room` in `namespace`, cluster-wide.
    pub async fn disconnect(&self, namespace: &str, room: String) -> bool {
        if let Some(op) = self.io.of(namespace)
            && let Err(e) = op.within(room).disconnect().await
        {
            tracing::warn!(error = %e, "disconnect failed");
            return false;
        }
        true
    }
}
