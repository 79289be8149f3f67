//! The node's memory of recent membership answers: *allowed* authorization decisions, so a
//! chatty socket (typing, sending, marking read) costs one membership round trip (gRPC +
//! Postgres) per room and action, not one per event; and users' contacts, so a presence
//! transition does not cost every node a Postgres query (a connect storm made the membership
//! pool the bottleneck: see docs/benchmarks).
//!
//! Only "allowed" is remembered: a refusal is always asked again, so a grant takes effect at
//! once. What could turn an allowed decision into a refusal (a member revoked or re-granted
//! another role, a user's global role changed, a room re-parented) goes through the integration
//! API of some node, which forgets locally and publishes on `{prefix}authz:changed`; every node
//! forgets on receipt. Any such change may change anyone's contacts: all contacts are forgotten. Missed messages are covered twice: every node forgets everything when its
//! subscription comes back after a Redis outage, and entries expire after
//! `SWITCHBOARD_AUTHZ_CACHE_MS` (30 s by default; 0 turns the cache off). Expired entries are
//! dropped by [`AuthzCache::forget_expired`], which the node runs once per TTL, so the cache
//! holds the users active in the last TTL or two, not every user the node has seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_common::RoomKey;

use crate::core::Action;

/// Beyond this many users remembered, start again from empty (a bound, not an eviction policy:
/// a node serving more active users than this simply asks more often).
const MAX_USERS: usize = 200_000;

/// The payload of an invalidation that concerns every user (a room was re-parented).
pub const EVERYONE: &str = "*";

/// Per user, per room: until when each action is known to be allowed. Keyed room by room (not
/// by `(room, action)`) so that a lookup borrows the room instead of cloning it on every event.
type AllowedUntil = HashMap<String, HashMap<RoomKey, Vec<(Action, Instant)>>>;
/// Per user: their contacts, and until when that list may be used.
type ContactsUntil = HashMap<String, (Arc<Contacts>, Instant)>;

/// A user's contacts, packed: their ids end to end in one string, and where each ends.
///
/// Every node remembers the contacts of every user whose presence changed anywhere in the
/// cluster (it addresses its own sockets of those contacts), so a list is per-user memory on
/// each node: packed, it is one allocation for the ids instead of one each, with no spare
/// capacity (docs/benchmarks/README.md §26).
#[derive(Debug)]
pub struct Contacts {
    ids: Box<str>,
    ends: Box<[u32]>,
}

impl Contacts {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let id = &self.ids[start..end as usize];
            start = end as usize;
            id
        })
    }
}

