//! This node's handshakes between "presence recorded" and "socket in its namespace".
//!
//! A handshake records the socket's presence in its connect middleware (the per-user cap must be
//! able to refuse the connection), but socketioxide adds the socket to its namespace only once
//! the middleware has returned. Recording presence can announce the user online, and every node
//! renders that announcement to its own sockets, this one included: rendered before the socket
//! is in its namespace, the announcement misses the very socket that caused it (seen in the app
//! contract's "a user coming online" test, under load). So a node renders a user's presence
//! transition only once that user's handshakes on this node have finished.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::{sync::Notify, time::Instant};

/// A handshake older than this no longer holds anything back: its socket failed to enter its
/// namespace without telling (the CONNECT packet could not be sent), or the node is overloaded
/// and a late presence update beats none.
const LONGEST_HANDSHAKE: Duration = Duration::from_secs(2);

/// A namespace and a user.
type UserKey = (String, String);

/// The handshakes in flight on this node, by namespace and user: socket id, start.
#[derive(Default)]
pub(crate) struct Handshakes {
    in_flight: Mutex<HashMap<UserKey, Vec<(String, Instant)>>>,
    finished: Notify,
}

impl Handshakes {
    /// Socket `sid` of `user` is about to record its presence in `namespace`.
    pub(crate) fn begin(&self, namespace: &str, user: &str, sid: &str) {
        let now = Instant::now();
        let mut in_flight = self.in_flight.lock().expect("handshakes");
        in_flight.retain(|_, v| {
            v.retain(|(_, since)| now.duration_since(*since) < LONGEST_HANDSHAKE);
            !v.is_empty()
        });
        in_flight
            .entry((namespace.to_string(), user.to_string()))
            .or_default()
            .push((sid.to_string(), now));
    }

    /// Socket `sid` is in its namespace (or was refused): broadcasts reach it from now on.
    pub(crate) fn end(&self, namespace: &str, user: &str, sid: &str) {
        let key = (namespace.to_string(), user.to_string());
        let mut in_flight = self.in_flight.lock().expect("handshakes");
        if let Some(v) = in_flight.get_mut(&key) {
            v.retain(|(s, _)| s != sid);
            if v.is_empty() {
                in_flight.remove(&key);
            }
        }
        drop(in_flight);
        self.finished.notify_waiters();
    }

    /// Waits until no handshake of `user` in `namespace` is in flight (or the youngest one is
    /// [`LONGEST_HANDSHAKE`] old).
    pub(crate) async fn settled(&self, namespace: &str, user: &str) {
        let key = (namespace.to_string(), user.to_string());
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            // Registered before looking, so an `end` between the look and the wait is not missed.
            finished.as_mut().enable();
            let youngest = {
                let in_flight = self.in_flight.lock().expect("handshakes");
                in_flight
                    .get(&key)
                    .and_then(|v| v.iter().map(|(_, since)| *since).max())
            };
            let Some(youngest) = youngest else { return };
            let deadline = youngest + LONGEST_HANDSHAKE;
            if Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, finished).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settled_waits_for_the_users_handshakes_only() {
        let h = std::sync::Arc::new(Handshakes::default());
        h.begin("/app", "alice", "s1");
        h.begin("/app", "alice", "s2");
        // Another user's, or another namespace's, handshake holds nothing back.
        tokio::time::timeout(Duration::from_millis(100), h.settled("/app", "bob"))
            .await
            .expect("bob has no handshake");
        tokio::time::timeout(Duration::from_millis(100), h.settled("/chat", "alice"))
            .await
            .expect("alice has none in /chat");

        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.settled("/app", "alice").await }
        });
        h.end("/app", "alice", "s1");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "s2 is still in flight");
        h.end("/app", "alice", "s2");
        tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("settled once both ended")
            .unwrap();
    }

    #[tokio::test]
    async fn a_handshake_that_never_ends_holds_back_for_a_bounded_time() {
        let h = Handshakes::default();
        h.begin("/app", "alice", "s1");
        let started = Instant::now();
        h.settled("/app", "alice").await;
        assert!(started.elapsed() >= LONGEST_HANDSHAKE - Duration::from_millis(10));
    }
}
