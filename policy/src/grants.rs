//! Grants: which tools a principal may reach, and which it is explicitly denied.
//!
//! A pattern is `server/tool` (one tool) or `server/*` (every tool of the server, and its resources
//! and prompts). Tool names compare byte for byte. [`Rules`] indexes a principal's patterns by
//! server so a check is two hash lookups whatever the number of grants; [`GrantTable`] holds the
//! rules of every configured principal, level by level.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::identity::{Level, PerLevel};

/// One grant or deny pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// `server/*`: everything on the server.
    Server(String),
    /// `server/tool`: exactly one tool.
    Tool(String, String),
}

/// Why a pattern did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// No `/` between server and tool.
    #[error("`{0}` is not `server/tool` or `server/*`")]
    Shape(String),
    /// A part is empty, or holds characters no server or tool name has.
    #[error("`{0}` has an empty or malformed server or tool part")]
    Part(String),
}

/// What one principal is granted and denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    servers: HashMap<String, ServerRules>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServerRules {
    all: bool,
    tools: HashSet<String>,
    deny_all: bool,
    deny_tools: HashSet<String>,
}

/// What is being reached on a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// One tool, by its registry name.
    Tool(&'a str),
    /// The server as a whole (its resources and prompts): only `server/*` reaches it.
    Server,
}

/// How one principal's rules answer for a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An explicit deny matches.
    Denied,
    /// A grant matches and no deny does.
    Granted,
    /// Nothing matches.
    NotGranted,
}

/// The configured rules of every principal, by level, plus an optional `level:*` default that
/// applies to any principal of that level without its own entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantTable {
    levels: PerLevel<LevelTable>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LevelTable {
    named: HashMap<String, Rules>,
    any: Option<Rules>,
}

// === impl Pattern ===

impl Pattern {
    /// The server the pattern names.
    pub fn server(&self) -> &str {
        match self {
            Pattern::Server(s) | Pattern::Tool(s, _) => s,
        }
    }

    /// True when `self` reaches everything `other` reaches.
    pub fn covers(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Server(a), p) => a == p.server(),
            (Pattern::Tool(..), Pattern::Server(_)) => false,
            (Pattern::Tool(s, t), Pattern::Tool(os, ot)) => s == os && t == ot,
        }
    }

    fn matches(&self, server: &str, target: Target<'_>) -> bool {
        match (self, target) {
            (Pattern::Server(s), _) => s == server,
            (Pattern::Tool(s, t), Target::Tool(tool)) => s == server && t == tool,
            (Pattern::Tool(..), Target::Server) => false,
        }
    }
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (server, tool) = s
            .split_once('/')
            .ok_or_else(|| PatternError::Shape(s.to_owned()))?;
        if !valid_part(server) {
            return Err(PatternError::Part(s.to_owned()));
        }
        if tool == "*" {
            return Ok(Pattern::Server(server.to_owned()));
        }
        if !valid_part(tool) {
            return Err(PatternError::Part(s.to_owned()));
        }
        Ok(Pattern::Tool(server.to_owned(), tool.to_owned()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Server(s) => write!(f, "{s}/*"),
            Pattern::Tool(s, t) => write!(f, "{s}/{t}"),
        }
    }
}

// === impl Rules ===

impl Rules {
    /// Rules granting exactly these patterns.
    pub fn granting(patterns: impl IntoIterator<Item = Pattern>) -> Rules {
        let mut rules = Rules::default();
        for p in patterns {
            rules.allow(p);
        }
        rules
    }

    /// Parse grant patterns (as stored with a key). Any bad pattern fails the whole set.
    pub fn parse_granting<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Rules, PatternError> {
        let mut rules = Rules::default();
        for p in patterns {
            rules.allow(p.parse()?);
        }
        Ok(rules)
    }

    /// Add a grant.
    pub fn allow(&mut self, pattern: Pattern) {
        match pattern {
            Pattern::Server(s) => self.servers.entry(s).or_default().all = true,
            Pattern::Tool(s, t) => {
                self.servers.entry(s).or_default().tools.insert(t);
            }
        }
    }

    /// Add an explicit deny, which wins over every grant.
    pub fn deny(&mut self, pattern: Pattern) {
        match pattern {
            Pattern::Server(s) => self.servers.entry(s).or_default().deny_all = true,
            Pattern::Tool(s, t) => {
                self.servers.entry(s).or_default().deny_tools.insert(t);
            }
        }
    }

