//! The client contracts, end to end: the real npm `socket.io-client` (the JS suites in
//! `tests/contract/<dialect>/`) against two gateway nodes of one cluster, every part a separate
//! process, every dialect mounted at once (`chat` on `/`, `app` on `/ws/app`, `guild` on
//! `/guild`, `vault` on `/vault`, `tasks` on `/tasks`). One test function per contract document, so a failure names its contract.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`), `npm ci` in
//! `tests/contract/`, Postgres (`SWITCHBOARD_TEST_DATABASE_URL`), `redis-server`
//! (`SWITCHBOARD_TEST_REDIS_SERVER`) and `node` (`SWITCHBOARD_TEST_NODE`) 20 or later.
//! `make test` prepares all of it. Each test function starts its own cluster.

mod support;

use std::time::Duration;

use support::{Cluster, Files, Proxies, otlp::OtlpReceiver, suite_files};

fn every(_: &str) -> bool {
    true
}

/// `chat` (002, `../shared/contracts/002_*.txt`) on `/`.
#[test]
fn chat_contract_002() {
    let cluster = Cluster::start("chat_contract_002");
    cluster.run_suite(&suite_files("chat", every));
}

/// `app` (001) on `/ws/app`.
#[test]
fn app_contract_001() {
    let cluster = Cluster::start("app_contract_001");
    cluster.run_suite(&suite_files("app", every));
}

/// `guild` (000) on `/guild`.
#[test]
fn guild_contract_000() {
    let cluster = Cluster::start("guild_contract_000");
    cluster.run_suite(&suite_files("guild", every));
}

/// `vault` (003) on `/vault`.
#[test]
fn vault_contract_003() {
    let cluster = Cluster::start("vault_contract_003");
    cluster.run_suite(&suite_files("vault", every));
}

/// `tasks` (004) on `/tasks`.
#[test]
fn tasks_contract_004() {
    let cluster = Cluster::start("tasks_contract_004");
    cluster.run_suite(&suite_files("tasks", every));
}

/// The files API against the S3 backend: a real S3 API (`moto_server`, installed by
/// `scripts/ensure-moto.sh`) instead of the default folder; the same uploads, limits and
/// downloads as `tasks_contract_004` runs on the folder.
#[test]
fn files_on_s3() {
    let cluster = Cluster::start_with("files_on_s3", Files::S3);
    cluster.run_suite(&suite_files("tasks", |name| name == "files.test.mjs"));
}

/// Clients of every mounted dialect against one cluster at once: each gets only its own
/// contract's events; user events, disconnects and revocations reach every namespace.
#[test]
fn dialects_together() {
    let cluster = Cluster::start("dialects_together");
    cluster.run_suite(&suite_files("all", every));
}

/// A gateway node is `SIGKILL`ed mid-traffic: no acknowledged message is lost or duplicated,
/// its clients carry on through the other node, and its users go offline by TTL.
#[test]
fn fault_gateway_node_killed() {
    let cluster = Cluster::start("fault_gateway_node_killed");
    cluster.run_suite(&suite_files("faults", |name| {
        name == "fault-node-kill.test.mjs"
    }));
}

/// Redis is restarted under both nodes: delivery between the nodes comes back both ways, and
/// nothing hangs while it is down.
#[test]
fn fault_redis_restart() {
    let cluster = Cluster::start("fault_redis_restart");
    cluster.run_suite(&suite_files("faults", |name| {
        name == "fault-redis-restart.test.mjs"
    }));
}

/// A gateway node gets SIGTERM: it turns unready, hints its sockets to reconnect and closes
/// their transports so clients come back through another node.
#[test]
fn fault_gateway_node_drained() {
    let cluster = Cluster::start("fault_gateway_node_drained");
    cluster.run_suite(&suite_files("faults", |name| {
        name == "fault-drain.test.mjs"
    }));
}

/// The security suite (issue #16): every attack refused, a control client undisturbed. Small
/// limits so each one is reached quickly (the suite reads them as `SB_*`); the gateways log at
/// debug so the suite can check that no credential reaches their logs.
#[test]
fn security_suite() {
    let cluster = Cluster::start_with_env(
        "security_suite",
        Files::Folder,
        &[
            ("SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS", "40"),
            ("SWITCHBOARD_MAX_SOCKETS_PER_USER", "5"),
            ("SWITCHBOARD_SOCKET_EVENTS_PER_SECOND", "10"),
            ("SWITCHBOARD_SOCKET_EVENT_BURST", "20"),
            ("SWITCHBOARD_SOCKET_EVENT_OVERRUN", "30"),
            ("SWITCHBOARD_REQUEST_HEAD_TIMEOUT_MS", "2000"),
            ("SWITCHBOARD_MAX_REQUEST_HEAD_BYTES", "16384"),
            ("SWITCHBOARD_MAX_ROOMS_PER_SOCKET", "8"),
        ],
        Some("debug"),
    );
    cluster.run_suite(&suite_files("security", every));
}

