//! The `chat` (002) contract, end to end: the real npm `socket.io-client` (the JS suite in
//! `tests/contract/`) against two gateway nodes of one cluster, every part a separate process.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`), `npm ci` in
//! `tests/contract/`, Postgres (`SWITCHBOARD_TEST_DATABASE_URL`), `redis-server`
//! (`SWITCHBOARD_TEST_REDIS_SERVER`) and `node` (`SWITCHBOARD_TEST_NODE`) 20 or later.
//! `make test` prepares all of it. Each test function starts its own cluster.

mod support;

use support::{Cluster, suite_files};

fn is_fault_suite(name: &str) -> bool {
    name.starts_with("fault-")
}

/// Every contract file except the fault-injection ones, against one cluster.
#[test]
fn chat_contract() {
    let cluster = Cluster::start("chat_contract");
    cluster.run_suite(&suite_files(|name| !is_fault_suite(name)));
}

/// A gateway node is `SIGKILL`ed mid-traffic: no acknowledged message is lost or duplicated,
/// its clients carry on through the other node, and its users go offline by TTL.
#[test]
fn fault_gateway_node_killed() {
    let cluster = Cluster::start("fault_gateway_node_killed");
    cluster.run_suite(&suite_files(|name| name == "fault-node-kill.test.mjs"));
}

/// Redis is restarted under both nodes: delivery between the nodes comes back both ways, and
/// nothing hangs while it is down.
#[test]
fn fault_redis_restart() {
    let cluster = Cluster::start("fault_redis_restart");
    cluster.run_suite(&suite_files(|name| name == "fault-redis-restart.test.mjs"));
}

/// A gateway node gets SIGTERM: it turns unready, hints its sockets to reconnect and closes
/// their transports so clients come back through another node.
#[test]
fn fault_gateway_node_drained() {
    let cluster = Cluster::start("fault_gateway_node_drained");
    cluster.run_suite(&suite_files(|name| name == "fault-drain.test.mjs"));
}
