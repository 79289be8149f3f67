//! A node is killed (SIGKILL) under load. Clients of the dead node reconnect to the next one,
//! join their chats again, back-fill what they missed through the history API, and re-send
//! the messages that were waiting for an ack (same `clientId`, so a repeat is idempotent).
//! Measured: time until every client is back and has recovered, acknowledged messages missing
//! from the store (lost), acknowledged messages some member never received, duplicates.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::persisted_send::{Tracker, members_mask, send_turn};
use super::{Cluster, Knobs, Outcome, connect_every, paced};
use crate::progress;
use crate::provision::{Admin, provision};
use crate::sio::Handler;
use crate::stats::CpuMeter;

struct Recovery {
    tracker: Arc<Tracker>,
    admin: Admin,
    chats: Vec<String>,
    room_size: usize,
    killed_at: Mutex<Option<Instant>>,
    disconnected: AtomicUsize,
    back: AtomicUsize,
    recovered: AtomicUsize,
    /// Milliseconds after the kill when the last client came back / finished its backfill.
    last_back_ms: AtomicU64,
    last_recovered_ms: AtomicU64,
    backfill_errors: AtomicU64,
}

impl Recovery {
    fn since_kill_ms(&self) -> u64 {
        self.killed_at
            .lock()
            .unwrap()
            .map_or(0, |t| t.elapsed().as_millis() as u64)
    }
}

struct Client(Arc<Recovery>);

impl Handler for Client {
    fn on_event(&self, client: u32, event: &str, data: &Value) {
        self.0.tracker.on_event(client, event, data);
    }

    fn on_disconnected(&self, _client: u32) {
        self.0.disconnected.fetch_add(1, Ordering::Relaxed);
    }

