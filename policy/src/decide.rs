//! The decision: may this caller reach this target, now?
//!
//! [`decide`] is total and pure. Every input it needs is an argument, including the time. It walks
//! the identity's levels once: a faulted level, a required level that did not resolve or a level
//! that resolved to nothing denies at once; otherwise every resolved level must grant the target
//! and none may deny it. The effective permission is therefore the intersection of the levels'
//! grants, and an explicit deny at any level wins over every grant.

use std::fmt;

use crate::class::ToolClass;
use crate::grants::{GrantTable, Rules, Target, Verdict};
use crate::identity::{Binding, Identity, Level, PerLevel};

/// Which tool classes are held for a human's approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Classes at or above this one need approval.
    From(ToolClass),
    /// No class needs approval (an unsafe setting the self-audit reports).
    Never,
}

/// Everything configured that a decision depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    grants: GrantTable,
    required: PerLevel<bool>,
    approval: Approval,
}

/// SHA-256 of a call's canonical arguments, so an approval binds to the exact arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgumentsDigest(pub [u8; 32]);

/// What is asked.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The server's registry name.
    pub server: &'a str,
    /// The tool (or the whole server, for resources and prompts).
    pub target: Target<'a>,
    /// The tool's class after upstream hints raised it.
    pub class: ToolClass,
    /// Digest of the call's arguments.
    pub arguments: ArgumentsDigest,
}

/// The outcome. There is no default: every path through [`decide`] names its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Every level grants the target.
    Allow,
    /// Every level grants the target, and its class needs a human's approval first.
    NeedsApproval {
        /// The class that required approval.
        class: ToolClass,
        /// The arguments the approval must be bound to.
        arguments: ArgumentsDigest,
    },
    /// Refused, with the reason.
    Deny(Denial),
}

/// Why a call was refused, naming the level that refused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The level that refused, when one did.
    pub level: Option<Level>,
    /// The principal(s) at that level, as `level:name`.
    pub principal: Option<String>,
    /// What happened.
    pub reason: DenyReason,
}

/// The kinds of refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No level resolved at all.
    NoIdentity,
    /// The identity (e.g. its token) has expired.
    Expired,
    /// A level the deployment requires did not resolve.
    Unresolved,
    /// Resolving the level failed.
    Fault(String),
    /// The inputs broke an invariant of evaluation.
    Internal(String),
    /// An explicit deny entry matched.
    ExplicitDeny,
    /// The level grants nothing that reaches the target.
    NotGranted,
}

// === impl Policy ===

impl Policy {
    /// A policy over a grant table, with the levels that must resolve and the approval rule.
    pub fn new(grants: GrantTable, required: &[Level], approval: Approval) -> Policy {
        let mut req = PerLevel::<bool>::default();
        for level in required {
            *req.get_mut(*level) = true;
        }
        Policy {
            grants,
            required: req,
            approval,
        }
    }

    /// The grant table.
    pub fn grants(&self) -> &GrantTable {
        &self.grants
    }

    /// True when the deployment requires `level` to resolve.
    pub fn requires(&self, level: Level) -> bool {
        *self.required.get(level)
    }

    /// The approval rule.
    pub fn approval(&self) -> Approval {
        self.approval
    }

    fn rules<'a>(&'a self, identity: &'a Identity, level: Level, name: &str) -> Option<&'a Rules> {
        match (level, identity.key_rules()) {
            (Level::Key, Some(own)) => Some(own),
            _ => self.grants.rules(level, name),
        }
    }
}

// === impl Decision ===

impl Decision {
    /// True for [`Decision::Allow`] only.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// True when the caller may see the target in a listing: allowed, or allowed after approval.
    pub fn is_visible(&self) -> bool {
        !matches!(self, Decision::Deny(_))
    }
}

// === impl Denial ===

impl Denial {
    fn decision(level: Option<Level>, principal: Option<String>, reason: DenyReason) -> Decision {
        Decision::Deny(Denial {
            level,
            principal,
            reason,
        })
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match (&self.principal, self.level) {
            (Some(p), _) => p.clone(),
            (None, Some(l)) => format!("{l} level"),
            (None, None) => "identity".to_owned(),
        };
        match &self.reason {
            DenyReason::NoIdentity => write!(f, "no identity level resolved"),
            DenyReason::Expired => write!(f, "the identity has expired"),
            DenyReason::Unresolved => write!(f, "{who} is required and did not resolve"),
            DenyReason::Fault(why) => write!(f, "{who} could not be resolved: {why}"),
            DenyReason::Internal(why) => write!(f, "evaluation failed at {who}: {why}"),
            DenyReason::ExplicitDeny => write!(f, "{who} explicitly denies it"),
            DenyReason::NotGranted => write!(f, "{who} does not grant it"),
        }
    }
}

fn principal(level: Level, names: &[String]) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(level.as_str());
        out.push(':');
        out.push_str(n);
    }
    out
}

/// Decide one request. Pure: `now` is Unix seconds, passed in.
pub fn decide(policy: &Policy, identity: &Identity, request: &Request<'_>, now: u64) -> Decision {
    if identity.expires_at().is_some_and(|at| now >= at) {
        return Denial::decision(None, None, DenyReason::Expired);
    }
    let mut resolved = 0usize;
    let mut first_refusal: Option<(Level, &[String])> = None;
    for level in Level::ALL {
        let names = match identity.binding(level) {
            Binding::Absent if policy.requires(level) => {
                return Denial::decision(Some(level), None, DenyReason::Unresolved);
            }
            Binding::Absent => continue,
            Binding::Fault(why) => {
                return Denial::decision(Some(level), None, DenyReason::Fault(why.clone()));
            }
            Binding::Resolved(names) if names.is_empty() => {
                let why = "the level resolved to no principal".to_owned();
                return Denial::decision(Some(level), None, DenyReason::Internal(why));
            }
            Binding::Resolved(names) => names,
        };
        resolved += 1;
        // Within a level, principals (several teams) pool their grants; any deny among them wins.
        let mut granted = false;
        for name in names {
            let verdict = policy
                .rules(identity, level, name)
                .map_or(Verdict::NotGranted, |r| {
                    r.verdict(request.server, request.target)
                });
            match verdict {
                Verdict::Denied => {
                    let who = Some(format!("{level}:{name}"));
                    return Denial::decision(Some(level), who, DenyReason::ExplicitDeny);
                }
                Verdict::Granted => granted = true,
                Verdict::NotGranted => {}
            }
        }
        if !granted && first_refusal.is_none() {
            first_refusal = Some((level, names));
        }
    }
    if let Some((level, names)) = first_refusal {
        let who = Some(principal(level, names));
        return Denial::decision(Some(level), who, DenyReason::NotGranted);
    }
    if resolved == 0 {
        return Denial::decision(None, None, DenyReason::NoIdentity);
    }
    match (policy.approval, request.target) {
        (Approval::From(min), Target::Tool(_)) if request.class >= min => Decision::NeedsApproval {
            class: request.class,
            arguments: request.arguments,
        },
        _ => Decision::Allow,
    }
}

#[cfg(test)]
mod tests;
