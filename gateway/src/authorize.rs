//! Asking `policy` on the request path.
//!
//! [`decide`] is the one place a tool, resource or prompt is authorised. It gathers the
//! inputs (caller identity, server, target, class, argument digest, the time) and calls the pure
//! `policy::decide`; an evaluation that panics becomes a deny, so no failure inside evaluation
//! can turn into an allow. Arguments are checked by `tools::ArgumentCheck`, compiled when the
//! tool list refreshes.

use std::panic::{AssertUnwindSafe, catch_unwind};

use policy::{ArgumentsDigest, Decision, Denial, DenyReason, Target, ToolClass};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{Caller, unix_now};
use crate::gateway::Gateway;

/// The digest an approval binds to: SHA-256 over the canonical JSON of the arguments.
#[cfg(test)]
pub(crate) fn arguments_digest(arguments: &Value) -> ArgumentsDigest {
    digest_and_size(arguments).0
}

/// The digest, and the size in bytes of the canonical JSON it was taken over.
pub(crate) fn digest_and_size(arguments: &Value) -> (ArgumentsDigest, u64) {
    let canonical = registry::canonical_json(arguments);
    (
        ArgumentsDigest(Sha256::digest(&canonical).into()),
        canonical.len() as u64,
    )
}

/// Run an evaluation; if it panics, the answer is a deny.
pub(crate) fn guarded(evaluate: impl FnOnce() -> Decision) -> Decision {
    catch_unwind(AssertUnwindSafe(evaluate)).unwrap_or_else(|_| {
        Decision::Deny(Denial {
            level: None,
            principal: None,
            reason: DenyReason::Internal("policy evaluation panicked".into()),
        })
    })
}

// === impl Gateway ===

/// Decide whether `caller` may reach `target` on `server` with these arguments, now.
pub(crate) fn decide(
    gw: &Gateway,
    caller: &Caller,
    server: &str,
    target: Target<'_>,
    class: ToolClass,
    arguments: ArgumentsDigest,
) -> Decision {
    let request = policy::Request {
        server,
        target,
        class,
        arguments,
    };
    let policy = &gw.registry().access.policy;
    guarded(|| policy::decide(policy, &caller.identity, &request, unix_now()))
}

/// True when the caller may see `server`'s resources and prompts.
pub(crate) fn may_browse(gw: &Gateway, caller: &Caller, server: &str) -> bool {
    let no_args = ArgumentsDigest([0; 32]);
    decide(gw, caller, server, Target::Server, ToolClass::Read, no_args).is_visible()
}

#[cfg(test)]
mod tests;
