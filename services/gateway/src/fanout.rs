//! Delivery to sockets on every node: emits what dialects render from core events (their
//! namespace, rooms and payload) through the Redis adapter, or locally when every node handles
//! the event itself (presence and typing expiries, which every node receives from Redis
//! already), plus raw publishes, room removals and disconnects in every mounted namespace.
//!
//! Stored events (messages, edits, deletions: each has an outbox entry until confirmed) take
//! their own path: [`Fanout::deliver_stored`] appends them to the delivery log (a Redis stream,
//! once per outbox id), and every node's log reader emits each entry to its own sockets, in the
//! log's order, with the entry's id as last argument ([`Fanout::receive_stored`];
//! `crate::delivery_log`, `docs/guarantees.md`).

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use socketioxide::{BroadcastError, SocketIo, socket::Sid};

use switchboard_common::RoomKey;

use crate::{
    delivery_log::{AppendTurn, DeliveryLog, LogAppender, LogId, LoggedEmission, LoggedEvent},
    metrics::Metrics,
};

/// The Socket.IO adapter of every gateway node: Redis pub/sub through fred, publishes gathered
/// under load (`crate::pubsub`).
pub type Adapter = socketioxide_redis::CustomRedisAdapter<
    socketioxide::adapter::Emitter,
    crate::pubsub::PacedDriver,
>;

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
    /// Until when (epoch ms) a successful append is not trusted: right after a Redis reconnect,
    /// which may have been a restart that lost log entries some node had not read yet. Deliveries
    /// in that window are left unconfirmed, so the outbox appends them again once it has passed.
    recovering_until_ms: AtomicI64,
    /// The outbox ids of the stored events this node has emitted: a Redis restart forgets which
    /// ones the log holds, and the outbox may then append one again.
    delivered: Mutex<DeliveredIds>,
    pub(crate) log: DeliveryLog,
    appender: LogAppender,
    /// Held while this node emits log entries to its sockets, and by a recovering socket while
    /// it is replayed what it missed and joins its rooms: nothing reaches it twice or out of order.
    pub(crate) emitting: tokio::sync::Mutex<()>,
    /// The newest log entry this node has emitted.
    position: Mutex<LogId>,
    /// Stored events carry their log id as last argument (the client's recovery offset).
    offsets: bool,
}

/// How many delivered outbox ids a node remembers: far more than arrive between a send and
/// its redelivery by the sweeper (`SWITCHBOARD_OUTBOX_REDELIVER_AFTER_MS`, 3 s) at the highest
/// send rate measured (≈ 8,000/s), at 16 bytes each (plus the set's overhead, ≈ 8 MB).
const REMEMBERED_DELIVERIES: usize = 262_144;

/// A bounded set of outbox ids, forgetting the oldest first.
#[derive(Default)]
struct DeliveredIds {
    ids: HashSet<(i64, i64)>,
    order: VecDeque<(i64, i64)>,
}

impl DeliveredIds {
    /// Records `id`; answers whether it is new.
    fn first_time(&mut self, id: (i64, i64)) -> bool {
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

impl Fanout {
    pub fn new(
        io: SocketIo<Adapter>,
        metrics: Arc<Metrics>,
        namespaces: Vec<String>,
        log: DeliveryLog,
        redis: fred::prelude::Client,
        offsets: bool,
    ) -> Self {
        Self {
            appender: LogAppender::start(log.clone(), redis),
            io,
            metrics,
            namespaces,
            recovering_until_ms: AtomicI64::new(0),
            delivered: Mutex::new(DeliveredIds::default()),
            log,
            emitting: tokio::sync::Mutex::new(()),
            position: Mutex::new(LogId::default()),
            offsets,
        }
    }

    /// The newest log entry this node has emitted (or started reading after).
    pub fn position(&self) -> LogId {
        *self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_position(&self, id: LogId) {
        *self.position.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Delivers a stored event: appends it to the delivery log (once `turn` comes, when it has
    /// one), from which every node (this one too) emits it. Answers whether it was logged
    /// (false: the outbox entry stays, and the sweeper delivers the event again).
    pub async fn deliver_stored(
        &self,
        outbox_id: i64,
        created_at_ms: i64,
        emissions: Vec<Emission>,
        turn: Option<AppendTurn>,
    ) -> bool {
        let event = LoggedEvent {
            outbox_id,
            created_at_ms,
            emissions: emissions
                .into_iter()
                .map(|e| LoggedEmission {
                    namespace: e.namespace,
                    rooms: e.rooms,
                    except: e.except,
                    event: e.event.to_string(),
                    data: e.data,
                    everyone: e.everyone,
                    except_socket: e.except_socket.map(|s| s.to_string()),
                })
                .collect(),
        };
        match self.appender.append(&event, turn).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, outbox_id, "stored event not logged (the outbox will redeliver)");
                false
            }
        }
    }

    /// A delivery log entry: emitted to this node's sockets (the log reader calls this in the
    /// log's order, holding [`Fanout::emitting`]).
    pub async fn receive_stored(&self, id: LogId, event: LoggedEvent) {
        self.set_position(id);
        let first = self
            .delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_time(event.key());
        if !first {
            self.metrics.duplicates_suppressed.inc();
            return;
        }
        let offset = self.offsets.then(|| id.to_string());
        for e in event.emissions {
            let except_socket = e.except_socket.as_deref().and_then(|s| s.parse().ok());
            self.emit_parts(
                &e.namespace,
                e.rooms,
                e.except,
                e.everyone,
                true,
                except_socket,
                &e.event,
                &e.data,
                offset.as_deref(),
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

    pub fn metrics(&self) -> &Arc<Metrics> {
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
            None,
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
        offset: Option<&str>,
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
        let emitted = match offset {
            Some(offset) => op.emit(event, &(data, offset)).await,
            None => op.emit(event, data).await,
        };
        match emitted {
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
