//! Persisted `message:send` with acks. Chats have members on both nodes and every member sends
//! in turn, so most receivers of a message are on another node than its sender. Every message is
//! tracked by its `clientId` (which `message:new` carries): who received it live, twice, or
//! never.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Cluster, Knobs, Outcome, connect_every, log_step, max_rate_under_50ms, paced};
use crate::progress;
use crate::provision::provision;
use crate::sio::{ClientHandle, Handler, now_us};
use crate::stats::{CpuMeter, Latency, Step};

/// One sent message: which members got it live, which through a history backfill.
#[derive(Default, Clone, Copy)]
pub struct Track {
    pub room: usize,
    pub live: u64,
    pub backfilled: u64,
    pub acked: bool,
}

/// Bookkeeping of sent messages, shared by the senders' ack callbacks and the receivers.
pub struct Tracker {
    pub room_size: usize,
    pub tracks: Mutex<HashMap<String, Track>>,
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Latency,
    pub ack_latency: Latency,
    /// Per client: the largest message id seen (for a backfill after a reconnect).
    pub last_seen: Vec<std::sync::atomic::AtomicI64>,
    pub first_error: Mutex<Option<String>>,
}

impl Tracker {
    pub fn new(room_size: usize, clients: usize) -> Self {
        Self {
            room_size,
            tracks: Mutex::default(),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Latency::default(),
            ack_latency: Latency::default(),
            last_seen: (0..clients)
                .map(|_| std::sync::atomic::AtomicI64::new(0))
                .collect(),
            first_error: Mutex::default(),
        }
    }

    fn bit(&self, client: u32) -> u64 {
        1u64 << (client as usize % self.room_size)
    }

    /// Sends one message from `client` to its chat, tracked under `client_id`.
    pub fn send(
        self: &Arc<Self>,
        handle: &ClientHandle,
        room: usize,
        chat: &str,
        client_id: String,
    ) {
        self.tracks.lock().unwrap().insert(
            client_id.clone(),
            Track {
                room,
                ..Track::default()
            },
        );
        let sent = now_us();
        let data = json!({ "chatId": chat, "body": sent.to_string(), "clientId": client_id });
        let me = self.clone();
        handle.emit_with_ack(
            "message:send",
            &data,
            true,
            Box::new(move |ack| {
                let ok = ack.as_ref().and_then(|a| a["ok"].as_bool()) == Some(true);
                if ok {
                    me.ack_latency.record_us(now_us().saturating_sub(sent));
                    me.acked.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = me.tracks.lock().unwrap().get_mut(&client_id) {
                        t.acked = true;
                    }
                } else {
                    me.errors.fetch_add(1, Ordering::Relaxed);
                    me.first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| format!("{ack:?}"));
                }
            }),
        );
    }

    /// A `message:new` received live.
    pub fn received(&self, client: u32, data: &Value) {
        let now = now_us();
        if let Some(id) = crate::provision::message_id(data) {
            self.last_seen[client as usize].fetch_max(id, Ordering::Relaxed);
        }
        let Some(cid) = data["clientId"].as_str() else {
            return;
        };
        let bit = self.bit(client);
        let mut tracks = self.tracks.lock().unwrap();
        let Some(t) = tracks.get_mut(cid) else { return };
        if t.live & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.live |= bit;
        drop(tracks);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = data["body"].as_str().and_then(|b| b.parse::<u64>().ok()) {
            self.latency.record_us(now.saturating_sub(sent));
        }
    }

    /// A message found by a history backfill after a reconnect.
    pub fn backfilled(&self, client: u32, client_id: &str) {
        if let Some(t) = self.tracks.lock().unwrap().get_mut(client_id) {
            t.backfilled |= self.bit(client);
        }
    }

    /// Acked messages not received live by every member of `members(room)` (a mask).
    pub fn missing(&self, members: impl Fn(usize) -> u64, count_backfill: bool) -> u64 {
        self.tracks
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.acked)
            .map(|t| {
                let got = if count_backfill {
                    t.live | t.backfilled
                } else {
                    t.live
                };
                u64::from((members(t.room) & !got).count_ones())
            })
            .sum()
    }
}

impl Handler for Arc<Tracker> {
    fn on_event(&self, client: u32, event: &str, data: &Value) {
        if event == "message:new" {
            self.received(client, data);
        }
    }
}