    /// True when nothing is granted (denies alone grant nothing).
    pub fn grants_nothing(&self) -> bool {
        self.servers.values().all(|r| !r.all && r.tools.is_empty())
    }

    /// True when these rules grant everything `pattern` reaches and deny none of it: the test a
    /// key must pass to mint another key with that pattern.
    pub fn covers(&self, pattern: &Pattern) -> bool {
        let Some(r) = self.servers.get(pattern.server()) else {
            return false;
        };
        match pattern {
            Pattern::Server(_) => r.all && !r.deny_all && r.deny_tools.is_empty(),
            Pattern::Tool(_, t) => {
                (r.all || r.tools.contains(t)) && !r.deny_all && !r.deny_tools.contains(t)
            }
        }
    }

    /// The granted patterns, sorted: for display and storage.
    pub fn granted(&self) -> Vec<Pattern> {
        let mut out = Vec::new();
        for (s, r) in &self.servers {
            if r.all {
                out.push(Pattern::Server(s.clone()));
            }
            out.extend(r.tools.iter().map(|t| Pattern::Tool(s.clone(), t.clone())));
        }
        out.sort();
        out
    }

    /// The denied patterns, sorted.
    pub fn denied(&self) -> Vec<Pattern> {
        let mut out = Vec::new();
        for (s, r) in &self.servers {
            if r.deny_all {
                out.push(Pattern::Server(s.clone()));
            }
            out.extend(
                r.deny_tools
                    .iter()
                    .map(|t| Pattern::Tool(s.clone(), t.clone())),
            );
        }
        out.sort();
        out
    }

    /// How these rules answer for a target; a matching deny wins over any grant.
    pub(crate) fn verdict(&self, server: &str, target: Target<'_>) -> Verdict {
        let Some(r) = self.servers.get(server) else {
            return Verdict::NotGranted;
        };
        let (denied, granted) = match target {
            Target::Tool(t) => (
                r.deny_all || r.deny_tools.contains(t),
                r.all || r.tools.contains(t),
            ),
            // A deny of any single tool does not hide the server's resources; `server/*` does.
            Target::Server => (r.deny_all, r.all),
        };
        match (denied, granted) {
            (true, _) => Verdict::Denied,
            (false, true) => Verdict::Granted,
            (false, false) => Verdict::NotGranted,
        }
    }

    /// True when a pattern reaches the target: used by reference evaluators in tests.
    pub fn pattern_matches(pattern: &Pattern, server: &str, target: Target<'_>) -> bool {
        pattern.matches(server, target)
    }
}

// === impl GrantTable ===

impl GrantTable {
    /// An empty table: every resolved level contributes nothing, so everything is denied.
    pub fn new() -> GrantTable {
        GrantTable::default()
    }

    /// The rules for `level:name`, created empty if absent. `name` `*` is the level's default.
    pub fn rules_mut(&mut self, level: Level, name: &str) -> &mut Rules {
        let table = self.levels.get_mut(level);
        if name == "*" {
            table.any.get_or_insert_with(Rules::default)
        } else {
            table.named.entry(name.to_owned()).or_default()
        }
    }

    /// The rules that apply to principal `name` at `level`: its own entry, else the level's
    /// default, else none (which grants nothing).
    pub fn rules(&self, level: Level, name: &str) -> Option<&Rules> {
        let table = self.levels.get(level);
        table.named.get(name).or(table.any.as_ref())
    }

    /// Every entry: level, principal name (`*` for the level's default) and rules.
    pub fn entries(&self) -> Vec<(Level, &str, &Rules)> {
        let mut out = Vec::new();
        for level in Level::ALL {
            let t = self.levels.get(level);
            for (name, rules) in &t.named {
                out.push((level, name.as_str(), rules));
            }
            if let Some(rules) = &t.any {
                out.push((level, "*", rules));
            }
        }
        out
    }

    /// How many patterns the table holds in all (grants and denies).
    pub fn len(&self) -> usize {
        let count = |r: &Rules| r.granted().len() + r.denied().len();
        Level::ALL
            .iter()
            .map(|l| {
                let t = self.levels.get(*l);
                t.named.values().map(count).sum::<usize>() + t.any.as_ref().map_or(0, count)
            })
            .sum()
    }

    /// True when the table holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
