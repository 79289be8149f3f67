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

use support::{Cluster, Files, suite_files};

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
