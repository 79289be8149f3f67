//! Room fan-out of typing events (nothing persisted): one typist per chat alternates
//! `typing:start` / `typing:stop`; every other member receives `typing:update`.
//!
//! `typing:update` carries no id or timestamp, so latency is matched by order: within a chat
//! there is one typist and one path, so the k-th update a member receives answers the chat's
//! k-th emit (and its state must be the k-th emit's: start, stop, start, …).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Cluster, Knobs, Outcome, connect_every, log_step, max_rate_under_50ms, paced};
use crate::provision::{Population, provision};
use crate::sio::{Handler, now_us};
use crate::stats::{CpuMeter, Latency, Step};

struct Fanout {
    room_size: usize,
    /// Per chat: when each emit left (µs on the generator's clock).
    emits: Vec<Mutex<Vec<u64>>>,
    /// Per client: updates received so far.
    received: Vec<AtomicU64>,
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    latency: Latency,
}

impl Handler for Fanout {
    fn on_event(&self, client: u32, event: &str, data: &Value) {
        if event != "typing:update" {
            return;
        }
        let now = now_us();
        let Some(chat) = data["chatId"].as_str().and_then(Population::chat_index) else {
            return;
        };
        if chat != client as usize / self.room_size {
            return;
        }
        let k = self.received[client as usize].fetch_add(1, Ordering::Relaxed) as usize;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let sent = self.emits[chat].lock().unwrap().get(k).copied();
        let expected_state = if k.is_multiple_of(2) { "start" } else { "stop" };
        match sent {
            Some(t) if data["state"] == expected_state => {
                self.latency.record_us(now.saturating_sub(t))
            }
            _ => {
                self.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub async fn run(cluster: &Cluster, k: &Knobs) -> anyhow::Result<Outcome> {
    let pop = provision(&cluster.admin, &cluster.run, k.clients, k.room_size).await?;
    let rooms = pop.chats.len();
    let state = Arc::new(Fanout {
        room_size: pop.room_size,
        emits: (0..rooms).map(|_| Mutex::new(Vec::new())).collect(),
        received: (0..k.clients).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        latency: Latency::default(),
    });
    let users: Vec<usize> = (0..k.clients).collect();
    let clients = connect_every(cluster, &pop, &users, state.clone(), false, k.concurrency).await?;
    // Receivers per emit: the chat's other members.
    let receivers = |room: usize| {
        let members = ((room + 1) * pop.room_size).min(k.clients) - room * pop.room_size;
        members as u64 - 1
    };
    let emit = |room: usize| {
        let typist = clients.handles[room * pop.room_size]
            .as_ref()
            .expect("connected");
        let mut log = state.emits[room].lock().unwrap();
        let event = if log.len().is_multiple_of(2) {
            "typing:start"
        } else {
            "typing:stop"
        };
        log.push(now_us());
        drop(log);
        typist.emit(event, &json!({ "chatId": pop.chats[room] }));
    };

    let mut steps = Vec::new();
    for &rate in &k.rates {
        let meter = CpuMeter::start(&cluster.pids, &cluster.watch);
        state.delivered.store(0, Ordering::Relaxed);
        state.out_of_order.store(0, Ordering::Relaxed);
        let mut expected = 0u64;
        let mut sent = paced(rate, Duration::from_secs(k.step_secs), |i| {
            let room = i as usize % rooms;
            emit(room);
            expected += receivers(room);
        })
        .await;
        // End every chat "stopped", so no server-side typing timeout fires into the next step.
        for room in 0..rooms {
            if state.emits[room].lock().unwrap().len() % 2 == 1 {
                emit(room);
                expected += receivers(room);
                sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(k.drain_secs)).await;
        let delivered = state.delivered.load(Ordering::Relaxed);
        let step = meter.measured(Step {
            offered_rate: rate * (receivers(0) as f64),
            duration_s: k.step_secs as f64,
            sent,
            delivered,
            expected,
            lost: expected.saturating_sub(delivered),
            errors: state.out_of_order.load(Ordering::Relaxed),
            delivered_rate: delivered as f64 / k.step_secs as f64,
            latency_ms: state.latency.take(),
            ..Step::default()
        });
        log_step("typing-fanout", &step);
        let saturated = k.saturated(step.latency_ms.as_ref());
        steps.push(step);
        if saturated {
            break;
        }
    }
    clients.close_all();
    let best = max_rate_under_50ms(
        &steps,
        |s| s.latency_ms.as_ref().map(|l| l.p99),
        |s| s.delivered_rate,
    );
    // Server CPU per delivered event at the best step (the fan-out's cost).
    let cpu_us = steps
        .iter()
        .filter(|s| s.delivered > 0)
        .map(|s| s.server_cpu_s * 1e6 / s.delivered as f64)
        .fold(f64::INFINITY, f64::min);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Outcome {
        params: json!({
            "clients": k.clients, "room_size": k.room_size, "rooms": rooms,
            "typing_rates_per_s": k.rates, "step_s": k.step_secs, "drain_s": k.drain_secs,
            "offered_rate": "typing events/s × receivers per chat = deliveries/s",
        }),
        steps,
        summary: json!({
            "max_delivered_rate_p99_under_50ms": best,
            "cpu_us_per_delivery": if cpu_us.is_finite() { Some(cpu_us) } else { None },
        }),
    })
}
