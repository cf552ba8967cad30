//! The re-check after every wait (approval hold, audit write): the call runs only if the
//! kill switch, the mode, the tool's definition and the config now in force still let it.
//! It is the only place a decision is taken again.

use std::sync::Arc;

use policy::{Decision, Target};

use super::ask::Ask;
use super::{Approval, Call, ToolCall, decide, levers};
use crate::gateway::{Gateway, Live};
use crate::refusal::Refusal;
use crate::upstream::Upstream;

/// A tool call decided under `under`.
pub(super) fn tool(
    gw: &Gateway,
    call: &Call,
    req: &ToolCall,
    under: &Arc<Live>,
    approval: Approval,
) -> Result<(), Refusal> {
    levers::kill(gw, call, req.server(), req.tool(), &req.name)?;
    levers::mode(gw, call, req, Approval::NotNeeded)?;
    // It runs only if the tool is still offered exactly as it was decided on.
    let unchanged = req
        .up
        .tools()
        .named(req.tool())
        .is_some_and(|t| t.fingerprint == req.offered.fingerprint);
    if !unchanged {
        tracing::warn!(
            server = req.server(),
            tool = req.tool(),
            "tool changed or quarantined before execution; call refused"
        );
        return Err(Refusal::Changed {
            name: req.name.clone(),
        });
    }
    if !Arc::ptr_eq(under, &gw.live())
        && let Err(why) = still_allowed(gw, call, req, approval)
    {
        tracing::warn!(subject = %call.caller.subject, server = req.server(), tool = req.tool(), reason = %why, "config reloaded before execution; call refused");
        return Err(Refusal::Reloaded {
            name: req.name.clone(),
            why,
        });
    }
    Ok(())
}

/// Whether a call decided under an earlier config still runs under the one now in force:
/// the same upstream, the same definition and class, arguments that pass the current checks,
/// and a decision that allows it (needing approval only if it was already held for one).
fn still_allowed(
    gw: &Gateway,
    call: &Call,
    req: &ToolCall,
    approval: Approval,
) -> Result<(), String> {
    match gw.live().upstreams.get(req.server()) {
        Some(now) if Arc::ptr_eq(now, &req.up) => {}
        _ => return Err("its server was removed or reconnected".into()),
    }
    let tools = req.up.tools();
    let name = req.tool();
    let Some(now) = tools
        .named(name)
        .filter(|t| t.fingerprint == req.offered.fingerprint)
        .filter(|_| req.up.config().tools.contains_key(name))
    else {
        return Err("the tool is no longer offered".into());
    };
    if now.class != req.offered.class {
        return Err(format!("its class is now {}", now.class));
    }
    if let Err(why) = now.check.check(req.arguments()) {
        return Err(format!("its arguments no longer pass at `{}`", why.at));
    }
    let target = Target::Tool(name);
    match crate::authorize::decide(
        gw,
        &call.caller,
        req.server(),
        target,
        now.class,
        req.digest,
    ) {
        Decision::Allow => Ok(()),
        Decision::NeedsApproval { .. } if approval == Approval::Needed => Ok(()),
        Decision::NeedsApproval { .. } => Err("it now needs approval".into()),
        Decision::Deny(d) => Err(d.to_string()),
    }
}

/// A resource, prompt or completion, after its record was written.
pub(super) fn ask(gw: &Gateway, call: &Call, ask: &Ask) -> Result<(), Refusal> {
    levers::kill(gw, call, ask.up.name(), "", ask.target())
}

/// The servers a `logging/setLevel` still goes to after its record was written.
pub(super) fn log_targets(gw: &Gateway, call: &Call) -> Vec<Arc<Upstream>> {
    super::resolve::scoped(gw, &call.scope)
        .into_iter()
        .filter(|up| decide::logs_to(gw, call, up))
        .collect()
}