/// The `i`-th send: chats take turns, and within a chat its members take turns.
/// Returns (chat, sending user).
pub fn sender(i: u64, rooms: usize, room_size: usize, users: usize) -> (usize, usize) {
    let room = i as usize % rooms;
    let member = (i as usize / rooms) % room_size;
    (room, (room * room_size + member).min(users - 1))
}

/// The `i`-th send of a run (see [`sender`]), tracked under `client_id`.
pub fn send_turn(
    tracker: &Arc<Tracker>,
    clients: &super::Clients,
    pop: &crate::provision::Population,
    users: usize,
    i: u64,
    client_id: String,
) {
    let (room, user) = sender(i, pop.chats.len(), pop.room_size, users);
    let handle = clients.handles[user].as_ref().expect("connected");
    tracker.send(handle, room, &pop.chats[room], client_id);
}

/// Mask of a chat's members (user u is member u % room_size of chat u / room_size).
pub fn members_mask(room: usize, room_size: usize, users: usize) -> u64 {
    let n = ((room + 1) * room_size).min(users) - room * room_size;
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

pub async fn run(cluster: &Cluster, k: &Knobs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        k.room_size <= 64,
        "room size is at most 64 (tracked in a bit mask)"
    );
    let pop = provision(&cluster.admin, &cluster.run, k.clients, k.room_size).await?;
    let rooms = pop.chats.len();
    let tracker = Arc::new(Tracker::new(pop.room_size, k.clients));
    let users: Vec<usize> = (0..k.clients).collect();
    let clients = connect_every(
        cluster,
        &pop,
        &users,
        Arc::new(tracker.clone()),
        false,
        k.concurrency,
    )
    .await?;

    let mut steps = Vec::new();
    for (n, &rate) in k.rates.iter().enumerate() {
        let meter = CpuMeter::start(&cluster.pids, &cluster.watch);
        tracker.tracks.lock().unwrap().clear();
        for c in [
            &tracker.delivered,
            &tracker.duplicates,
            &tracker.acked,
            &tracker.errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        let sent = paced(rate, Duration::from_secs(k.step_secs), |i| {
            let client_id = format!("{}-s{n}-{i}", cluster.run);
            send_turn(&tracker, &clients, &pop, k.clients, i, client_id);
        })
        .await;
        tokio::time::sleep(Duration::from_secs(k.drain_secs)).await;
        let acked = tracker.acked.load(Ordering::Relaxed);
        let expected: u64 = tracker
            .tracks
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.acked)
            .map(|t| u64::from(members_mask(t.room, pop.room_size, k.clients).count_ones()))
            .sum();
        let delivered = tracker.delivered.load(Ordering::Relaxed);
        let step = meter.measured(Step {
            offered_rate: rate,
            duration_s: k.step_secs as f64,
            sent,
            acked,
            delivered,
            expected,
            lost: tracker.missing(|r| members_mask(r, pop.room_size, k.clients), false),
            duplicates: tracker.duplicates.load(Ordering::Relaxed),
            // Refused, or never answered within the drain.
            errors: sent.saturating_sub(acked),
            delivered_rate: delivered as f64 / k.step_secs as f64,
            acked_rate: acked as f64 / k.step_secs as f64,
            latency_ms: tracker.latency.take(),
            ack_latency_ms: tracker.ack_latency.take(),
            ..Step::default()
        });
        log_step("persisted-send", &step);
        if let Some(e) = tracker.first_error.lock().unwrap().take() {
            progress::log(format!("persisted-send: first refused send: {e}"));
        }
        let saturated =
            k.saturated(step.ack_latency_ms.as_ref()) || step.errors * 100 > step.sent.max(1);
        steps.push(step);
        if saturated {
            break;
        }
    }
    clients.close_all();
    let best = max_rate_under_50ms(
        &steps,
        |s| s.ack_latency_ms.as_ref().map(|l| l.p99),
        |s| s.acked_rate,
    );
    let lost: u64 = steps.iter().map(|s| s.lost).sum();
    let duplicates: u64 = steps.iter().map(|s| s.duplicates).sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Outcome {
        params: json!({
            "clients": k.clients, "room_size": k.room_size, "rooms": rooms,
            "send_rates_per_s": k.rates, "step_s": k.step_secs, "drain_s": k.drain_secs,
        }),
        steps,
        summary: json!({
            "max_acked_rate_p99_under_50ms": best,
            "lost": lost,
            "duplicates": duplicates,
        }),
    })
}
