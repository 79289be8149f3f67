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
//! forgets on receipt. Any such change may change anyone's contacts: all contacts are
//! forgotten. Missed messages are covered twice: every node forgets everything when its
//! subscription comes back after a Redis outage, and entries expire after
//! `SWITCHBOARD_AUTHZ_CACHE_MS` (30 s by default; 0 turns the cache off). Expired entries are
//! dropped by [`AuthzCache::forget_expired`], which the node runs once per TTL, so the cache
//! holds the users active in the last TTL or two, not every user the node has seen.

use std::collections::HashMap;
use std::hash::{Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_common::RoomKey;

use crate::core::Action;

/// Beyond this many (user, room) decisions remembered, start again from empty (a bound, not an
/// eviction policy: a node serving more active users than this simply asks more often).
const MAX_GRANTS: usize = 400_000;

/// Beyond this many users' contact lists, or users marked forgotten, remembered: start again
/// from empty.
const MAX_USERS: usize = 200_000;

/// The payload of an invalidation that concerns every user (a room was re-parented).
pub const EVERYONE: &str = "*";

/// How many [`Action`]s there are: one slot each in a [`Grant`].
const ACTIONS: usize = Action::Moderate as usize + 1;

/// One user's decisions in one room, keyed by the user and the room packed in one string (one
/// allocation per entry where nested maps took five: docs/benchmarks/README.md §27).
///
/// It hashes and compares part by part, as [`GrantLookup`] does, so that a lookup borrows the
/// user and the room instead of packing them on every event.
#[derive(Debug, PartialEq, Eq)]
struct GrantKey {
    /// The user's id, the room's kind and the room's id, end to end.
    packed: Box<str>,
    user_end: u32,
    kind_end: u32,
}

impl GrantKey {
    fn new(user: &str, room: &RoomKey) -> Option<Self> {
        let user_end = u32::try_from(user.len()).ok()?;
        let kind_end = u32::try_from(user.len() + room.kind.len()).ok()?;
        let packed = [user, &room.kind, &room.id].concat().into_boxed_str();
        Some(Self {
            packed,
            user_end,
            kind_end,
        })
    }

    fn parts(&self) -> (&str, &str, &str) {
        let (user_end, kind_end) = (self.user_end as usize, self.kind_end as usize);
        (
            &self.packed[..user_end],
            &self.packed[user_end..kind_end],
            &self.packed[kind_end..],
        )
    }
}

impl Hash for GrantKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (user, kind, id) = self.parts();
        (user, kind, id).hash(state);
    }
}

/// A borrowed (user, room): what [`AuthzCache::is_allowed`] looks up.
#[derive(Hash)]
struct GrantLookup<'a>(&'a str, &'a str, &'a str);

impl<'a> GrantLookup<'a> {
    fn new(user: &'a str, room: &'a RoomKey) -> Self {
        Self(user, &room.kind, &room.id)
    }
}

impl hashbrown::Equivalent<GrantKey> for GrantLookup<'_> {
    fn equivalent(&self, key: &GrantKey) -> bool {
        key.parts() == (self.0, self.1, self.2)
    }
}

/// When each action was last found allowed, in microseconds since the cache's epoch (0:
/// never).
type Grant = [u64; ACTIONS];

/// The remembered decisions, and the users whose earlier decisions no longer count.
///
/// Forgetting one user marks the user instead of finding their entries: the map is keyed by
/// (user, room), so finding them would be a pass over every entry under the lock every event
/// takes (milliseconds at the bound: docs/benchmarks/README.md §27). A decision counts when it
/// is younger than the TTL and younger than the user's mark; marks older than the TTL void
/// nothing and are dropped.
struct Grants {
    by_key: hashbrown::HashMap<GrantKey, Grant, RandomState>,
    forgotten: HashMap<Box<str>, u64>,
}

impl Grants {
    fn clear(&mut self) {
        self.by_key.clear();
        self.forgotten.clear();
    }
}

/// Per user: their contacts, and until when that list may be used.
type ContactsUntil = HashMap<Box<str>, (Contacts, Instant)>;

