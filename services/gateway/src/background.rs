//! A node's background work: the outbox sweeper (stored events whose broadcast was never
//! confirmed, e.g. because their node died, are broadcast by another node), presence refreshes
//! of this node's sockets, delivery of presence/typing transitions published by the presence
//! service, and dropping expired authorization decisions.

use std::sync::Arc;

use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use serde::Deserialize;
use switchboard_proto::{messages as pmsg, presence as pp};
use tokio::task::JoinHandle;

use switchboard_common::RoomKey;

use crate::{
    Gateway,
    core::{CoreEvent, Message, MessageEvent},
};

pub async fn spawn_all(gw: Arc<Gateway>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let events = subscribe_presence_events(gw.clone()).await?;
    // The log is read from its newest entry on: what was said before this node started is
    // history. Its own client: a blocking read holds the connection.
    let reader = crate::redis::command_client(&gw.config.redis_url).await?;
    let newest = gw.core.fanout.log.newest(&gw.redis).await?;
    gw.core.fanout.set_position(newest);
    Ok(vec![
        tokio::spawn(delivery_log_reader(gw.clone(), reader)),
        tokio::spawn(outbox_sweeper(gw.clone())),
        tokio::spawn(presence_refresher(gw.clone())),
        tokio::spawn(authz_cache_pruner(gw.clone())),
        events,
    ])
}

/// Once per cache TTL, drops the authorization decisions and contact lists that have expired
/// (without it they stay until the user is remembered again or the cache's bound empties it).
async fn authz_cache_pruner(gw: Arc<Gateway>) {
    let ttl = gw.config.authz_cache_ttl;
    if ttl.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(ttl);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        gw.core.authz.forget_expired();
    }
}

/// Claims outbox entries older than the redelivery delay (leased, so one node takes each),
/// broadcasts them and confirms. Duplicated broadcasts are possible only when a node dies
/// between broadcasting and confirming; receivers deduplicate by message id.
async fn outbox_sweeper(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(gw.config.outbox_sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let clients = &gw.core.clients;
        let req = pmsg::ClaimUndeliveredRequest {
            older_than_ms: gw.config.outbox_redeliver_after.as_millis() as i64,
            limit: 200,
            lease_ms: 5_000,
        };
        let events = match clients
            .call(
                "messages",
                "ClaimUndelivered",
                clients.messages.clone().claim_undelivered(req),
            )
            .await
        {
            Ok(r) => r.events,
            Err(e) => {
                tracing::debug!(error = %e, "outbox sweep skipped");
                continue;
            }
        };
        let mut delivered = Vec::new();
        for ev in events {
            let (Some(kind), Ok(message)) = (
                MessageEvent::parse(&ev.event),
                Message::try_from(ev.message),
            ) else {
                tracing::warn!(outbox_id = ev.outbox_id, "unreadable outbox entry");
                continue;
            };
            let event = CoreEvent::Message {
                event: kind,
                message: &message,
                origin: None,
            };
            if gw.core.deliver_stored(event, ev.outbox_id, None).await
                && gw.core.fanout.may_confirm()
            {
                gw.metrics.redelivered.inc();
                delivered.push(ev.outbox_id);
            }
        }
        if !delivered.is_empty() {
            let n = delivered.len();
            let req = pmsg::MarkDeliveredRequest {
                outbox_ids: delivered,
            };
            match clients
                .call(
                    "messages",
                    "MarkDelivered",
                    clients.messages.clone().mark_delivered(req),
                )
                .await
            {
                Ok(_) => tracing::info!(count = n, "redelivered stored events"),
                Err(e) => tracing::warn!(error = %e, "could not confirm redelivery"),
            }
        }
    }
}

/// Keeps this node's sockets alive in the presence service, and their recovery sessions; a dead
/// node's expire by TTL.
async fn presence_refresher(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(gw.config.presence_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (ttl_ms, sockets) in gw.local_sockets() {
            for chunk in sockets.chunks(1000) {
                let req = pp::RefreshRequest {
                    sockets: chunk.to_vec(),
                    ttl_ms,
                };
                let clients = &gw.core.clients;
                if let Err(e) = clients
                    .call("presence", "Refresh", clients.presence.clone().refresh(req))
                    .await
                {
                    tracing::warn!(error = %e, "presence refresh failed");
                }
            }
        }
        for chunk in gw.local_pids().chunks(1000) {
            gw.recovery.keep(&gw.redis, chunk).await;
        }
    }
}

/// How long one read of the delivery log waits for an entry (below the Redis command timeout).
const LOG_READ_BLOCK: std::time::Duration = std::time::Duration::from_millis(1000);