/// A client stops reading while its room is busy: it is disconnected after the write deadline
/// (counted, presence offline), and nobody else is disturbed or gets anything twice.
#[test]
fn fault_slow_consumer() {
    let cluster = Cluster::start("fault_slow_consumer");
    cluster.run_suite(&suite_files("faults", |name| {
        name == "fault-slow-consumer.test.mjs"
    }));
}

/// The trace of an error, at `RUST_LOG=warn` (what production runs): every process exports to a
/// real OTLP receiver started here; a send the messages service refuses answers a
/// `correlationId`, and the gateway's and the messages service's spans of that send are in the
/// trace of that id.
#[test]
fn trace_of_an_error() {
    let receiver = OtlpReceiver::start();
    let cluster = Cluster::start_traced("trace_of_an_error", &receiver.endpoint);
    cluster.run_suite(&suite_files("traces", every));
    let ids = std::fs::read_to_string(cluster.dir().join("correlation-ids.txt"))
        .expect("the suite wrote the correlation ids it saw");
    for line in ids.lines().filter(|l| !l.is_empty()) {
        let (kind, id) = line.split_once(' ').expect("`<kind> <id>` lines");
        // Where the error started in the gateway, and which span of the messages service must
        // be in its trace (a refused API send goes through a batch on the `SendStream`, each
        // send in it a span of the sender's trace).
        let (gateway_span, messages_span) = match kind {
            "socket" => ("socket.event", "grpc"),
            _ => ("http", "send"),
        };
        let names = |spans: &[support::otlp::ReceivedSpan], service: &str| {
            spans
                .iter()
                .filter(|s| s.trace_id == id && s.service == service)
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        let spans = receiver.wait_until(Duration::from_secs(20), |spans| {
            names(spans, "switchboard-gateway")
                .iter()
                .any(|n| n == gateway_span)
                && names(spans, "messages").iter().any(|n| n == messages_span)
        });
        let gateway = names(&spans, "switchboard-gateway");
        let messages = names(&spans, "messages");
        assert!(
            gateway.iter().any(|n| n == gateway_span),
            "{kind}: the gateway's {gateway_span} span is in trace {id}: {gateway:?}"
        );
        assert!(
            messages.iter().any(|n| n == messages_span),
            "{kind}: the messages service's {messages_span} span is in trace {id}: {messages:?}"
        );
    }
}

/// Postgres is cut off (a proxy between it and the membership and messages services) for 10 s
/// under a trickle of sends from both nodes: every send is answered (`INTERNAL` while it is
/// away), typing and presence keep working, `/readyz` says `degraded`; once it is back, sends
/// succeed again, and every acknowledged message is stored and delivered exactly once.
#[test]
fn fault_postgres_outage() {
    let cluster = Cluster::start_with_proxies(
        "fault_postgres_outage",
        Proxies {
            postgres: true,
            ..Proxies::default()
        },
    );
    cluster.run_suite(&suite_files("faults", |name| {
        name == "fault-postgres-outage.test.mjs"
    }));
}

/// Gateway node gw-b alone is cut off from Redis (a proxy) for 3 s while gw-a's clients send:
/// once it is back, every client on both nodes has every acknowledged message, once, all in the
/// delivery log's order (gw-b caught up from where it stopped reading).
#[test]
fn fault_redis_partition() {
    let cluster = Cluster::start_with_proxies(
        "fault_redis_partition",
        Proxies {
            gateway_b_redis: true,
            ..Proxies::default()
        },
    );
    cluster.run_suite(&suite_files("faults", |name| {
        name == "fault-redis-partition.test.mjs"
    }));
}

/// Connection state recovery with the real socket.io-client: recovered on the same node, on
/// the other node, through a balancer after its node was SIGKILLed right after a burst (every
/// client then has every message once); refused to another user and after the window.
#[test]
fn connection_state_recovery() {
    let cluster = Cluster::start_full(
        "connection_state_recovery",
        Files::Folder,
        &[("SWITCHBOARD_RECOVERY_WINDOW_MS", "4000")],
        None,
        Proxies {
            balancer: true,
            ..Proxies::default()
        },
    );
    cluster.run_suite(&suite_files("recovery", every));
}

/// Send pacing (issue #17): with `SWITCHBOARD_SEND_LINGER_MS` at 1,000, sends made right after a
/// batch leave together in the next one, each still acked and delivered once, in order.
#[test]
fn send_pacing() {
    let cluster = Cluster::start_with_env(
        "send_pacing",
        Files::Folder,
        &[
            ("SWITCHBOARD_SEND_LINGER_MS", "1000"),
            ("SWITCHBOARD_CHAT_RATE_LIMIT", "2"),
        ],
        None,
    );
    cluster.run_suite(&suite_files("batching", every));
}