    fn on_reconnected(&self, client: u32, node: usize) {
        let r = self.0.clone();
        r.back.fetch_add(1, Ordering::Relaxed);
        r.last_back_ms
            .fetch_max(r.since_kill_ms(), Ordering::Relaxed);
        // Backfill what was missed while away, as the contract tells clients to.
        tokio::spawn(async move {
            let chat = &r.chats[client as usize / r.room_size];
            let after = r.tracker.last_seen[client as usize].load(Ordering::Relaxed);
            let path = format!("/v1/rooms/chat/{chat}/messages?after={after}&limit=100");
            match r.admin.get(node, &path).await {
                Ok(page) => {
                    for m in page["messages"].as_array().into_iter().flatten() {
                        if let Some(cid) = m["clientId"].as_str() {
                            r.tracker.backfilled(client, cid);
                        }
                    }
                }
                Err(_) => {
                    r.backfill_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            r.recovered.fetch_add(1, Ordering::Relaxed);
            r.last_recovered_ms
                .fetch_max(r.since_kill_ms(), Ordering::Relaxed);
        });
    }
}

pub async fn run(cluster: &Cluster, k: &Knobs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        cluster.urls.len() >= 2,
        "node-kill needs at least two gateway URLs"
    );
    anyhow::ensure!(k.room_size <= 64, "room size is at most 64");
    let victim = *cluster
        .pids
        .first()
        .ok_or_else(|| anyhow::anyhow!("node-kill needs --pids"))?;
    let pop = provision(&cluster.admin, &cluster.run, k.clients, k.room_size).await?;
    let rooms = pop.chats.len();
    let tracker = Arc::new(Tracker::new(pop.room_size, k.clients));
    let recovery = Arc::new(Recovery {
        tracker: tracker.clone(),
        admin: cluster.admin.clone(),
        chats: pop.chats.clone(),
        room_size: pop.room_size,
        killed_at: Mutex::new(None),
        disconnected: AtomicUsize::new(0),
        back: AtomicUsize::new(0),
        recovered: AtomicUsize::new(0),
        last_back_ms: AtomicU64::new(0),
        last_recovered_ms: AtomicU64::new(0),
        backfill_errors: AtomicU64::new(0),
    });
    let users: Vec<usize> = (0..k.clients).collect();
    let clients = connect_every(
        cluster,
        &pop,
        &users,
        Arc::new(Client(recovery.clone())),
        true,
        k.concurrency,
    )
    .await?;
    let on_victim = (0..k.clients)
        .filter(|u| u % cluster.urls.len() == 0)
        .count();
    progress::log(format!(
        "node-kill: {} clients, {on_victim} on {} (pid {victim}); sending {}/s, kill after {} s",
        k.clients, cluster.names[0], k.rate, k.kill_after_secs
    ));

    let meter = CpuMeter::start(&cluster.pids, &cluster.watch);
    let total = Duration::from_secs(k.kill_after_secs + k.after_kill_secs);
    let kill_at = Duration::from_secs(k.kill_after_secs);
    let started = Instant::now();
    let mut killed = false;
    let sent = paced(k.rate, total, |i| {
        if !killed && started.elapsed() >= kill_at {
            killed = true;
            *recovery.killed_at.lock().unwrap() = Some(Instant::now());
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &victim.to_string()])
                .status();
            progress::log(format!(
                "node-kill: SIGKILL {} (pid {victim})",
                cluster.names[0]
            ));
        }
        let client_id = format!("{}-k-{i}", cluster.run);
        send_turn(&tracker, &clients, &pop, k.clients, i, client_id);
    })
    .await;
    // Until every client is back and recovered (or 60 s), then let acks and deliveries settle.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (recovery.recovered.load(Ordering::Relaxed)
        < recovery.disconnected.load(Ordering::Relaxed)
        || recovery.disconnected.load(Ordering::Relaxed) < on_victim)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(k.drain_secs.max(5))).await;
    let server_cpu = meter.per_server_cpu_s();

    // Every acked message must be in the store: read each chat's whole history.
    let mut stored = std::collections::HashSet::new();
    for chat in &pop.chats {
        for (_, cid) in cluster.admin.chat_history(1, chat).await? {
            stored.insert(cid);
        }
    }
    let tracks = tracker.tracks.lock().unwrap().clone();
    let acked: Vec<_> = tracks.iter().filter(|(_, t)| t.acked).collect();
    let acked_lost = acked
        .iter()
        .filter(|(cid, _)| !stored.contains(*cid))
        .count();
    let mask = |r| members_mask(r, pop.room_size, k.clients);
    let missed_live = tracker.missing(mask, false);
    let missed_after_backfill = tracker.missing(mask, true);
    let unacked = sent as usize - acked.len();
    clients.close_all();
    let summary = json!({
        "clients": k.clients,
        "killed_clients": on_victim,
        "disconnected": recovery.disconnected.load(Ordering::Relaxed),
        "back": recovery.back.load(Ordering::Relaxed),
        "not_back": on_victim.saturating_sub(recovery.back.load(Ordering::Relaxed)),
        "all_back_s": recovery.last_back_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        "recovered_s": recovery.last_recovered_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        "sent": sent,
        "acked": acked.len(),
        "unacked": unacked,
        "acked_lost": acked_lost,
        "deliveries_missed_live": missed_live,
        "deliveries_missed_after_backfill": missed_after_backfill,
        "duplicates": tracker.duplicates.load(Ordering::Relaxed),
        "backfill_errors": recovery.backfill_errors.load(Ordering::Relaxed),
        "ack_latency_ms": tracker.ack_latency.take(),
        "latency_ms": tracker.latency.take(),
        "server_cpu_s": server_cpu,
        "steal_pct": meter.steal_pct(),
    });
    progress::log(format!("node-kill: {summary}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Outcome {
        params: json!({
            "clients": k.clients, "room_size": k.room_size, "rooms": rooms, "send_rate_per_s": k.rate,
            "kill_after_s": k.kill_after_secs, "after_kill_s": k.after_kill_secs,
        }),
        steps: vec![],
        summary,
    })
}
