//! Step 2, decide: every resolved level of the caller's identity must grant it (policy), or
//! the caller is answered as if it did not exist.

use policy::{Decision, Target};

use super::ask::{Ask, Item};
use super::{Call, ToolCall};
use crate::gateway::Gateway;
use crate::refusal::Refusal;
use crate::upstream::Upstream;

/// Whether an allowed call waits for a human first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Approval {
    NotNeeded,
    Needed,
}

/// A tool call: allowed, allowed once approved, or denied.
pub(super) fn tool(gw: &Gateway, call: &Call, req: &ToolCall) -> Result<Approval, Refusal> {
    let target = Target::Tool(req.tool());
    match crate::authorize::decide(
        gw,
        &call.caller,
        req.server(),
        target,
        req.offered.class,
        req.digest,
    ) {
        Decision::Allow => Ok(Approval::NotNeeded),
        Decision::NeedsApproval { .. } => Ok(Approval::Needed),
        Decision::Deny(denial) => {
            // Denied answers exactly like nonexistent; the reason goes to the operator.
            tracing::info!(subject = %call.caller.subject, server = req.server(), tool = req.tool(), reason = %denial, "tool call denied");
            Err(Refusal::Denied {
                name: req.name.clone(),
                denial,
            })
        }
    }
}

/// A resource, prompt or completion: allowlisted on its server, and the caller may browse the
/// server (`server/*` at every level).
pub(super) fn browse(gw: &Gateway, call: &Call, ask: &Ask) -> Result<(), Refusal> {
    let config = ask.up.config();
    let listed = match ask.item {
        Item::Resource => config.allows_resource(&ask.inner),
        Item::Prompt => config.allows_prompt(&ask.inner),
    };
    let completes = !ask.method.starts_with("completion/")
        || ask.up.capabilities().get("completions").is_some();
    match listed && completes && crate::authorize::may_browse(gw, &call.caller, ask.up.name()) {
        true => Ok(()),
        false => Err(ask.absent(call)),
    }
}

/// Whether the caller's `logging/setLevel` goes to `up`: a server it may browse, not switched
/// off, that declared logging.
pub(super) fn logs_to(gw: &Gateway, call: &Call, up: &Upstream) -> bool {
    crate::authorize::may_browse(gw, &call.caller, up.name())
        && gw
            .levers
            .killed(&call.caller.identity, up.name(), "")
            .is_none()
        && up.capabilities().get("logging").is_some()
}