/// Reads the delivery log in order, from where this node started, and emits each entry to this
/// node's sockets. When Redis is unreachable it retries from where it stopped: a node cut off
/// from Redis catches up with what was said meanwhile (as far as the log still holds it).
async fn delivery_log_reader(gw: Arc<Gateway>, reader: fred::prelude::Client) {
    let fanout = &gw.core.fanout;
    let mut unreachable = false;
    loop {
        match fanout
            .log
            .read(&reader, fanout.position(), LOG_READ_BLOCK)
            .await
        {
            Ok(entries) => {
                if unreachable {
                    unreachable = false;
                    let position = fanout.position();
                    match fanout.log.retains_after(&reader, position).await {
                        Ok(true) => tracing::info!("delivery log reachable again; catching up"),
                        Ok(false) => tracing::error!(
                            %position,
                            "delivery log trimmed past this node's position while it was away: \
                             some stored events were not delivered live to its sockets"
                        ),
                        Err(e) => tracing::warn!(error = %e, "delivery log retention unknown"),
                    }
                }
                if entries.is_empty() {
                    continue;
                }
                let _emitting = fanout.emitting.lock().await;
                for (id, event) in entries {
                    fanout.receive_stored(id, event).await;
                }
            }
            Err(e) => {
                if !unreachable {
                    tracing::warn!(error = %e, "delivery log unreadable; retrying");
                    unreachable = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

/// A transition published by the presence service on `<prefix>presence:events`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum PresenceEvent {
    #[serde(rename = "presence", rename_all = "camelCase")]
    Presence {
        namespace: String,
        user_id: String,
        status: String,
        at_ms: i64,
    },
    #[serde(rename = "typing", rename_all = "camelCase")]
    Typing {
        namespace: String,
        room_kind: String,
        room_id: String,
        user_id: String,
        typing: bool,
    },
}

/// Every node receives every presence transition and emits it to its own sockets only (and
/// forgets authorization decisions when told).
async fn subscribe_presence_events(gw: Arc<Gateway>) -> anyhow::Result<JoinHandle<()>> {
    let channel = format!("{}presence:events", gw.config.redis_prefix);
    let authz_channel = crate::core::authz_channel(&gw.config.redis_prefix);
    let subscriber = crate::redis::subscriber_client(&gw.config.redis_url)?;
    subscriber.init().await?;
    let mut rx = subscriber.message_rx();
    subscriber
        .subscribe(vec![channel.clone(), authz_channel.clone()])
        .await?;
    // Invalidations may have been published while we were away: forget every decision.
    let forget = gw.clone();
    let resubscriber = crate::redis::keep_subscribed(&subscriber, move || {
        forget.core.authz.forget(crate::authz::EVERYONE);
        // Redis may have restarted and lost log entries some node had not read: do not confirm
        // for a while, so the outbox appends them again (the nodes that had them skip them).
        forget
            .core
            .fanout
            .mark_recovering(forget.config.redis_recovery_window);
    });
    let renderers = Renderers::start(gw.clone());
    Ok(tokio::spawn(async move {
        // Keep the client alive (and resubscribing) as long as the task runs.
        let _subscriber = subscriber;
        let _resubscriber = AbortOnDrop(resubscriber);
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "presence events lagged");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(text) = msg.value.as_str() else {
                continue;
            };
            if *msg.channel == *authz_channel {
                gw.core.authz.forget(&text);
                continue;
            }
            let event = match serde_json::from_str::<PresenceEvent>(&text) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable presence event");
                    continue;
                }
            };
            renderers.render(event);
        }
    }))
}

/// How many presence events are rendered at once (each on its own task, one after the other).
const RENDERERS: usize = 16;

/// Renders presence events on [`RENDERERS`] tasks, each user's (and each room's typing) always
/// on the same one: a user's transitions reach sockets in the order they were published. Rendered
/// each on a task of its own, an older snapshot (offline) could be emitted after a newer one
/// (online) and stay the last word.
struct Renderers(Vec<tokio::sync::mpsc::UnboundedSender<PresenceEvent>>);

impl Renderers {
    fn start(gw: Arc<Gateway>) -> Renderers {
        Renderers(
            (0..RENDERERS)
                .map(|_| {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let gw = gw.clone();
                    tokio::spawn(async move {
                        while let Some(event) = rx.recv().await {
                            deliver(&gw, event).await;
                        }
                    });
                    tx
                })
                .collect(),
        )
    }

    fn render(&self, event: PresenceEvent) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match &event {
            PresenceEvent::Presence {
                namespace, user_id, ..
            } => (namespace, user_id).hash(&mut h),
            PresenceEvent::Typing {
                namespace,
                room_kind,
                room_id,
                ..
            } => (namespace, room_kind, room_id).hash(&mut h),
        }
        let shard = (h.finish() % self.0.len() as u64) as usize;
        let _ = self.0[shard].send(event);
    }
}

async fn deliver(gw: &Gateway, event: PresenceEvent) {
    match event {
        PresenceEvent::Presence {
            namespace,
            user_id,
            status,
            at_ms,
        } => {
            // The socket whose handshake announced the user must be able to receive it.
            gw.handshakes.settled(&namespace, &user_id).await;
            // A burst of transitions (mass disconnects) must not flood the services with the
            // lookups dialects make to render them (contacts, members, presence).
            let Ok(_in_flight) = gw.background_calls.acquire().await else {
                return;
            };
            let event = CoreEvent::Presence {
                user_id: &user_id,
                online: status == "online",
                at_ms,
            };
            gw.core.publish(Some(&namespace), event).await;
        }
        PresenceEvent::Typing {
            namespace,
            room_kind,
            room_id,
            user_id,
            typing,
        } => {
            let room = RoomKey::new(room_kind, room_id);
            if !typing {
                gw.core.typing_stopped(&namespace, &room, &user_id);
            }
            let event = CoreEvent::Typing {
                room: &room,
                user_id: &user_id,
                typing,
                local: true,
            };
            gw.core.publish(Some(&namespace), event).await;
        }
    }
}

/// Stops a helper task when its owner stops.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
