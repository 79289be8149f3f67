//! A TCP proxy for fault injection: a process of the cluster is pointed at the proxy instead of
//! at its dependency (a gateway node at Redis, a service at Postgres), so the suite can cut that
//! one process off while everything else keeps its direct connection, which stopping the
//! dependency itself cannot do.
//!
//! The proxy runs on a thread of the test process, on a tokio runtime of its own (so it works
//! from any test, async or not), and stops when it is dropped. The suite drives it through a
//! control port with a line protocol: a client connects and sends `cut\n` or `restore\n` (as
//! many lines as it likes), and each line is answered `ok\n`.
//!
//! - `cut` closes every forwarded connection, and `ok` is answered only once they all are, so
//!   the fault is in effect when the suite goes on. Until `restore`, a new connection is closed
//!   right after it is accepted: the peer sees its connect succeed and the connection drop (as
//!   after a network failure), not a refusal it might treat differently.
//! - `restore` forwards new connections again; the closed ones stay closed, and the clients
//!   must reconnect by themselves, which is what the fault tests are about.
//!
//! Given several upstreams ([`Proxy::balance`]) it is a TCP load balancer: each connection goes
//! to the next upstream in turn, or to the one after it when that one does not answer (a killed
//! node), as a cloud balancer's health check would have it.

use std::{net::SocketAddr, sync::Arc, thread, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};

/// How long `cut` waits for the forwarded connections to close before it answers anyway (they
/// close as soon as their task runs; this only bounds a surprise).
const CUT_DEADLINE: Duration = Duration::from_secs(5);

/// A running proxy to one upstream address; dropping it closes every connection it forwards.
pub struct Proxy {
    /// Where the proxied process connects instead of the upstream (on 127.0.0.1).
    pub port: u16,
    /// The control port (on 127.0.0.1): `cut` / `restore`.
    pub control_port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on two free ports of 127.0.0.1 and forwards every connection to `upstream`.
    /// `name` only labels its thread and its log lines.
    pub fn start(name: &str, upstream: SocketAddr) -> Proxy {
        Proxy::balance(name, vec![upstream])
    }

    /// Like [`Proxy::start`], each connection to the next of `upstreams` that answers.
    pub fn balance(name: &str, upstreams: Vec<SocketAddr>) -> Proxy {
        assert!(!upstreams.is_empty(), "a proxy needs an upstream");
        // Bound here, not on the proxy's thread, so the ports are known (and taken) on return.
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("[proxy {name}] binding 127.0.0.1:0: {e}"));
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener for tokio");
            let port = listener
                .local_addr()
                .expect("a bound listener's address")
                .port();
            (listener, port)
        };
        let (listener, port) = bind();
        let (control, control_port) = bind();
        let (stop, stopped) = oneshot::channel();
        let label = name.to_string();
        eprintln!(
            "[proxy {name}] 127.0.0.1:{port} → {upstreams:?}, control on 127.0.0.1:{control_port}"
        );
        let thread = thread::Builder::new()
            .name(format!("proxy-{name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the proxy's tokio runtime");
                runtime.block_on(serve(label, listener, control, upstreams, stopped));
                // Dropping the runtime drops every forwarding task, closing its connections.
            })
            .expect("starting the proxy's thread");
        Proxy {
            port,
            control_port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts forwarded and control connections until `stopped`.
async fn serve(
    name: String,
    listener: std::net::TcpListener,
    control: std::net::TcpListener,
    upstreams: Vec<SocketAddr>,
    mut stopped: oneshot::Receiver<()>,
) {
    let upstreams = Arc::new(upstreams);
    let mut next = 0;
    let listener = TcpListener::from_std(listener).expect("a tokio listener");
    let control = TcpListener::from_std(control).expect("a tokio listener");
    // True while cut. Every forwarded connection holds a receiver and ends when it turns true,
    // so the number of receivers is the number of open connections.
    let cut = Arc::new(watch::channel(false).0);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if *cut.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, upstreams.clone(), next, cut.subscribe()));
                next = (next + 1) % upstreams.len();
            }
            accepted = control.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(control_session(name.clone(), stream, cut.clone()));
            }
        }
    }
}

/// Copies bytes both ways between `client` and a new connection to an upstream (`upstreams[first]`,
/// or the next that answers) until either side closes or the proxy is cut; both connections are
/// closed when it returns.
async fn forward(
    mut client: TcpStream,
    upstreams: Arc<Vec<SocketAddr>>,
    first: usize,
    mut cut: watch::Receiver<bool>,
) {
    let copy = async {
        let mut server = None;
        for i in 0..upstreams.len() {
            if let Ok(s) = TcpStream::connect(upstreams[(first + i) % upstreams.len()]).await {
                server = Some(s);
                break;
            }
        }
        // No upstream answers: the client's connection just closes.
        let Some(mut server) = server else {
            return;
        };
        let _ = server.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    };
    tokio::select! {
        _ = copy => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// Answers one control connection's lines.
async fn control_session(name: String, stream: TcpStream, cut: Arc<watch::Sender<bool>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.trim() {
            "cut" => {
                let open = cut.receiver_count();
                cut.send_replace(true);
                // Every forwarding task drops its receiver as it closes its connections.
                let closed = tokio::time::timeout(CUT_DEADLINE, cut.closed())
                    .await
                    .is_ok();
                eprintln!(
                    "[proxy {name}] cut: {open} connection(s) closed{}",
                    if closed { "" } else { " (some still closing)" }
                );
                "ok"
            }
            "restore" => {
                cut.send_replace(false);
                eprintln!("[proxy {name}] restored");
                "ok"
            }
            _ => "error: expected `cut` or `restore`",
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
