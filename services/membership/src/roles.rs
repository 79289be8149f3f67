//! The role → permission table behind every RBAC decision.
//!
//! Roles are free-form strings stored on memberships (the application chooses them); this table
//! says what each one may do. A role the table does not name grants nothing, so granting an
//! unknown role is allowed but useless until the table learns it.
//!
//! The table comes from `SWITCHBOARD_ROLE_PERMISSIONS` (format `role=perm,perm;role=perm`),
//! which *replaces* the default table entirely; it is validated at start-up.

use std::{collections::HashMap, str::FromStr};

use anyhow::{anyhow, bail};
pub use switchboard_common::{Permission, Permissions};

/// The longest role name accepted, in the table and on memberships.
pub const MAX_ROLE_LEN: usize = 64;

/// Role name → permissions. Role names are matched exactly (case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleTable {
    roles: HashMap<String, Permissions>,
}

impl RoleTable {
    /// The permissions of `role`; nothing for a role the table does not name.
    pub fn permissions(&self, role: &str) -> Permissions {
        self.roles.get(role).copied().unwrap_or(Permissions::NONE)
    }

    /// Does `role` grant `action`?
    pub fn grants(&self, role: &str, action: Permission) -> bool {
        self.permissions(role).contains(action)
    }

    /// The roles the table names, sorted (for logs).
    pub fn role_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.roles.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// owner, manager: everything; member, researcher: join, send, read, typing, history;
/// contributor: those plus publish; viewer: join, read, history.
impl Default for RoleTable {
    fn default() -> Self {
        use Permission::*;
        let member = Permissions::of(&[Join, Send, Read, Typing, History]);
        let roles = [
            ("owner", Permissions::all()),
            ("manager", Permissions::all()),
            ("member", member),
            ("researcher", member),
            (
                "contributor",
                Permissions::of(&[Join, Send, Read, Typing, History, Publish]),
            ),
            ("viewer", Permissions::of(&[Join, Read, History])),
        ];
        RoleTable {
            roles: roles.into_iter().map(|(r, p)| (r.to_string(), p)).collect(),
        }
    }
}

/// Parses `role=perm,perm;role=perm`.
///
/// - Spaces around roles, permissions and separators are ignored; empty entries (`a=x;;` or a
///   trailing `;`) are skipped.
/// - `role=` (no permissions) declares a role that grants nothing.
/// - An entry without `=`, an empty role name, a role longer than 64 characters, a role named
///   twice, or an unknown permission name is an error. A permission repeated within a role is
///   harmless.
/// - A string with no entries at all is an error (an empty table would refuse everything, which
///   is never what an operator means).
impl FromStr for RoleTable {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut roles = HashMap::new();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((role, perms)) = entry.split_once('=') else {
                bail!("role entry {entry:?} has no '=' (expected role=perm,perm)");
            };
            let role = role.trim();
            if role.is_empty() {
                bail!("role entry {entry:?} has an empty role name");
            }
            if role.chars().count() > MAX_ROLE_LEN {
                bail!("role {role:?} is longer than {MAX_ROLE_LEN} characters");
            }
            let mut set = Permissions::NONE;
            for perm in perms.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let p: Permission = perm.parse().map_err(|e| anyhow!("role {role:?}: {e}"))?;
                set.insert(p);
            }
            if roles.insert(role.to_string(), set).is_some() {
                bail!("role {role:?} is listed twice");
            }
        }
        if roles.is_empty() {
            bail!("the role table names no role");
        }
        Ok(RoleTable { roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn default_table() {
        let t = RoleTable::default();
        for p in Permission::ALL {
            assert!(t.grants("owner", p));
            assert!(t.grants("manager", p));
            assert!(!t.grants("nobody", p));
        }
        assert!(t.grants("member", Send));
        assert!(!t.grants("member", Publish));
        assert!(!t.grants("member", Moderate));
        assert!(t.grants("researcher", History));
        assert!(t.grants("contributor", Publish));
        assert!(!t.grants("contributor", Moderate));
        assert!(t.grants("viewer", Read));
        assert!(!t.grants("viewer", Send));
        assert!(!t.grants("viewer", Typing));
        assert!(!t.grants("Owner", Join), "role names are case-sensitive");
    }

    #[test]
    fn parses_a_table() {
        let t: RoleTable = " admin = join, send ,moderate ; guest=read;mute=;"
            .parse()
            .unwrap();
        assert_eq!(
            t.permissions("admin"),
            Permissions::of(&[Join, Send, Moderate])
        );
        assert_eq!(t.permissions("guest"), Permissions::of(&[Read]));
        assert_eq!(t.permissions("mute"), Permissions::NONE);
        assert_eq!(t.role_names(), vec!["admin", "guest", "mute"]);
        // The default is replaced, not extended.
        assert_eq!(t.permissions("owner"), Permissions::NONE);
    }

    #[test]
    fn repeated_permission_is_harmless() {
        let t: RoleTable = "a=read,read".parse().unwrap();
        assert_eq!(t.permissions("a"), Permissions::of(&[Read]));
    }

    #[test]
    fn rejects_bad_tables() {
        for bad in [
            "",
            " ; ",
            "admin",
            "=read",
            "admin=read,fly",
            "admin=Read",
            "a=read;a=send",
            &format!("{}=read", "r".repeat(65)),
        ] {
            assert!(
                bad.parse::<RoleTable>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn unknown_permission_is_named_in_the_error() {
        let e = "admin=join,fly"
            .parse::<RoleTable>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("fly") && e.contains("admin"), "{e}");
    }

    #[test]
    fn permission_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert!("JOIN".parse::<Permission>().is_err());
    }
}
