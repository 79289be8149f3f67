//! Integration tests against a real Redis (`SWITCHBOARD_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each with its own key prefix, observing the published events
//! through a subscriber. No timing assertions: everything is polled with generous deadlines.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use fred::{clients::SubscriberClient, prelude::*};
use serde_json::Value as Json;
use switchboard_common::{DomainError, ErrorCode};
use switchboard_presence::{Config, run};
use switchboard_proto::presence::{self as pb, presence_client::PresenceClient};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

const TTL_MS: u64 = 1_500;
const THROTTLE_MS: u64 = 500;
const DEADLINE: Duration = Duration::from_secs(15);

fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}

fn test_config(prefix: &str) -> Config {
    Config {
        redis_url: redis_url(),
        redis_prefix: prefix.to_string(),
        // Long enough that sockets of tests not about expiry never expire mid-test.
        presence_ttl_ms: 60_000,
        presence_throttle_ms: THROTTLE_MS,
        typing_ttl_ms: 3_000,
        sweep_interval_ms: 50,
    }
}

/// For the tests about expiry: unrefreshed sockets are gone after [`TTL_MS`].
fn expiring_config(prefix: &str) -> Config {
    Config {
        presence_ttl_ms: TTL_MS,
        ..test_config(prefix)
    }
}

/// One running replica.
struct Replica {
    client: PresenceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    async fn start(config: Config) -> Replica {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        let client = PresenceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Replica {
            client,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

/// The events published on `{prefix}presence:events`, in arrival order.
struct Events {
    seen: Arc<Mutex<Vec<Json>>>,
    subscriber: SubscriberClient,
}

impl Events {
    async fn subscribe(prefix: &str) -> Events {
        let config = fred::types::config::Config::from_url(&redis_url()).unwrap();
        let subscriber = Builder::from_config(config)
            .build_subscriber_client()
            .unwrap();
        subscriber.init().await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let _listener = subscriber.on_message(move |m| {
            let sink = sink.clone();
            async move {
                let text: String = m.value.convert()?;
                let json: Json = serde_json::from_str(&text).expect("events are JSON");
                sink.lock().unwrap().push(json);
                Ok(())
            }
        });
        subscriber
            .subscribe(format!("{prefix}presence:events"))
            .await
            .unwrap();
        Events { seen, subscriber }
    }

    fn all(&self) -> Vec<Json> {
        self.seen.lock().unwrap().clone()
    }

    fn of_type(&self, kind: &str) -> Vec<Json> {
        self.all()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    fn presence_of(&self, user: &str) -> Vec<Json> {
        self.of_type("presence")
            .into_iter()
            .filter(|e| e["userId"] == user)
            .collect()
    }

    /// Waits until `done` holds for the events seen so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let all = self.all();
            if done(&all) {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; events: {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn close(self) {
        let _ = self.subscriber.quit().await;
    }
}

/// Deletes every key of a test's prefix (tests leave sockets, pending entries and last
/// broadcasts behind, some without TTL).
async fn cleanup(prefix: &str) {
    let config = fred::types::config::Config::from_url(&redis_url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    let _: i64 = client
        .eval(
            "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do n = n + redis.call('DEL', k) end return n",
            (),
            vec![prefix.to_string()],
        )
        .await
        .unwrap();
    let _ = client.quit().await;
}

fn prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4())
}

fn sref(ns: &str, user: &str, socket: &str) -> pb::SocketRef {
    pb::SocketRef {
        namespace: ns.into(),
        user_id: user.into(),
        socket_id: socket.into(),
    }
}

async fn add(c: &mut PresenceClient<Channel>, user: &str, socket: &str) -> bool {
    c.add_socket(pb::AddSocketRequest {
        socket: Some(sref("/", user, socket)),
        node_id: "node-1".into(),
        user_agent: None,
        ip: None,
        ttl_ms: 0,
        max_user_sockets: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .user_was_offline
}

async fn remove(c: &mut PresenceClient<Channel>, user: &str, socket: &str) -> bool {
    c.remove_socket(pb::RemoveSocketRequest {
        socket: Some(sref("/", user, socket)),
    })
    .await
    .unwrap()
    .into_inner()
    .user_now_offline
}

async fn presence(c: &mut PresenceClient<Channel>, users: &[&str]) -> Vec<pb::UserPresence> {
    c.get_presence(pb::GetPresenceRequest {
        namespace: "/".into(),
        user_ids: users.iter().map(|u| u.to_string()).collect(),
    })
    .await
    .unwrap()
    .into_inner()
    .users
}

fn statuses(events: &[Json]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Consecutive presence events of one user are at least a throttle window apart.
fn assert_throttled(events: &[Json]) {
    for pair in events.windows(2) {
        let (a, b) = (
            pair[0]["atMs"].as_i64().unwrap(),
            pair[1]["atMs"].as_i64().unwrap(),
        );
        assert!(
            b - a >= THROTTLE_MS as i64,
            "two events within the throttle window: {events:#?}"
        );
    }
}

#[tokio::test]
async fn two_devices_online_once_offline_after_both_leave() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let replica = Replica::start(test_config(&prefix)).await;
    let mut c = replica.client.clone();

    assert!(
        add(&mut c, "alice", "phone").await,
        "first device: the user was offline"
    );
    assert!(
        !add(&mut c, "alice", "laptop").await,
        "second device: already online"
    );
    events
        .wait_for("online", |_| !events.presence_of("alice").is_empty())
        .await;

    assert!(
        !remove(&mut c, "alice", "phone").await,
        "one device left: still online"
    );
    assert!(presence(&mut c, &["alice"]).await[0].online);
    assert!(
        remove(&mut c, "alice", "laptop").await,
        "both left: offline"
    );
    assert!(!presence(&mut c, &["alice"]).await[0].online);

    events
        .wait_for("offline", |_| {
            statuses(&events.presence_of("alice"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;
    let alice = events.presence_of("alice");
    assert_eq!(statuses(&alice), ["online", "offline"], "{alice:#?}");
    let first = &alice[0];
    assert_eq!(first["namespace"], "/");
    assert!(first["atMs"].as_i64().unwrap() > 0);
    assert_throttled(&alice);

    replica.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_user_holds_at_most_its_cap_of_live_sockets() {
    let prefix = prefix();
    let replica = Replica::start(test_config(&prefix)).await;
    let mut c = replica.client.clone();
    let capped = |socket: &str| pb::AddSocketRequest {
        socket: Some(sref("/", "gina", socket)),
        node_id: "node-1".into(),
        user_agent: None,
        ip: None,
        ttl_ms: 0,
        max_user_sockets: 2,
    };
    c.add_socket(capped("s1")).await.expect("first");
    c.add_socket(capped("s2")).await.expect("second");
    let refused = c
        .add_socket(capped("s3"))
        .await
        .expect_err("third over the cap");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // The refused socket was not recorded; an existing one may re-register.
    assert_eq!(presence(&mut c, &["gina"]).await[0].sockets.len(), 2);
    c.add_socket(capped("s2"))
        .await
        .expect("a known socket re-registers");
    // Another namespace has its own count; a slot freed is a slot to take.
    let mut other = capped("s3");
    other.socket = Some(sref("/other", "gina", "s3"));
    c.add_socket(other).await.expect("another namespace");
    remove(&mut c, "gina", "s1").await;
    c.add_socket(capped("s3")).await.expect("a slot came back");

    replica.shutdown().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn unrefreshed_socket_expires_refreshed_one_stays() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let replica = Replica::start(expiring_config(&prefix)).await;
    let mut c = replica.client.clone();

    add(&mut c, "idle", "s-idle").await;
    add(&mut c, "busy", "s-busy").await;

    // The "gateway" refreshes busy's socket every third of the TTL (plus an unknown socket,
    // which is ignored).
    let mut refresher = replica.client.clone();
    let refreshing = tokio::spawn(async move {
        loop {
            refresher
                .refresh(pb::RefreshRequest {
                    sockets: vec![sref("/", "busy", "s-busy"), sref("/", "ghost", "s-ghost")],
                    ttl_ms: 0,
                })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(TTL_MS / 3)).await;
        }
    });

    events
        .wait_for("idle offline", |_| {
            statuses(&events.presence_of("idle"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;
    // Well past a TTL of busy's connection: still online, never reported offline.
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    let users = presence(&mut c, &["idle", "busy", "ghost"]).await;
    assert!(!users[0].online && users[0].sockets.is_empty());
    assert!(users[1].online, "{users:#?}");
    assert_eq!(users[1].sockets.len(), 1);
    assert!(
        users[1].sockets[0].last_seen_ms > users[1].sockets[0].connected_at_ms,
        "refresh moved last_seen"
    );
    assert!(
        !users[2].online,
        "refreshing an unknown socket does not create it"
    );
    assert_eq!(statuses(&events.presence_of("busy")), ["online"]);
    assert!(events.presence_of("ghost").is_empty());

    refreshing.abort();
    // Once the refreshes stop, busy expires too.
    events
        .wait_for("busy offline", |_| {
            statuses(&events.presence_of("busy"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;

    replica.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}

/// A namespace's contract may name its own presence TTL: a socket added (and refreshed) with
/// one outlives the service's default, and one refreshed with a short one expires by it.
#[tokio::test]
async fn a_socket_keeps_its_own_ttl() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let replica = Replica::start(expiring_config(&prefix)).await;
    let mut c = replica.client.clone();
    for (user, socket, ttl_ms) in [("long", "s-long", 60_000), ("plain", "s-plain", 0)] {
        c.add_socket(pb::AddSocketRequest {
            socket: Some(sref("/", user, socket)),
            node_id: "node-1".into(),
            user_agent: None,
            ip: None,
            ttl_ms,
            max_user_sockets: 0,
        })
        .await
        .unwrap();
    }
    events
        .wait_for("plain offline", |_| {
            statuses(&events.presence_of("plain"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    let users = presence(&mut c, &["long"]).await;
    assert!(
        users[0].online,
        "its own TTL outlives the default: {users:#?}"
    );

    // Refreshed with a short TTL, it expires by that one.
    c.refresh(pb::RefreshRequest {
        sockets: vec![sref("/", "long", "s-long")],
        ttl_ms: 200,
    })
    .await
    .unwrap();
    events
        .wait_for("long offline", |_| {
            statuses(&events.presence_of("long"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;

    let bad = c
        .refresh(pb::RefreshRequest {
            sockets: vec![],
            ttl_ms: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    replica.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn throttle_delays_never_drops() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let replica = Replica::start(test_config(&prefix)).await;
    let mut c = replica.client.clone();

    // Connect, disconnect, reconnect quickly: the offline in between is throttled, then
    // cancelled by the reconnection; the final broadcast state is online.
    add(&mut c, "bob", "s1").await;
    remove(&mut c, "bob", "s1").await;
    add(&mut c, "bob", "s2").await;
    events
        .wait_for("bob online", |_| {
            statuses(&events.presence_of("bob"))
                .last()
                .is_some_and(|s| s == "online")
        })
        .await;
    // Whatever was pending is past its window now: nothing changes any more.
    tokio::time::sleep(Duration::from_millis(THROTTLE_MS * 3)).await;
    let bob = events.presence_of("bob");
    assert_eq!(
        statuses(&bob).last().map(String::as_str),
        Some("online"),
        "{bob:#?}"
    );
    assert_throttled(&bob);

    // A transition right after a broadcast falls inside the window: delivered after it.
    add(&mut c, "carol", "s1").await;
    remove(&mut c, "carol", "s1").await;
    let all = events
        .wait_for("carol offline", |_| {
            statuses(&events.presence_of("carol"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;
    let carol: Vec<Json> = all.into_iter().filter(|e| e["userId"] == "carol").collect();
    assert_eq!(statuses(&carol), ["online", "offline"]);
    assert_throttled(&carol);

    // Flapping many times ends in the real state, with events at least a window apart.
    for i in 0..10 {
        add(&mut c, "dave", &format!("s{i}")).await;
        remove(&mut c, "dave", &format!("s{i}")).await;
    }
    add(&mut c, "dave", "final").await;
    events
        .wait_for("dave online", |_| {
            statuses(&events.presence_of("dave"))
                .last()
                .is_some_and(|s| s == "online")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(THROTTLE_MS * 3)).await;
    let dave = events.presence_of("dave");
    assert_eq!(
        statuses(&dave).last().map(String::as_str),
        Some("online"),
        "{dave:#?}"
    );
    assert_throttled(&dave);

    replica.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn typing_changed_flags_and_automatic_stop() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let replica = Replica::start(test_config(&prefix)).await;
    let mut c = replica.client.clone();
    let typing = |room: &str, typing: bool, ttl_ms: i64| pb::TypingRequest {
        namespace: "/".into(),
        room_kind: "channel".into(),
        room_id: room.into(),
        user_id: "erin".into(),
        typing,
        ttl_ms,
    };

    let changed = |r: tonic::Response<pb::TypingResponse>| r.into_inner().changed;
    assert!(
        changed(c.typing(typing("r1", true, 0)).await.unwrap()),
        "start"
    );
    assert!(
        !changed(c.typing(typing("r1", true, 0)).await.unwrap()),
        "repeated start only extends"
    );
    assert!(
        changed(c.typing(typing("r1", false, 0)).await.unwrap()),
        "stop of a running one"
    );
    assert!(
        !changed(c.typing(typing("r1", false, 0)).await.unwrap()),
        "stop of nothing"
    );

    assert!(changed(c.typing(typing("r2", true, 300)).await.unwrap()));
    let all = events
        .wait_for("automatic stop", |_| !events.of_type("typing").is_empty())
        .await;
    let stop = all.iter().find(|e| e["type"] == "typing").unwrap();
    assert_eq!(stop["namespace"], "/");
    assert_eq!(stop["roomKind"], "channel");
    assert_eq!(stop["roomId"], "r2");
    assert_eq!(stop["userId"], "erin");
    assert_eq!(stop["typing"], false);
    assert!(stop["atMs"].as_i64().unwrap() > 0);
    // After an automatic stop, a new start is a change again.
    assert!(changed(c.typing(typing("r2", true, 60_000)).await.unwrap()));

    // The explicitly stopped r1 never produces an automatic stop.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(events.of_type("typing").len(), 1, "{:#?}", events.all());

    replica.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn get_presence_snapshot() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let replica = Replica::start(test_config(&prefix)).await;
    let mut c = replica.client.clone();

    for (socket, ua, ip) in [
        ("web", Some("Firefox"), Some("10.0.0.1")),
        ("cli", None, None),
    ] {
        c.add_socket(pb::AddSocketRequest {
            socket: Some(sref("/", "frank", socket)),
            node_id: "node-1".into(),
            user_agent: ua.map(Into::into),
            ip: ip.map(Into::into),
            ttl_ms: 0,
            max_user_sockets: 0,
        })
        .await
        .unwrap();
    }
    // Other namespaces are separate.
    c.add_socket(pb::AddSocketRequest {
        socket: Some(sref("/admin", "grace", "adm")),
        node_id: "node-1".into(),
        user_agent: None,
        ip: None,
        ttl_ms: 0,
        max_user_sockets: 0,
    })
    .await
    .unwrap();

    let users = presence(&mut c, &["frank", "grace", "nobody"]).await;
    assert_eq!(users.len(), 3);
    let frank = &users[0];
    assert_eq!(frank.user_id, "frank");
    assert!(frank.online);
    let mut sockets = frank.sockets.clone();
    sockets.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
    assert_eq!(sockets.len(), 2);
    assert_eq!(sockets[0].socket_id, "cli");
    assert_eq!(
        (sockets[0].user_agent.as_deref(), sockets[0].ip.as_deref()),
        (None, None)
    );
    assert_eq!(sockets[1].socket_id, "web");
    assert_eq!(sockets[1].user_agent.as_deref(), Some("Firefox"));
    assert_eq!(sockets[1].ip.as_deref(), Some("10.0.0.1"));
    for s in &sockets {
        assert!(s.connected_at_ms > 0 && s.last_seen_ms >= s.connected_at_ms);
    }
    let max_seen = sockets.iter().map(|s| s.last_seen_ms).max();
    assert_eq!(frank.last_seen_ms, max_seen);
    assert!(!users[1].online, "grace is online in /admin only");
    assert!(!users[2].online && users[2].sockets.is_empty() && users[2].last_seen_ms.is_none());
    assert!(presence(&mut c, &[]).await.is_empty());

    remove(&mut c, "frank", "web").await;
    remove(&mut c, "frank", "cli").await;
    let all = events
        .wait_for("frank offline", |_| {
            statuses(&events.presence_of("frank"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;
    let offline_at = all
        .iter()
        .rfind(|e| e["userId"] == "frank" && e["status"] == "offline")
        .and_then(|e| e["atMs"].as_i64());
    let frank = &presence(&mut c, &["frank"]).await[0];
    assert!(!frank.online && frank.sockets.is_empty());
    assert_eq!(
        frank.last_seen_ms, offline_at,
        "offline: the last broadcast time"
    );

    replica.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn invalid_requests_are_validation_errors() {
    let prefix = prefix();
    let replica = Replica::start(test_config(&prefix)).await;
    let mut c = replica.client.clone();
    let code = |s: tonic::Status| DomainError::from(s).code;

    let bad_add = |socket: Option<pb::SocketRef>, node: &str| pb::AddSocketRequest {
        socket,
        node_id: node.into(),
        user_agent: None,
        ip: None,
        ttl_ms: 0,
        max_user_sockets: 0,
    };
    for req in [
        bad_add(None, "n"),
        bad_add(Some(sref("/", "", "s")), "n"),
        bad_add(Some(sref("", "u", "s")), "n"),
        bad_add(Some(sref("/", "u", &"x".repeat(257))), "n"),
        bad_add(Some(sref("/", "u\x1fv", "s")), "n"),
        bad_add(Some(sref("/", "u", "s")), ""),
    ] {
        let status = c.add_socket(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(code(status), ErrorCode::Validation);
    }
    let status = c
        .remove_socket(pb::RemoveSocketRequest { socket: None })
        .await
        .unwrap_err();
    assert_eq!(code(status), ErrorCode::Validation);
    let status = c
        .refresh(pb::RefreshRequest {
            sockets: vec![sref("/", "u", "s"), sref("/", "u", "")],
            ttl_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(code(status), ErrorCode::Validation);
    let status = c
        .get_presence(pb::GetPresenceRequest {
            namespace: "/".into(),
            user_ids: vec!["".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(code(status), ErrorCode::Validation);
    let status = c
        .typing(pb::TypingRequest {
            namespace: "/".into(),
            room_kind: "channel".into(),
            room_id: "r".into(),
            user_id: "u".into(),
            typing: true,
            ttl_ms: -5,
        })
        .await
        .unwrap_err();
    assert_eq!(code(status), ErrorCode::Validation);
    // A 256-character id is fine.
    assert!(add(&mut c, &"u".repeat(256), "s").await);

    replica.shutdown().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn replicas_share_state_and_publish_once() {
    let prefix = prefix();
    let events = Events::subscribe(&prefix).await;
    let a = Replica::start(expiring_config(&prefix)).await;
    let b = Replica::start(expiring_config(&prefix)).await;
    let (mut ca, mut cb) = (a.client.clone(), b.client.clone());

    // Devices of one user connected through different replicas.
    assert!(add(&mut ca, "heidi", "s-a").await);
    assert!(!add(&mut cb, "heidi", "s-b").await);
    assert!(!remove(&mut cb, "heidi", "s-a").await);
    // Many users left to expire, swept concurrently by both replicas.
    for i in 0..20 {
        add(
            &mut if i % 2 == 0 { ca.clone() } else { cb.clone() },
            &format!("user{i}"),
            "s",
        )
        .await;
    }
    events
        .wait_for("all offline", |_| {
            (0..20).all(|i| {
                statuses(&events.presence_of(&format!("user{i}")))
                    .last()
                    .is_some_and(|s| s == "offline")
            })
        })
        .await;
    // heidi's remaining socket expired as well.
    events
        .wait_for("heidi offline", |_| {
            statuses(&events.presence_of("heidi"))
                .last()
                .is_some_and(|s| s == "offline")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(THROTTLE_MS * 2)).await;
    for i in 0..20 {
        assert_eq!(
            statuses(&events.presence_of(&format!("user{i}"))),
            ["online", "offline"]
        );
    }
    assert_eq!(
        statuses(&events.presence_of("heidi")),
        ["online", "offline"]
    );

    a.shutdown().await;
    b.shutdown().await;
    events.close().await;
    cleanup(&prefix).await;
}
