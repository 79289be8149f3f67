//! The HTTP server loop (axum's `serve` does not expose these): every accepted connection gets
//! TCP_NODELAY, is counted against a per-address cap, and is served by hyper with a deadline
//! and a size bound for request heads, so that half-sent heads (slowloris) and oversized ones
//! cannot hold connections and memory. The peer address reaches handlers as axum's
//! [`ConnectInfo`].

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Limits of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// A request head must be complete this long after its first byte (HTTP/1).
    pub head_timeout: Duration,
    /// The most a request head may take (HTTP/1 read buffer; HTTP/2 header list).
    pub max_head_bytes: usize,
    /// Open TCP connections from one IP address to this node; 0: no cap.
    pub connections_per_address: usize,
}

/// Open connections per peer address; a [`Slot`] is one of them.
#[derive(Default)]
struct AddressCounts {
    open: Mutex<HashMap<IpAddr, Open>>,
}

#[derive(Default)]
struct Open {
    connections: usize,
    /// A refusal was logged since the address was last below its cap (one line per episode;
    /// the metric counts every refusal).
    refusal_logged: bool,
}

/// One counted connection; dropping it (the connection ended) frees the slot.
struct Slot {
    counts: Arc<AddressCounts>,
    ip: IpAddr,
}

impl AddressCounts {
    /// A slot for `ip`, or None when it already holds `cap` connections (0: no cap).
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let entry = open.entry(ip).or_default();
        if cap > 0 && entry.connections >= cap {
            if !entry.refusal_logged {
                entry.refusal_logged = true;
                tracing::warn!(%ip, cap, "connections refused: the address holds as many as allowed");
            }
            return None;
        }
        entry.connections += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = open.get_mut(&self.ip) {
            entry.connections -= 1;
            entry.refusal_logged = false;
            if entry.connections == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection and its slot: the slot lives as long as the stream, also when hyper hands the
/// stream over to a WebSocket (an upgraded connection is no longer hyper's, and it is the kind
/// a client holds for hours).
struct Counted {
    tcp: tokio::net::TcpStream,
    _slot: Slot,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections
/// (upgraded WebSockets are no longer connections of hyper's; the shutdown future closes them).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HYPER_BUF));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .enable_connect_protocol();
    let counts = Arc::new(AddressCounts::default());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = counts.take(peer.ip(), limits.connections_per_address) else {
            metrics.error("ADDRESS_CONNECTION_LIMIT");
            drop(tcp);
            continue;
        };
        // Socket.IO frames are small and latency-bound (an ack, then a broadcast): without
        // TCP_NODELAY, Nagle holds the second write until the first is ACKed (up to 40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: ::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let head_timeout = limits.head_timeout;
        tokio::spawn(async move {
            // hyper's head deadline starts with the first byte: a connection that sends
            // nothing at all would be held forever.
            if !matches!(
                tokio::time::timeout(head_timeout, tcp.peek(&mut [0u8; 1])).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let counted = Counted { tcp, _slot: slot };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(counted), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// hyper refuses a smaller HTTP/1 read buffer.
const MIN_HYPER_BUF: usize = 8192;

/// The peer address of a request served by [`serve`].
pub(crate) fn peer(parts: &::http::request::Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_slots_back() {
        let counts = Arc::new(AddressCounts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counts.take(a, 2).expect("first");
        let second = counts.take(a, 2).expect("second");
        assert!(counts.take(a, 2).is_none(), "third over the cap");
        assert!(counts.take(a, 2).is_none(), "still over");
        assert!(
            counts.take(b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        let third = counts.take(a, 2).expect("a slot came back");
        drop((second, third));
        assert!(
            counts.open.lock().unwrap().is_empty(),
            "nothing left behind"
        );
        assert!(counts.take(a, 0).is_some(), "0: no cap");
    }
}
