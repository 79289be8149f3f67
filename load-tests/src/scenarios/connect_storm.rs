//! A connect storm: every client connects at once (`concurrency` handshakes in flight), each
//! authenticating and joining its chat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Cluster, Ignore, Knobs, Outcome, connect};
use crate::progress;
use crate::provision::provision;
use crate::stats::Latency;

pub async fn run(cluster: &Cluster, k: &Knobs) -> anyhow::Result<Outcome> {
    let pop = provision(&cluster.admin, &cluster.run, k.clients, k.room_size).await?;
    let users: Vec<usize> = (0..k.clients).collect();
    let latency = Latency::default();
    let started = Instant::now();
    let clients = connect(
        cluster,
        &pop,
        &users,
        Arc::new(Ignore),
        false,
        k.concurrency,
        Some(&latency),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let connected = clients.connected();
    let handshake = latency.take();
    let rate = connected as f64 / elapsed;
    progress::log(format!(
        "connect-storm: {connected} connected, {} failed in {elapsed:.2} s → {rate:.0}/s; handshake+join p50 {:.1} p99 {:.1} ms{}",
        clients.failed,
        handshake.as_ref().map_or(0.0, |h| h.p50),
        handshake.as_ref().map_or(0.0, |h| h.p99),
        clients
            .first_error
            .as_deref()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default(),
    ));
    clients.close_all();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Outcome {
        params: json!({ "clients": k.clients, "concurrency": k.concurrency, "room_size": k.room_size }),
        steps: vec![],
        summary: json!({
            "connections": k.clients,
            "connected": connected,
            "failed": clients.failed,
            "elapsed_s": elapsed,
            "connect_rate": rate,
            "handshake_ms": handshake,
        }),
    })
}
