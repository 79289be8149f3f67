//! Idle connections: memory per connection, read from the server processes' RSS.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Cluster, Ignore, Knobs, Outcome, connect};
use crate::progress;
use crate::provision::provision;
use crate::stats::rss_kb;

pub async fn run(cluster: &Cluster, k: &Knobs) -> anyhow::Result<Outcome> {
    let pop = provision(&cluster.admin, &cluster.run, k.clients, k.room_size).await?;
    // Let the servers settle after provisioning, then read their baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<Option<u64>> = cluster.pids.iter().map(|p| rss_kb(*p)).collect();
    let users: Vec<usize> = (0..k.clients).collect();
    let clients = connect(
        cluster,
        &pop,
        &users,
        Arc::new(Ignore),
        false,
        k.concurrency,
        None,
    )
    .await;
    progress::log(format!(
        "idle: {} connected, {} failed{}; settling {} s",
        clients.connected(),
        clients.failed,
        clients
            .first_error
            .as_deref()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default(),
        k.settle_secs
    ));
    let bar = progress::timed("settling", k.settle_secs);
    for _ in 0..k.settle_secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let after: Vec<Option<u64>> = cluster.pids.iter().map(|p| rss_kb(*p)).collect();
    let connected = clients.connected();
    let nodes = cluster.urls.len();
    // Per node: its growth over the connections it holds (users alternate between nodes).
    let per_node: Vec<Value> = (0..cluster.pids.len())
        .map(|i| {
            let held = (0..k.clients)
                .filter(|u| u % nodes == i % nodes && clients.handles[*u].is_some())
                .count();
            let grown = match (before[i], after[i]) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b) * 1024),
                _ => None,
            };
            json!({
                "name": cluster.names[i],
                "connections": held,
                "rss_before_kb": before[i],
                "rss_after_kb": after[i],
                "bytes_per_conn": grown.map(|g| g as f64 / held.max(1) as f64),
            })
        })
        .collect();
    let grown: u64 = before
        .iter()
        .zip(&after)
        .filter_map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?) * 1024))
        .sum();
    let mem_per_conn = grown as f64 / connected.max(1) as f64;
    progress::log(format!(
        "idle: {connected} connections, RSS grew {:.1} MB → {:.0} bytes per connection",
        grown as f64 / 1e6,
        mem_per_conn
    ));
    clients.close_all();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Outcome {
        params: json!({ "clients": k.clients, "room_size": k.room_size, "nodes": nodes, "settle_s": k.settle_secs }),
        steps: vec![],
        summary: json!({
            "connections": k.clients,
            "connected": connected,
            "failed": clients.failed,
            "mem_per_conn_bytes": mem_per_conn,
            "per_node": per_node,
        }),
    })
}