/// A user's contacts, packed: their ids in one shared string, each followed by a NUL.
///
/// Every node remembers the contacts of every user whose presence changed anywhere in the
/// cluster (it addresses its own sockets of those contacts), so a list is per-user memory on
/// each node: packed, it is one allocation (docs/benchmarks/README.md §26, §27). An id never
/// holds a NUL: ids are checked when created (`check_id`), and Postgres text cannot store one.
#[derive(Debug, Clone)]
pub struct Contacts(Arc<str>);

impl Contacts {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split_terminator('\0')
    }
}

impl FromIterator<String> for Contacts {
    fn from_iter<I: IntoIterator<Item = String>>(ids: I) -> Self {
        let mut packed = String::new();
        // An empty id or one holding a NUL cannot be a user's (see above) and would not read
        // back as itself: left out.
        for id in ids
            .into_iter()
            .filter(|id| !id.is_empty() && !id.contains('\0'))
        {
            packed.push_str(&id);
            packed.push('\0');
        }
        Self(packed.into())
    }
}

pub struct AuthzCache {
    ttl: Duration,
    /// What `Grant`s and marks count their microseconds from.
    epoch: Instant,
    allowed: Mutex<Grants>,
    contacts: Mutex<ContactsUntil>,
}

impl AuthzCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            epoch: Instant::now(),
            allowed: Mutex::new(Grants {
                by_key: hashbrown::HashMap::with_hasher(RandomState::new()),
                forgotten: HashMap::new(),
            }),
            contacts: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Microseconds since the cache's epoch, from 1 (0 is "never" in a `Grant`).
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn ttl_us(&self) -> u64 {
        u64::try_from(self.ttl.as_micros()).unwrap_or(u64::MAX)
    }

    /// True when `user` was allowed `action` in `room` less than the TTL ago, and after any
    /// change that made the node forget the user's decisions.
    pub fn is_allowed(&self, user: &str, room: &RoomKey, action: Action) -> bool {
        if !self.enabled() {
            return false;
        }
        let allowed = self.allowed.lock().expect("authz cache lock");
        let Some(decided) = allowed
            .by_key
            .get(&GrantLookup::new(user, room))
            .map(|grant| grant[action as usize])
            .filter(|&decided| decided != 0)
        else {
            return false;
        };
        // An empty map answers without hashing: the common case costs nothing more.
        let voided = allowed
            .forgotten
            .get(user)
            .is_some_and(|&forgotten| decided <= forgotten);
        !voided && self.now_us() < decided.saturating_add(self.ttl_us())
    }

    pub fn remember_allowed(&self, user: &str, room: &RoomKey, action: Action) {
        if !self.enabled() {
            return;
        }
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        // Taken under the lock, so never before a mark set before it. The same microsecond
        // counts as before the mark: at worst, one more membership call.
        let now = self.now_us();
        if let Some(grant) = allowed.by_key.get_mut(&GrantLookup::new(user, room)) {
            grant[action as usize] = now;
            return;
        }
        // Ids this long are refused before any decision is asked for: nothing to remember.
        let Some(key) = GrantKey::new(user, room) else {
            return;
        };
        if allowed.by_key.len() >= MAX_GRANTS {
            allowed.clear();
        }
        let mut grant = [0; ACTIONS];
        grant[action as usize] = now;
        allowed.by_key.insert(key, grant);
    }

    pub fn contacts(&self, user: &str) -> Option<Contacts> {
        let contacts = self.contacts.lock().expect("contacts cache lock");
        contacts
            .get(user)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(c, _)| c.clone())
    }

    pub fn remember_contacts(&self, user: &str, list: Contacts) {
        if !self.enabled() {
            return;
        }
        let mut contacts = self.contacts.lock().expect("contacts cache lock");
        if contacts.len() >= MAX_USERS && !contacts.contains_key(user) {
            contacts.clear();
        }
        contacts.insert(user.into(), (list, Instant::now() + self.ttl));
    }

    /// Drops what has expired: (user, room) entries without a live decision, marks older than
    /// the TTL, contact lists.
    pub fn forget_expired(&self) {
        let oldest_live = self.now_us().saturating_sub(self.ttl_us());
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        allowed
            .by_key
            .retain(|_, grant| grant.iter().any(|&decided| decided > oldest_live));
        allowed
            .forgotten
            .retain(|_, forgotten| *forgotten > oldest_live);
        drop(allowed);
        let now = Instant::now();
        let mut contacts = self.contacts.lock().expect("contacts cache lock");
        contacts.retain(|_, (_, expires)| *expires > now);
    }

    /// How many users have decisions and contact lists remembered.
    #[cfg(test)]
    fn users_remembered(&self) -> (usize, usize) {
        let allowed = self.allowed.lock().expect("authz cache lock");
        let users: std::collections::HashSet<&str> =
            allowed.by_key.keys().map(|key| key.parts().0).collect();
        (
            users.len(),
            self.contacts.lock().expect("contacts cache lock").len(),
        )
    }

    /// Forgets one user's decisions, or everyone's for [`EVERYONE`]; and every contact list.
    pub fn forget(&self, user: &str) {
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        if user == EVERYONE {
            allowed.clear();
        } else {
            if allowed.forgotten.len() >= MAX_USERS && !allowed.forgotten.contains_key(user) {
                allowed.clear();
            }
            let now = self.now_us();
            allowed.forgotten.insert(user.into(), now);
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
        // The same characters end to end, split differently, are another user's other room.
        cache.remember_allowed("ab", &RoomKey::new("chat", "c"), Action::Send);
        assert!(!cache.is_allowed("a", &RoomKey::new("bchat", "c"), Action::Send));
        assert!(!cache.is_allowed("abchat", &RoomKey::new("", "c"), Action::Send));
        cache.remember_allowed("u", &chat, Action::Send);
        cache.forget(EVERYONE);
        assert!(!cache.is_allowed("u", &chat, Action::Send));
    }

    #[test]
    fn forgetting_a_user_voids_only_their_decisions_made_until_then() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        let (chat, other) = (RoomKey::new("chat", "1"), RoomKey::new("chat", "2"));
        cache.remember_allowed("u", &chat, Action::Send);
        cache.remember_allowed("u", &other, Action::Typing);
        cache.remember_allowed("v", &chat, Action::Send);
        cache.forget("u");
        assert!(!cache.is_allowed("u", &chat, Action::Send));
        assert!(!cache.is_allowed("u", &other, Action::Typing));
        assert!(cache.is_allowed("v", &chat, Action::Send));
        // A decision asked after the change counts (a later microsecond than the mark).
        std::thread::sleep(Duration::from_millis(1));
        cache.remember_allowed("u", &chat, Action::Send);
        assert!(cache.is_allowed("u", &chat, Action::Send));
        assert!(!cache.is_allowed("u", &other, Action::Typing));
        // Marks older than the TTL are dropped with what they voided.
        let short = AuthzCache::new(Duration::from_millis(1));
        short.forget("u");
        std::thread::sleep(Duration::from_millis(5));
        short.forget_expired();
        assert!(short.allowed.lock().unwrap().forgotten.is_empty());
    }

    #[test]
    fn a_packed_contact_list_gives_back_every_id_in_order() {
        let ids = ["a", "bc", "user-ü-1"].map(String::from);
        let packed = Contacts::from_iter(ids.clone());
        assert!(packed.iter().eq(ids.iter().map(String::as_str)));
        assert_eq!(Contacts::from_iter([]).iter().count(), 0);
        let impossible = ["", "a\0b", "c"].map(String::from);
        assert!(Contacts::from_iter(impossible).iter().eq(["c"]));
    }

    #[test]
    fn contacts_are_forgotten_on_any_change() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        assert!(cache.contacts("u").is_none());
        cache.remember_contacts("u", Contacts::from_iter(["v".to_string()]));
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
        short.remember_contacts("gone", Contacts::from_iter(["v".to_string()]));
        std::thread::sleep(Duration::from_millis(5));
        short.forget_expired();
        assert_eq!(short.users_remembered(), (0, 0));

        let long = AuthzCache::new(Duration::from_secs(30));
        long.remember_allowed("u", &chat, Action::Send);
        long.remember_contacts("u", Contacts::from_iter(["v".to_string()]));
        long.forget_expired();
        assert_eq!(long.users_remembered(), (1, 1));
        assert!(long.is_allowed("u", &chat, Action::Send));
    }
}
