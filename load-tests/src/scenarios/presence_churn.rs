//! Presence churn: in every chat one member connects and disconnects over and over while the
//! others stay connected and receive `presence:update` (online / offline) about it.
//! Each cycle is a full handshake (auth, `user:<id>` room, presence recorded) and a disconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Cluster, Knobs, Outcome, connect_every, log_step, paced};
use crate::provision::provision;
use crate::sio::{self, ClientSpec, Handler};
use crate::stats::{CpuMeter, Latency, Step};

#[derive(Default)]
struct Churn {
    updates: AtomicU64,
    cycles: AtomicU64,
    failures: AtomicU64,
    handshake: Latency,
}

impl Handler for Arc<Churn> {
    fn on_event(&self, _: u32, event: &str, _: &Value) {
        if event == "presence:update" {
            self.updates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn run(cluster: &Cluster, k: &Knobs) -> anyhow::Result<Outcome> {
    let pop = Arc::new(provision(&cluster.admin, &cluster.run, k.clients, k.room_size).await?);
    let rooms = pop.chats.len();
    let churn = Arc::new(Churn::default());
    // Member 0 of every chat churns; the others watch.
    let observers: Vec<usize> = (0..k.clients).filter(|u| u % pop.room_size != 0).collect();
    let clients = connect_every(
        cluster,
        &pop,
        &observers,
        Arc::new(churn.clone()),
        false,
        k.concurrency,
    )
    .await?;
    let busy: Arc<Vec<AtomicBool>> = Arc::new((0..rooms).map(|_| AtomicBool::new(false)).collect());

    let mut steps = Vec::new();
    for &rate in &k.rates {
        let meter = CpuMeter::start(&cluster.pids, &cluster.watch);
        churn.updates.store(0, Ordering::Relaxed);
        churn.cycles.store(0, Ordering::Relaxed);
        churn.failures.store(0, Ordering::Relaxed);
        let skipped = AtomicU64::new(0);
        let sent = paced(rate, Duration::from_secs(k.step_secs), |i| {
            let room = i as usize % rooms;
            // A chat's churner does one cycle at a time; a busy one skips its turn.
            if busy[room].swap(true, Ordering::AcqRel) {
                skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let (churn, busy, pop, urls) = (
                churn.clone(),
                busy.clone(),
                pop.clone(),
                cluster.urls.clone(),
            );
            let user = room * pop.room_size;
            tokio::spawn(async move {
                let node = (i as usize) % urls.len();
                let started = Instant::now();
                match sio::handshake(&urls[node], &pop.tokens[user]).await {
                    Ok(ws) => {
                        churn
                            .handshake
                            .record_us(started.elapsed().as_micros() as u64);
                        let spec = ClientSpec {
                            id: user as u32,
                            urls,
                            node,
                            token: String::new(),
                            chats: vec![],
                            reconnect: false,
                        };
                        let (handle, _) =
                            sio::spawn_joined(spec, ws, Arc::new(churn.clone())).await;
                        // Stay a moment, as a page view would, then leave.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        handle.close();
                        churn.cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        churn.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                busy[room].store(false, Ordering::Release);
            });
        })
        .await;
        tokio::time::sleep(Duration::from_secs(k.drain_secs)).await;
        let cycles = churn.cycles.load(Ordering::Relaxed);
        let updates = churn.updates.load(Ordering::Relaxed);
        let step = meter.measured(Step {
            offered_rate: rate,
            duration_s: k.step_secs as f64,
            sent: sent - skipped.load(Ordering::Relaxed),
            acked: cycles,
            delivered: updates,
            errors: churn.failures.load(Ordering::Relaxed),
            delivered_rate: updates as f64 / k.step_secs as f64,
            acked_rate: cycles as f64 / k.step_secs as f64,
            latency_ms: churn.handshake.take(),
            ..Step::default()
        });
        log_step("presence-churn", &step);
        let saturated = k.saturated(step.latency_ms.as_ref());
        steps.push(step);
        if saturated {
            break;
        }
    }
    clients.close_all();
    let churn_rate = steps
        .iter()
        .filter(|s| s.latency_ms.as_ref().is_some_and(|l| l.p99 < 50.0) && s.errors == 0)
        .map(|s| s.acked_rate)
        .fold(0.0, f64::max);
    let updates: u64 = steps.iter().map(|s| s.delivered).sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Outcome {
        params: json!({
            "clients": k.clients, "room_size": k.room_size, "rooms": rooms, "churners": rooms,
            "cycle_rates_per_s": k.rates, "step_s": k.step_secs, "hold_ms": 200,
            "latency": "handshake (connect + auth) of the churning client",
        }),
        steps,
        summary: json!({ "churn_rate": churn_rate, "presence_updates": updates }),
    })
}
