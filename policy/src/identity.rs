//! Who is calling, level by level.
//!
//! A caller resolves to up to five levels: org, team, key, user and agent. Each level is either
//! absent (this caller has nothing at that level), resolved to one or more principal names, or
//! faulted: the lookup that would have resolved it failed. A fault is carried to [`decide`]
//! (crate::decide) as data, where it can only become a deny.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use crate::grants::Rules;

/// One level of a caller's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The organisation (tenant).
    Org,
    /// The team within the organisation.
    Team,
    /// The API key the call came in with.
    Key,
    /// The human end user on whose behalf the call is made.
    User,
    /// The agent (program) making the call.
    Agent,
}

/// What one level of a caller's identity resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The caller has nothing at this level.
    Absent,
    /// The level resolved to these principal names (several only for teams).
    Resolved(Vec<String>),
    /// The lookup for this level failed; the reason is for the operator.
    Fault(String),
}

/// A value for each level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerLevel<T> {
    /// The org level.
    pub org: T,
    /// The team level.
    pub team: T,
    /// The key level.
    pub key: T,
    /// The user level.
    pub user: T,
    /// The agent level.
    pub agent: T,
}

/// A caller, resolved level by level.
///
/// The key level may carry the key's own grants (issued with the key and kept in the store); when
/// it does, they are the key level's grants, in place of any `key:` entry in the config.
#[derive(Clone, Debug)]
pub struct Identity {
    bindings: PerLevel<Binding>,
    key_rules: Option<Rules>,
    expires_at: Option<u64>,
    key_lineage: Vec<String>,
    /// [`Identity::principals`], written once on first use (an identity is built, then read by
    /// every call its credential makes); cleared by the one builder that changes bindings.
    principals: OnceLock<Arc<[String]>>,
}

/// The error for a level name that is not one of `org`, `team`, `key`, `user`, `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevelError;

// === impl Level ===

impl Level {
    /// Every level, in the order decisions walk them.
    pub const ALL: [Level; 5] = [
        Level::Org,
        Level::Team,
        Level::Key,
        Level::User,
        Level::Agent,
    ];

    /// The stable lowercase name used in config, audit events and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Org => "org",
            Level::Team => "team",
            Level::Key => "key",
            Level::User => "user",
            Level::Agent => "agent",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = UnknownLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "org" => Ok(Level::Org),
            "team" => Ok(Level::Team),
            "key" => Ok(Level::Key),
            "user" => Ok(Level::User),
            "agent" => Ok(Level::Agent),
            _ => Err(UnknownLevelError),
        }
    }
}

// === impl PerLevel ===

impl<T> PerLevel<T> {
    /// The value for one level.
    pub fn get(&self, level: Level) -> &T {
        match level {
            Level::Org => &self.org,
            Level::Team => &self.team,
            Level::Key => &self.key,
            Level::User => &self.user,
            Level::Agent => &self.agent,
        }
    }

    /// The value for one level, mutably.
    pub fn get_mut(&mut self, level: Level) -> &mut T {
        match level {
            Level::Org => &mut self.org,
            Level::Team => &mut self.team,
            Level::Key => &mut self.key,
            Level::User => &mut self.user,
            Level::Agent => &mut self.agent,
        }
    }
}

// === impl Identity ===

impl Identity {
    /// A caller with every level absent. Such a caller is denied everything.
    pub fn new() -> Identity {
        let absent = || Binding::Absent;
        Identity {
            bindings: PerLevel {
                org: absent(),
                team: absent(),
                key: absent(),
                user: absent(),
                agent: absent(),
            },
            key_rules: None,
            expires_at: None,
            key_lineage: Vec::new(),
            principals: OnceLock::new(),
        }
    }

    /// Bind one level. A later binding of the same level replaces the earlier one.
    #[must_use]
    pub fn with(mut self, level: Level, binding: Binding) -> Identity {
        *self.bindings.get_mut(level) = binding;
        self.principals = OnceLock::new();
        self
    }

    /// Resolve one level to a single principal name.
    #[must_use]
    pub fn with_name(self, level: Level, name: impl Into<String>) -> Identity {
        self.with(level, Binding::Resolved(vec![name.into()]))
    }

    /// Give the key level its own grants (those the key was issued with).
    #[must_use]
    pub fn with_key_rules(mut self, rules: Rules) -> Identity {
        self.key_rules = Some(rules);
        self
    }

    /// The identity is valid before this time (Unix seconds) only, e.g. a token's `exp`.
    #[must_use]
    pub fn expiring_at(mut self, at: u64) -> Identity {
        self.expires_at = Some(at);
        self
    }

    /// The keys that minted this caller's key, nearest first. They grant nothing here (the
    /// key's own grants are already within theirs); an operator lever on any of them (a kill
    /// switch, a revocation) reaches this key too.
    #[must_use]
    pub fn with_key_lineage(mut self, lineage: Vec<String>) -> Identity {
        self.key_lineage = lineage;
        self
    }

    /// The keys that minted this caller's key, nearest first.
    pub fn key_lineage(&self) -> &[String] {
        &self.key_lineage
    }

    /// What a level resolved to.
    pub fn binding(&self, level: Level) -> &Binding {
        self.bindings.get(level)
    }

    /// The key's own grants, if it carries any.
    pub fn key_rules(&self) -> Option<&Rules> {
        self.key_rules.as_ref()
    }

    /// When this identity stops being valid, if ever.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// `level:name` for every resolved principal, in level order: for limits, logs and audit
    /// events. Formatted once per identity; each call shares them.
    pub fn principals(&self) -> Arc<[String]> {
        self.principals
            .get_or_init(|| {
                let mut out = Vec::new();
                for level in Level::ALL {
                    if let Binding::Resolved(names) = self.binding(level) {
                        out.extend(names.iter().map(|n| format!("{level}:{n}")));
                    }
                }
                out.into()
            })
            .clone()
    }
}

impl Default for Identity {
    /// The empty identity, which is denied everything.
    fn default() -> Identity {
        Identity::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_formatted_once_and_follow_a_new_binding() {
        let id = Identity::new()
            .with_name(Level::Org, "acme")
            .with(
                Level::Team,
                Binding::Resolved(vec!["red".into(), "blue".into()]),
            )
            .with(Level::User, Binding::Fault("directory down".into()));
        let first = id.principals();
        assert_eq!(&*first, ["org:acme", "team:red", "team:blue"]);
        // Every later call shares the first formatting, clones of the identity too.
        assert!(Arc::ptr_eq(&first, &id.principals()));
        assert!(Arc::ptr_eq(&first, &id.clone().principals()));
        // Binding a level again is seen: nothing formatted before it is kept.
        let rebound = id
            .with_name(Level::Team, "green")
            .with_name(Level::Agent, "bot");
        assert_eq!(
            &*rebound.principals(),
            ["org:acme", "team:green", "agent:bot"]
        );
        assert!(rebound.with(Level::Org, Binding::Absent).principals().len() == 2);
    }
}
