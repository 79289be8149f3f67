//! The node's memory of recent membership answers: *allowed* authorization decisions, so a
//! chatty socket (typing, sending, marking read) costs one membership round trip (gRPC +
//! Postgres) per room and action, not one per event; and users' contacts, so a presence
//! transition does not cost every node a Postgres query (a connect storm made the membership
//! pool the bottleneck: see docs/benchmarks).
//!
//! One answer is remembered for every action it allows: the membership service answers with
//! everything the user's roles grant in the room, so a join's check also covers the user's
//! first send, typing and read there.
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
//!
//! A remembered answer is asked again in the background, off the event's path, when it is used
//! after its refresh point ([`Cached::Refresh`]). Without that, every answer the node took at
//! about the same time (the joins after a restart, a benchmark's first sends) ran out together,
//! and the events of the next moment all waited for the membership service at once
//! (docs/benchmarks §32). The refresh point of an answer asked on an event's path is random
//! between 50 % and 95 % of the TTL, which spreads answers taken together over nearly half a
//! TTL; a refreshed answer's is between 85 % and 95 %, which keeps them spread while asking
//! little more often than the TTL would. A user idle past the TTL is asked on their next event,
//! as before.

use std::collections::HashMap;
use std::hash::{Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_common::{Permission, Permissions, RoomKey};

/// Beyond this many (user, room) decisions remembered, start again from empty (a bound, not an
/// eviction policy: a node serving more active users than this simply asks more often).
const MAX_GRANTS: usize = 400_000;

/// Beyond this many users' contact lists, or users marked forgotten, remembered: start again
/// from empty.
const MAX_USERS: usize = 200_000;

/// The payload of an invalidation that concerns every user (a room was re-parented).
pub const EVERYONE: &str = "*";

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

/// A borrowed (user, room): what [`AuthzCache::lookup`] looks up.
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

/// When the membership service was asked, in microseconds since the cache's epoch: taken before
/// the call, so that a change published while it was under way voids its answer.
#[derive(Debug, Clone, Copy)]
pub struct Asked(u64);

/// One answer for a (user, room): what it allowed, and when it was asked.
#[derive(Debug)]
struct Grant {
    asked: u64,
    allowed: Permissions,
    /// From when a use asks again in the background; [`REFRESHING`] once one has.
    refresh_from: u64,
}

/// A grant whose refresh is under way (or failed: the grant then lives out its TTL).
const REFRESHING: u64 = u64::MAX;

/// What the cache knows of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// Nothing live: ask the membership service.
    Unknown,
    Allowed,
    /// Allowed, and the answer is old enough to be asked again in the background (this caller
    /// is the one to do it).
    Refresh,
}

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

    /// Now, for an answer about to be asked for.
    pub fn asked(&self) -> Asked {
        Asked(self.now_us())
    }

    /// Whether `user` was allowed `action` in `room` less than the TTL ago, and after any
    /// change that made the node forget the user's decisions; the first use of an answer past
    /// its refresh point is told to refresh it.
    pub fn lookup(&self, user: &str, room: &RoomKey, action: Permission) -> Cached {
        if !self.enabled() {
            return Cached::Unknown;
        }
        let now = self.now_us();
        let ttl = self.ttl_us();
        let mut allowed = self.allowed.lock().expect("authz cache lock");
        let Grants { by_key, forgotten } = &mut *allowed;
        let Some(grant) = by_key
            .get_mut(&GrantLookup::new(user, room))
            .filter(|grant| grant.allowed.contains(action))
        else {
            return Cached::Unknown;
        };
        // An empty map answers without hashing: the common case costs nothing more.
        let voided = forgotten
            .get(user)
            .is_some_and(|&forgotten| grant.asked <= forgotten);
        if voided || now >= grant.asked.saturating_add(ttl) {
            Cached::Unknown
        } else if now >= grant.refresh_from {
            grant.refresh_from = REFRESHING;
            Cached::Refresh
        } else {
            Cached::Allowed
        }
    }

    /// Remembers what an answer asked at `asked` (on an event's path) allowed `user` in `room`
    /// (nothing: forgets the room's earlier answer), unless a later answer is remembered
    /// already.
    pub fn remember(&self, user: &str, room: &RoomKey, asked: Asked, allowed: Permissions) {
        self.remember_due_from(user, room, asked, allowed, 50);
    }

    /// [`AuthzCache::remember`] for an answer asked by a refresh.
    pub fn remember_refreshed(
        &self,
        user: &str,
        room: &RoomKey,
        asked: Asked,
        allowed: Permissions,
    ) {
        self.remember_due_from(user, room, asked, allowed, 85);
    }

    /// Remembers an answer whose refresh point is random between `earliest_percent` % and 95 %
    /// of the TTL.
    fn remember_due_from(
        &self,
        user: &str,
        room: &RoomKey,
        asked: Asked,
        allowed: Permissions,
        earliest_percent: u64,
    ) {
        if !self.enabled() {
            return;
        }
        let ttl = self.ttl_us();
        let refresh_from = asked.0.saturating_add(rand::random_range(
            ttl / 100 * earliest_percent..=ttl / 100 * 95,
        ));
        let grant = Grant {
            asked: asked.0,
            allowed,
            refresh_from,
        };
        let mut grants = self.allowed.lock().expect("authz cache lock");
        let lookup = GrantLookup::new(user, room);
        if grants
            .by_key
            .get(&lookup)
            .is_some_and(|known| known.asked > asked.0)
        {
            return;
        }
        if allowed == Permissions::NONE {
            grants.by_key.remove(&lookup);
            return;
        }
        if let Some(known) = grants.by_key.get_mut(&lookup) {
            *known = grant;
            return;
        }
        // Ids this long are refused before any decision is asked for: nothing to remember.
        let Some(key) = GrantKey::new(user, room) else {
            return;
        };
        if grants.by_key.len() >= MAX_GRANTS {
            grants.clear();
        }
        grants.by_key.insert(key, grant);
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
            .retain(|_, grant| grant.asked > oldest_live && grant.allowed != Permissions::NONE);
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

    /// Remembers `action` (alone) as allowed, asked now.
    fn allow(cache: &AuthzCache, user: &str, room: &RoomKey, action: Permission) {
        cache.remember(user, room, cache.asked(), Permissions::of(&[action]));
    }

    fn allowed(cache: &AuthzCache, user: &str, room: &RoomKey, action: Permission) -> bool {
        cache.lookup(user, room, action) != Cached::Unknown
    }

    /// A cache started a minute ago, so that answers can be asked in its past.
    fn started_a_minute_ago(ttl: Duration) -> AuthzCache {
        AuthzCache {
            epoch: Instant::now() - Duration::from_secs(60),
            ..AuthzCache::new(ttl)
        }
    }

    /// `ago` before now, on `cache`'s clock.
    fn asked_ago(cache: &AuthzCache, ago: Duration) -> Asked {
        Asked(cache.asked().0 - ago.as_micros() as u64)
    }

    #[test]
    fn one_answer_covers_every_action_it_allows() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        let chat = RoomKey::new("chat", "1");
        let granted = Permissions::named(["join", "send", "publish", "no-such-permission"]);
        cache.remember("u", &chat, cache.asked(), granted);
        assert!(allowed(&cache, "u", &chat, Permission::Join));
        assert!(allowed(&cache, "u", &chat, Permission::Send));
        assert!(!allowed(&cache, "u", &chat, Permission::Typing));
        // A later answer replaces it whole; one that grants nothing forgets the room.
        cache.remember(
            "u",
            &chat,
            cache.asked(),
            Permissions::of(&[Permission::Typing]),
        );
        assert!(!allowed(&cache, "u", &chat, Permission::Send));
        assert!(allowed(&cache, "u", &chat, Permission::Typing));
        cache.remember("u", &chat, cache.asked(), Permissions::NONE);
        assert!(!allowed(&cache, "u", &chat, Permission::Typing));
        assert!(cache.allowed.lock().unwrap().by_key.is_empty());
    }

    #[test]
    fn an_answer_is_refreshed_once_when_used_past_its_refresh_point() {
        let cache = started_a_minute_ago(Duration::from_secs(30));
        let chat = RoomKey::new("chat", "1");
        // Asked 10 s ago: before any refresh point (15-28.5 s).
        let recent = asked_ago(&cache, Duration::from_secs(10));
        cache.remember("u", &chat, recent, Permissions::of(&[Permission::Send]));
        assert_eq!(cache.lookup("u", &chat, Permission::Send), Cached::Allowed);
        // Asked 29 s ago: past every refresh point, before the TTL.
        let old = asked_ago(&cache, Duration::from_secs(29));
        cache.remember("v", &chat, old, Permissions::of(&[Permission::Send]));
        assert_eq!(cache.lookup("v", &chat, Permission::Send), Cached::Refresh);
        // One caller refreshes; the others go on using the answer meanwhile.
        assert_eq!(cache.lookup("v", &chat, Permission::Send), Cached::Allowed);
        // Its new answer is used without a refresh, and an answer older than the one
        // remembered (a slow call) does not replace it.
        cache.remember_refreshed(
            "v",
            &chat,
            cache.asked(),
            Permissions::of(&[Permission::Send]),
        );
        cache.remember("v", &chat, old, Permissions::NONE);
        assert_eq!(cache.lookup("v", &chat, Permission::Send), Cached::Allowed);
        // Answers asked together on events' paths get refresh points spread from 50 % of the
        // TTL: 22 s later, some are due and some are not (50 users: all on one side would take
        // odds of about 10^-14). A refreshed answer is refreshed again from 85 % (25.5 s).
        let (together, refreshed) = (
            asked_ago(&cache, Duration::from_secs(22)),
            asked_ago(&cache, Duration::from_secs(25)),
        );
        let mut due = 0;
        for i in 0..50 {
            let (user, again) = (format!("t{i}"), format!("r{i}"));
            cache.remember(&user, &chat, together, Permissions::of(&[Permission::Send]));
            due += usize::from(cache.lookup(&user, &chat, Permission::Send) == Cached::Refresh);
            cache.remember_refreshed(
                &again,
                &chat,
                refreshed,
                Permissions::of(&[Permission::Send]),
            );
            assert_eq!(
                cache.lookup(&again, &chat, Permission::Send),
                Cached::Allowed
            );
        }
        assert!(0 < due && due < 50, "{due} of 50 due");
        // Past the TTL an answer is not used, refreshed or not.
        let expired = asked_ago(&cache, Duration::from_secs(31));
        cache.remember("w", &chat, expired, Permissions::of(&[Permission::Send]));
        assert_eq!(cache.lookup("w", &chat, Permission::Send), Cached::Unknown);
    }

    #[test]
    fn an_answer_asked_before_a_change_is_void() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        let chat = RoomKey::new("chat", "1");
        let asked = cache.asked();
        std::thread::sleep(Duration::from_millis(1));
        // The change is published while the call is under way.
        cache.forget("u");
        cache.remember("u", &chat, asked, Permissions::of(&[Permission::Send]));
        assert!(!allowed(&cache, "u", &chat, Permission::Send));
    }

    #[test]
    fn remembers_allowed_per_room_and_action_until_forgotten() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        let chat = RoomKey::new("chat", "1");
        let other = RoomKey::new("chat", "2");
        assert!(!allowed(&cache, "u", &chat, Permission::Send));
        allow(&cache, "u", &chat, Permission::Send);
        assert!(allowed(&cache, "u", &chat, Permission::Send));
        assert!(!allowed(&cache, "u", &chat, Permission::Typing));
        assert!(!allowed(&cache, "u", &other, Permission::Send));
        assert!(!allowed(&cache, "v", &chat, Permission::Send));
        cache.forget("v");
        assert!(allowed(&cache, "u", &chat, Permission::Send));
        cache.forget("u");
        assert!(!allowed(&cache, "u", &chat, Permission::Send));
        // The same characters end to end, split differently, are another user's other room.
        allow(&cache, "ab", &RoomKey::new("chat", "c"), Permission::Send);
        assert!(!allowed(
            &cache,
            "a",
            &RoomKey::new("bchat", "c"),
            Permission::Send
        ));
        assert!(!allowed(
            &cache,
            "abchat",
            &RoomKey::new("", "c"),
            Permission::Send
        ));
        allow(&cache, "u", &chat, Permission::Send);
        cache.forget(EVERYONE);
        assert!(!allowed(&cache, "u", &chat, Permission::Send));
    }

    #[test]
    fn forgetting_a_user_voids_only_their_decisions_made_until_then() {
        let cache = AuthzCache::new(Duration::from_secs(30));
        let (chat, other) = (RoomKey::new("chat", "1"), RoomKey::new("chat", "2"));
        allow(&cache, "u", &chat, Permission::Send);
        allow(&cache, "u", &other, Permission::Typing);
        allow(&cache, "v", &chat, Permission::Send);
        cache.forget("u");
        assert!(!allowed(&cache, "u", &chat, Permission::Send));
        assert!(!allowed(&cache, "u", &other, Permission::Typing));
        assert!(allowed(&cache, "v", &chat, Permission::Send));
        // A decision asked after the change counts (a later microsecond than the mark).
        std::thread::sleep(Duration::from_millis(1));
        allow(&cache, "u", &chat, Permission::Send);
        assert!(allowed(&cache, "u", &chat, Permission::Send));
        assert!(!allowed(&cache, "u", &other, Permission::Typing));
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
        allow(&off, "u", &chat, Permission::Send);
        assert!(!allowed(&off, "u", &chat, Permission::Send));
        let short = AuthzCache::new(Duration::from_millis(1));
        allow(&short, "u", &chat, Permission::Send);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!allowed(&short, "u", &chat, Permission::Send));
    }

    #[test]
    fn expired_entries_are_dropped_and_live_ones_kept() {
        let chat = RoomKey::new("chat", "1");
        let short = AuthzCache::new(Duration::from_millis(1));
        allow(&short, "gone", &chat, Permission::Send);
        short.remember_contacts("gone", Contacts::from_iter(["v".to_string()]));
        std::thread::sleep(Duration::from_millis(5));
        short.forget_expired();
        assert_eq!(short.users_remembered(), (0, 0));

        let long = AuthzCache::new(Duration::from_secs(30));
        allow(&long, "u", &chat, Permission::Send);
        long.remember_contacts("u", Contacts::from_iter(["v".to_string()]));
        long.forget_expired();
        assert_eq!(long.users_remembered(), (1, 1));
        assert!(allowed(&long, "u", &chat, Permission::Send));
    }
}
