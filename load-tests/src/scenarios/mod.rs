//! The benchmark scenarios and what they share: the cluster under test, connecting a
//! population's clients, pacing an offered rate, and the rate ladder's stopping rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::Value;

use crate::progress;
use crate::provision::{Admin, Population};
use crate::sio::{self, ClientHandle, ClientSpec, Handler};
use crate::stats::{Latency, Step};

pub mod connect_storm;
pub mod idle;
pub mod node_kill;
pub mod persisted_send;
pub mod presence_churn;
pub mod typing_fanout;

/// The cluster under test: its gateway URLs and the server processes behind them.
pub struct Cluster {
    pub system: String,
    pub urls: Arc<Vec<String>>,
    /// Server processes, in the order of `urls` (node i serves urls[i]).
    pub pids: Vec<u32>,
    pub names: Vec<String>,
    /// Process groups whose CPU each ladder step writes down (gateways, services, Postgres, …).
    pub watch: Vec<crate::stats::Watch>,
    pub admin: Admin,
    /// A prefix unique to this run, so runs never share users or chats.
    pub run: String,
}

/// What a scenario hands back to be written down.
#[derive(Default)]
pub struct Outcome {
    pub params: Value,
    pub steps: Vec<Step>,
    pub summary: Value,
}

/// The knobs of every scenario (each uses the ones it needs; defaults in `main`).
#[derive(Clone, Debug)]
pub struct Knobs {
    pub clients: usize,
    pub room_size: usize,
    pub rates: Vec<f64>,
    pub step_secs: u64,
    pub drain_secs: u64,
    pub concurrency: usize,
    pub settle_secs: u64,
    pub rate: f64,
    pub kill_after_secs: u64,
    pub after_kill_secs: u64,
    /// A ladder stops at the first step whose p99 exceeds this (the system is saturated).
    pub give_up_p99_ms: f64,
}

impl Knobs {
    /// True when a ladder step's p99 shows the system saturated: the ladder stops there.
    pub fn saturated(&self, latency: Option<&crate::stats::LatencySummary>) -> bool {
        latency.is_none_or(|l| l.p99 > self.give_up_p99_ms)
    }
}

/// A handler for scenarios that only hold connections.
pub struct Ignore;

impl Handler for Ignore {
    fn on_event(&self, _: u32, _: &str, _: &Value) {}
}

/// Clients of a population, by user index (None where the connection failed).
pub struct Clients {
    pub handles: Vec<Option<ClientHandle>>,
    pub failed: usize,
    pub first_error: Option<String>,
}

impl Clients {
    pub fn close_all(&self) {
        for h in self.handles.iter().flatten() {
            h.close();
        }
    }

    pub fn connected(&self) -> usize {
        self.handles.iter().filter(|h| h.is_some()).count()
    }
}

/// The gateway a user's client connects to first: users alternate between nodes, so every chat
/// has members on each node (and a sender's receivers are mostly on another node).
pub fn node_of(user: usize, nodes: usize) -> usize {
    user % nodes
}

/// Connects the given users' clients (each joins its chat), `concurrency` handshakes at a time;
/// records handshake+join latency when asked.
pub async fn connect(
    cluster: &Cluster,
    pop: &Population,
    users: &[usize],
    handler: Arc<dyn Handler>,
    reconnect: bool,
    concurrency: usize,
    latency: Option<&Latency>,
) -> Clients {
    let bar = progress::bar("connecting", users.len() as u64);
    let failed = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None);
    let results: Vec<(usize, Option<ClientHandle>)> = stream::iter(users.iter().copied())
        .map(|u| {
            let handler = handler.clone();
            let bar = bar.clone();
            let (failed, first_error) = (&failed, &first_error);
            async move {
                let node = node_of(u, cluster.urls.len());
                let started = Instant::now();
                let spec = ClientSpec {
                    id: u as u32,
                    urls: cluster.urls.clone(),
                    node,
                    token: pop.tokens[u].clone(),
                    chats: vec![pop.chats[pop.chat_of(u)].clone()],
                    reconnect,
                };
                let handle = match sio::handshake(&cluster.urls[node], &spec.token).await {
                    Ok(ws) => {
                        let (handle, joined) = sio::spawn_joined(spec, ws, handler).await;
                        match joined {
                            Ok(()) => Some(handle),
                            Err(e) => {
                                first_error.lock().unwrap().get_or_insert(e.to_string());
                                None
                            }
                        }
                    }
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e.to_string());
                        None
                    }
                };
                match (&handle, latency) {
                    (Some(_), Some(l)) => l.record_us(started.elapsed().as_micros() as u64),
                    (None, _) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                bar.inc(1);
                (u, handle)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let max = users.iter().copied().max().map_or(0, |m| m + 1);
    let mut handles: Vec<Option<ClientHandle>> = (0..max).map(|_| None).collect();
    for (u, h) in results {
        handles[u] = h;
    }
    Clients {
        handles,
        failed: failed.into_inner(),
        first_error: first_error.into_inner().unwrap(),
    }
}

/// [`connect`] where every client must make it (ladders measure a complete population).
pub async fn connect_every(
    cluster: &Cluster,
    pop: &Population,
    users: &[usize],
    handler: Arc<dyn Handler>,
    reconnect: bool,
    concurrency: usize,
) -> anyhow::Result<Clients> {
    let clients = connect(cluster, pop, users, handler, reconnect, concurrency, None).await;
    anyhow::ensure!(
        clients.failed == 0,
        "{} clients failed to connect (first error: {:?})",
        clients.failed,
        clients.first_error
    );
    Ok(clients)
}

/// Calls `f(i)` for i = 0, 1, … at `rate` per second for `duration`, open loop: a late timer
/// tick catches up, so the offered rate holds even when the system under test lags.
pub async fn paced(rate: f64, duration: Duration, mut f: impl FnMut(u64)) -> u64 {
    let started = Instant::now();
    let mut issued = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let due = (rate * elapsed.min(duration).as_secs_f64()) as u64;
        while issued < due {
            f(issued);
            issued += 1;
        }
        if elapsed >= duration {
            return issued;
        }
    }
}

/// The highest rate among steps whose p99 (of `pick`) is under 50 ms with nothing lost.
pub fn max_rate_under_50ms(
    steps: &[Step],
    pick: impl Fn(&Step) -> Option<f64>,
    rate: impl Fn(&Step) -> f64,
) -> f64 {
    steps
        .iter()
        .filter(|s| pick(s).is_some_and(|p99| p99 < 50.0) && s.lost == 0 && s.errors == 0)
        .map(rate)
        .fold(0.0, f64::max)
}

pub fn log_step(label: &str, s: &Step) {
    let p = |l: &Option<crate::stats::LatencySummary>| {
        l.as_ref()
            .map(|l| format!("p50 {:.1} p99 {:.1} max {:.1} ms", l.p50, l.p99, l.max))
            .unwrap_or_else(|| "-".into())
    };
    progress::log(format!(
        "{label} offered {:.0}/s: delivered {:.0}/s acked {:.0}/s | latency {} | ack {} | lost {} dups {} errors {} | server CPU {:.1}s gen CPU {:.1}s steal {:.1}%",
        s.offered_rate,
        s.delivered_rate,
        s.acked_rate,
        p(&s.latency_ms),
        p(&s.ack_latency_ms),
        s.lost,
        s.duplicates,
        s.errors,
        s.server_cpu_s,
        s.generator_cpu_s,
        s.steal_pct
    ));
}
