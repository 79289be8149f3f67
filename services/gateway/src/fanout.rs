//! Delivery to sockets on every node: emits what dialects render from core events (their
//! namespace, rooms and payload) through the Redis adapter, or locally when every node handles
//! the event itself (presence and typing expiries, which every node receives from Redis
//! already), plus raw publishes, room removals and disconnects in every mounted namespace.
//!
//! Stored events (messages, edits, deletions: each has an outbox entry until confirmed) take
//! their own path, [`Fanout::deliver_stored`]: the sending node emits to its own sockets and
//! publishes the rendered emissions once, with the outbox id, on the deliveries channel; every
//! other node emits them to its own sockets unless it already has. When a node dies between
//! publishing and confirming, the outbox sweeper publishes the event again: the nodes that had
//! it skip it, the others (they never got it) deliver it. Each live socket gets it once
//! (`docs/guarantees.md`).

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use fred::prelude::PubsubInterface;
use serde::{Deserialize, Serialize};
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
    /// The outbox ids of the stored events this node has delivered to its sockets.
    delivered: Mutex<DeliveredIds>,
}

/// How many delivered outbox ids a node remembers: far more than arrive between a send and
/// its redelivery by the sweeper (`SWITCHBOARD_OUTBOX_REDELIVER_AFTER_MS`, 3 s) at the highest
/// send rate measured (≈ 8,000/s), at 8 bytes each (plus the set's overhead, ≈ 4 MB).
const REMEMBERED_DELIVERIES: usize = 262_144;

/// A bounded set of outbox ids, forgetting the oldest first.
#[derive(Default)]
struct DeliveredIds {
    ids: HashSet<i64>,
    order: VecDeque<i64>,
}

impl DeliveredIds {
    /// Records `id`; answers whether it is new.
    fn first_time(&mut self, id: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED_DELIVERIES
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

/// A stored event's emissions as they cross to the other nodes (deliveries channel).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredDelivery {
    /// The publishing node (which has emitted to its own sockets already).
    node: String,
    outbox_id: i64,
    emissions: Vec<WireEmission>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireEmission {
    namespace: String,
    rooms: Vec<String>,
    except: Vec<String>,
    event: String,
    data: serde_json::Value,
    everyone: bool,
}

/// The channel of stored events' deliveries.
pub(crate) fn deliveries_channel(redis_prefix: &str) -> String {
    format!("{redis_prefix}deliveries")
}

impl Fanout {
    pub fn new(io: SocketIo<Adapter>, metrics: Arc<Metrics>, namespaces: Vec<String>) -> Self {
        Self {
            io,
            metrics,
            namespaces,
            recovering_until_ms: AtomicI64::new(0),
            delivered: Mutex::new(DeliveredIds::default()),
        }
    }

    /// Whether this node is yet to deliver the stored event `outbox_id` (and from now on, has).
    fn first_delivery(&self, outbox_id: i64) -> bool {
        self.delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_time(outbox_id)
    }

    /// Delivers a stored event: to this node's sockets (unless it already did), then to every
    /// other node through the deliveries channel. Answers whether the publish reached Redis
    /// (false: the outbox entry stays, and the sweeper publishes the event again).
    pub async fn deliver_stored(
        &self,
        redis: &fred::prelude::Client,
        node: &str,
        redis_prefix: &str,
        outbox_id: i64,
        emissions: Vec<Emission>,
    ) -> bool {
        if self.first_delivery(outbox_id) {
            for e in &emissions {
                let mut local = e.clone();
                local.local = true;
                self.emit(local).await;
            }
        }
        let delivery = StoredDelivery {
            node: node.to_string(),
            outbox_id,
            emissions: emissions
                .into_iter()
                .filter(|e| !e.local)
                .map(|e| WireEmission {
                    namespace: e.namespace,
                    rooms: e.rooms,
                    except: e.except,
                    event: e.event.to_string(),
                    data: e.data,
                    everyone: e.everyone,
                })
                .collect(),
        };
        let payload = match serde_json::to_string(&delivery) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, outbox_id, "stored event not serializable");
                return false;
            }
        };
        let published: Result<i64, _> = redis
            .publish(deliveries_channel(redis_prefix), payload)
            .await;
        match published {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, outbox_id, "delivery not published (the outbox will redeliver)");
                false
            }
        }
    }

    /// A stored event another node published: emitted to this node's sockets, once.
    pub async fn receive_stored(&self, own_node: &str, payload: &str) {
        let delivery: StoredDelivery = match serde_json::from_str(payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable stored delivery");
                return;
            }
        };
        if delivery.node == own_node {
            return;
        }
        if !self.first_delivery(delivery.outbox_id) {
            self.metrics.duplicates_suppressed.inc();
            return;
        }
        for e in delivery.emissions {
            self.emit_parts(
                &e.namespace,
                e.rooms,
                e.except,
                e.everyone,
                true,
                None,
                &e.event,
                &e.data,
            )
            .await;
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
        self.emit_parts(
            &e.namespace,
            e.rooms,
            e.except,
            e.everyone,
            e.local,
            e.except_socket,
            e.event,
            &e.data,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit_parts(
        &self,
        namespace: &str,
        rooms: Vec<String>,
        except: Vec<String>,
        everyone: bool,
        local: bool,
        except_socket: Option<Sid>,
        event: &str,
        data: &serde_json::Value,
    ) -> bool {
        // No rooms means nobody; Socket.IO would read it as "every socket".
        if rooms.is_empty() && !everyone {
            return true;
        }
        let Some(op) = self.io.of(namespace) else {
            return true;
        };
        // A socket's own broadcast operator leaves that socket out, on every node.
        let op = match except_socket.and_then(|sid| op.get_socket(sid)) {
            Some(socket) => socket.broadcast(),
            None => op,
        };
        let mut op = if everyone { op } else { op.within(rooms) };
        if !except.is_empty() {
            op = op.except(except);
        }
        if local {
            op = op.local();
        }
        match op.emit(event, data).await {
            Ok(()) => {
                self.metrics.event_out(namespace, event);
                true
            }
            Err(BroadcastError::Socket(failed)) => {
                self.dropped(failed.len(), event);
                self.metrics.event_out(namespace, event);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, event, "broadcast failed");
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
