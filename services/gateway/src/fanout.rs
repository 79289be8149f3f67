//! Delivery of core events to sockets on every node. Dialects render each core event into
//! zero or more emissions (their namespace, rooms and payload); this module emits them through
//! the Redis adapter, or locally when every node handles the event itself (presence and typing
//! expiries, which every node receives from Redis already).

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use socketioxide::SocketIo;

use crate::{
    core::{Message, MessageEvent, RoomInfo, RoomKey},
    dialect::chat::ChatRender,
    metrics::Metrics,
};

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
}

pub struct Fanout {
    io: SocketIo<Adapter>,
    metrics: Arc<Metrics>,
    chat: Option<ChatRender>,
    /// Until when (epoch ms) a successful publish proves nothing: Redis pub/sub delivers only to
    /// nodes subscribed at that instant, and after a Redis restart the other nodes may not have
    /// re-subscribed yet. Deliveries in that window are left unconfirmed, so the outbox
    /// broadcasts them again once it has passed (receivers deduplicate by message id).
    recovering_until_ms: AtomicI64,
}

impl Fanout {
    pub fn new(io: SocketIo<Adapter>, metrics: Arc<Metrics>, chat: Option<ChatRender>) -> Self {
        Self {
            io,
            metrics,
            chat,
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
        self.chat.iter().map(|c| c.namespace.clone()).collect()
    }

    /// Emits; answers false when the adapter could not publish (Redis away).
    pub async fn emit(&self, e: Emission) -> bool {
        // No rooms means nobody; Socket.IO would read it as "every socket".
        if e.rooms.is_empty() {
            return true;
        }
        let Some(op) = self.io.of(&e.namespace) else {
            return true;
        };
        let mut op = op.within(e.rooms);
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
            Err(err) => {
                tracing::warn!(error = %err, event = e.event, "broadcast failed");
                false
            }
        }
    }

    /// Lets every dialect mounted on `namespace` (or every dialect, for None) render the event,
    /// and emits what they render. Answers false when a publish failed.
    async fn render_and_emit(
        &self,
        namespace: Option<&str>,
        render: impl Fn(&ChatRender) -> Option<Emission>,
    ) -> bool {
        let emissions: Vec<Emission> = self
            .chat
            .iter()
            .filter(|c| namespace.is_none_or(|n| c.namespace == n))
            .filter_map(render)
            .collect();
        let mut ok = true;
        for e in emissions {
            ok &= self.emit(e).await;
        }
        ok
    }

    /// A stored message was created, edited or deleted.
    pub async fn message(&self, event: MessageEvent, message: &Message) -> bool {
        self.render_and_emit(None, |c| c.message(event, message))
            .await
    }

    /// A room's metadata or membership changed; `removed` lost their membership.
    pub async fn room_changed(&self, room: &RoomInfo, removed: Option<&str>) -> bool {
        self.render_and_emit(None, |c| c.room_changed(room, removed))
            .await
    }

    /// A user came online or went offline in `namespace`; emitted by every node to its own
    /// sockets of the user's contacts.
    pub async fn presence(
        &self,
        namespace: &str,
        user_id: &str,
        online: bool,
        at_ms: i64,
        contacts: &[String],
    ) {
        self.render_and_emit(Some(namespace), |c| {
            Some(c.presence(user_id, online, at_ms, contacts))
        })
        .await;
    }

    /// Typing started or stopped in a room.
    pub async fn typing(
        &self,
        namespace: &str,
        room: &RoomKey,
        user_id: &str,
        typing: bool,
        local: bool,
    ) {
        self.render_and_emit(Some(namespace), |c| c.typing(room, user_id, typing, local))
            .await;
    }

    /// A user's read cursor moved forward in a room.
    pub async fn receipt(
        &self,
        namespace: &str,
        room: &RoomKey,
        user_id: &str,
        message_id: i64,
        read_at_ms: i64,
    ) {
        self.render_and_emit(Some(namespace), |c| {
            c.receipt(room, user_id, message_id, read_at_ms)
        })
        .await;
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
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed");
                        ok = false;
                    }
                }
            }
        }
        ok
    }

    /// Disconnects every socket in a room (a user's, a session's), cluster-wide.
    pub async fn disconnect_room(&self, room: String) -> bool {
        let mut ok = true;
        for ns in self.namespaces() {
            if let Some(op) = self.io.of(&ns)
                && let Err(e) = op.within(room.clone()).disconnect().await
            {
                tracing::warn!(error = %e, "disconnect failed");
                ok = false;
            }
        }
        ok
    }
}
