//! What a member may do in a room: the permission names of the membership service's role table
//! (which decides them) and of the gateway's authorization cache (which remembers them).

use std::{fmt, str::FromStr};

use anyhow::anyhow;

/// One thing a member may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Join,
    Send,
    Read,
    Typing,
    History,
    Moderate,
    Publish,
}

impl Permission {
    /// Every permission, in the order of the documentation.
    pub const ALL: [Permission; 7] = [
        Permission::Join,
        Permission::Send,
        Permission::Read,
        Permission::Typing,
        Permission::History,
        Permission::Moderate,
        Permission::Publish,
    ];

    /// The name used on the wire and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Join => "join",
            Permission::Send => "send",
            Permission::Read => "read",
            Permission::Typing => "typing",
            Permission::History => "history",
            Permission::Moderate => "moderate",
            Permission::Publish => "publish",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parsing is exact (lower case, no surrounding spaces): action names come from code, not people.
impl FromStr for Permission {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| anyhow!("unknown permission {s:?} (known: join, send, read, typing, history, moderate, publish)"))
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn all() -> Self {
        Self::of(&Permission::ALL)
    }

    pub fn of(perms: &[Permission]) -> Self {
        Permissions(perms.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// The set with `p` added.
    pub fn with(mut self, p: Permission) -> Self {
        self.insert(p);
        self
    }

    /// The set with `p` taken out.
    pub fn without(self, p: Permission) -> Self {
        Permissions(self.0 & !p.bit())
    }

    /// The permissions named (as [`Permission::as_str`] names them); other names are left out.
    pub fn named<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .filter_map(|name| name.parse().ok())
            .fold(Permissions::NONE, Permissions::with)
    }

    /// The permissions in either set.
    pub fn union(self, other: Permissions) -> Self {
        Permissions(self.0 | other.0)
    }

    /// The permissions in the set, in the order of [`Permission::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}