impl FromIterator<String> for Contacts {
    fn from_iter<I: IntoIterator<Item = String>>(ids: I) -> Self {
        let mut packed = String::new();
        let mut ends = Vec::new();
        for id in ids {
            packed.push_str(&id);
            // Cut rather than wrapped past 4 GiB of ids (a gRPC answer is far smaller).
            let Ok(end) = u32::try_from(packed.len()) else {
                packed.truncate(ends.last().copied().unwrap_or(0) as usize);
                break;
            };
            ends.push(end);
        }
        Self {
            ids: packed.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

pub struct AuthzCache {
    ttl: Duration,
    allowed: Mutex<AllowedUntil>,
    contacts: Mutex<ContactsUntil>,
}

impl AuthzCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            allowed: Mutex::default(),
            contacts: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// True when `user` was allowed `action` in `room` less than the TTL ago.
    pub fn is_allowed(&self, user: &str, room: &RoomKey, action: Action) -> bool {
        if !self.enabled() {
            return false;
        }
        let allowed = self.allowed.lock().expect("authz cache lock");
        allowed
            .get(user)
            .and_then(|rooms| rooms.get(room))
            .and_then(|actions| actions.iter().find(|(a, _)| *a == action))
            .is_some_and(|(_, expires)| *expires > Instant::now())
    }

    pub fn remember_allowed(&self, user: &str, room: &RoomKey, action: Action) {
        if !self.enabled() {
            return;
        }
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        if allowed.len() >= MAX_USERS && !allowed.contains_key(user) {
            allowed.clear();
        }
        let expires = Instant::now() + self.ttl;
        let actions = allowed
            .entry(user.to_string())
            .or_default()
            .entry(room.clone())
            .or_default();
        match actions.iter_mut().find(|(a, _)| *a == action) {
            Some(known) => known.1 = expires,
            None => actions.push((action, expires)),
        }
    }

    pub fn contacts(&self, user: &str) -> Option<Arc<Contacts>> {
        let contacts = self.contacts.lock().expect("contacts cache lock");
        contacts
            .get(user)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(c, _)| c.clone())
    }

    pub fn remember_contacts(&self, user: &str, list: Arc<Contacts>) {
        if !self.enabled() {
            return;
        }
        let mut contacts = self.contacts.lock().expect("contacts cache lock");
        if contacts.len() >= MAX_USERS && !contacts.contains_key(user) {
            contacts.clear();
        }
        contacts.insert(user.to_string(), (list, Instant::now() + self.ttl));
    }

    /// Drops what has expired: decisions, rooms and users left without any, contact lists.
    pub fn forget_expired(&self) {
        let now = Instant::now();
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        allowed.retain(|_, rooms| {
            rooms.retain(|_, actions| {
                actions.retain(|(_, expires)| *expires > now);
                !actions.is_empty()
            });
            !rooms.is_empty()
        });
        drop(allowed);
        let mut contacts = self.contacts.lock().expect("contacts cache lock");
        contacts.retain(|_, (_, expires)| *expires > now);
    }

    /// How many users have decisions and contact lists remembered.
    #[cfg(test)]
    fn users_remembered(&self) -> (usize, usize) {
        let allowed = self.allowed.lock().expect("authz cache lock").len();
        (
            allowed,
            self.contacts.lock().expect("contacts cache lock").len(),
        )
    }

    /// Forgets one user's decisions, or everyone's for [`EVERYONE`]; and every contact list.
    pub fn forget(&self, user: &str) {
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        if user == EVERYONE {
            allowed.clear();
        } else {
            allowed.remove(user);
        }
        drop(allowed);
        self.contacts.lock().expect("contacts cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_allowed_per_room_and_action_until_forgotten() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        let chat = RoomKey::new("chat", "1");
        let other = RoomKey::new("chat", "2");
        assert!(!cache.is_allowed("u", &chat, Action::Send));
        cache.remember_allowed("u", &chat, Action::Send);
        assert!(cache.is_allowed("u", &chat, Action::Send));
        assert!(!cache.is_allowed("u", &chat, Action::Typing));
        assert!(!cache.is_allowed("u", &other, Action::Send));
        assert!(!cache.is_allowed("v", &chat, Action::Send));
        cache.forget("v");
        assert!(cache.is_allowed("u", &chat, Action::Send));
        cache.forget("u");
        assert!(!cache.is_allowed("u", &chat, Action::Send));
        cache.remember_allowed("u", &chat, Action::Send);
        cache.forget(EVERYONE);
        assert!(!cache.is_allowed("u", &chat, Action::Send));
    }

    #[test]
    fn a_packed_contact_list_gives_back_every_id_in_order() {
        let ids = ["a", "", "bc", "user-ü-1"].map(String::from);
        let packed = Contacts::from_iter(ids.clone());
        assert!(packed.iter().eq(ids.iter().map(String::as_str)));
        assert_eq!(Contacts::from_iter([]).iter().count(), 0);
    }

    #[test]
    fn contacts_are_forgotten_on_any_change() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        assert!(cache.contacts("u").is_none());
        cache.remember_contacts("u", Arc::new(Contacts::from_iter(["v".to_string()])));
        assert!(cache.contacts("u").unwrap().iter().eq(["v"]));
        cache.forget("someone-else");
        assert!(cache.contacts("u").is_none());
    }

    #[test]
    fn expires_and_can_be_turned_off() {
        let chat = RoomKey::new("chat", "1");
        let off = AuthzCache::new(Duration::ZERO);
        off.remember_allowed("u", &chat, Action::Send);
        assert!(!off.is_allowed("u", &chat, Action::Send));
        let short = AuthzCache::new(Duration::from_millis(1));
        short.remember_allowed("u", &chat, Action::Send);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.is_allowed("u", &chat, Action::Send));
    }

    #[test]
    fn expired_entries_are_dropped_and_live_ones_kept() {
        let chat = RoomKey::new("chat", "1");
        let short = AuthzCache::new(Duration::from_millis(1));
        short.remember_allowed("gone", &chat, Action::Send);
        short.remember_contacts("gone", Arc::new(Contacts::from_iter(["v".to_string()])));
        std::thread::sleep(Duration::from_millis(5));
        short.forget_expired();
        assert_eq!(short.users_remembered(), (0, 0));

        let long = AuthzCache::new(Duration::from_secs(30));
        long.remember_allowed("u", &chat, Action::Send);
        long.remember_contacts("u", Arc::new(Contacts::from_iter(["v".to_string()])));
        long.forget_expired();
        assert_eq!(long.users_remembered(), (1, 1));
        assert!(long.is_allowed("u", &chat, Action::Send));
    }
}
