//! The request path: every step a call takes, in order, on one screen.
//!
//! Each step is a function in its own file; a step that can refuse returns `Result<_, Refusal>`,
//! the first refusal ends the call, and `result` records how it ended. A `tools/call` takes
//! every step; resources, prompts, completions and `logging/setLevel` take the steps that apply
//! to them. After each wait (the approval hold; the audit write and the upstream credential)
//! `recheck` decides again against
//! the config, kill switch and mode in force: it is the only re-check. (`forward` only declines
//! to send a call its client cancelled meanwhile, and names a kill switch as the cause of a call
//! that failed while one was engaged.)

mod admit;
mod arguments;
mod ask;
mod credential;
mod decide;
mod forward;
mod hold;
mod inbound;
mod input;
mod levers;
mod log_level;
mod recheck;
mod record;
mod resolve;
mod result;
pub(crate) mod tasks;
mod trail;

use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) use admit::Running;
pub(crate) use decide::Approval;
pub(crate) use inbound::{Call, Era};
pub(crate) use resolve::{ToolCall, scoped, str_param};
pub(crate) use trail::Trail;

use crate::gateway::Gateway;
use crate::refusal::Refusal;

type Sink = mpsc::UnboundedSender<Value>;

/// How a call that needs approval waits for it.
#[derive(Clone, Copy)]
pub(crate) enum Hold<'a> {
    /// Here, up to `approvals.hold`.
    Wait,
    /// As a task its client follows (`tasks.rs`).
    Task(tasks::Asked),
    /// A task's call, run on the approval granted to it.
    Run { task: &'a str, approval: &'a str },
}

/// `tools/call`.
pub(crate) async fn tool(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    params: Option<Value>,
    sink: Sink,
) -> Result<Value, Refusal> {
    let hold = match tasks::asked(call, params.as_ref()) {
        Some(asked) if !input::continues(params.as_ref()) => Hold::Task(asked),
        _ => Hold::Wait,
    };
    tool_held(gw, call, id, params, sink, hold).await
}

/// `tools/call`, held as `hold` says if it needs approval.
pub(crate) async fn tool_held(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    params: Option<Value>,
    sink: Sink,
    hold: Hold<'_>,
) -> Result<Value, Refusal> {
    let mut trail = Trail::default();
    let done = tool_steps(gw, call, id, params, &sink, &mut trail, hold).await;
    result::tool(gw, call, trail, done).await // the result or refusal recorded; budgets settled
}

async fn tool_steps(
    gw: &Gateway,
    call: &Call,
    id: &Value,
    params: Option<Value>,
    sink: &Sink,
    t: &mut Trail,
    hold: Hold<'_>,
) -> Result<Value, Refusal> {
    let under = gw.live(); //                                  the config it is decided under
    if let Hold::Run { task, .. } = hold {
        t.task = Some(task.to_string()); //                    a task's run names its task
    }
    let mut req = resolve::tool(gw, call, params, t)?; //      allowlisted and offered, or not found
    let approval = decide::tool(gw, call, &req)?; //           every level grants it, or not found
    let round = input::tool(gw, call, &mut req, &hold, t)?; // a retry's requestState is this call's
    levers::kill(gw, call, req.server(), req.tool(), &req.name)?; // kill switch
    arguments::check(call, &req, &hold)?; //                   Mcp-Param headers, limits, schemas
    admit::limits(gw, call, &req, &under, t).await?; //      rates, concurrency caps, budgets
    levers::mode(gw, call, &req, approval)?; //                      read-only refuses, shadow answers
    if let (Approval::Needed, Hold::Task(asked)) = (approval, &hold) {
        return hold::task(gw, call, &req, *asked, t).await; // filed; its client follows the task
    }
    let running = admit::track(gw, call, &tracked(id, &hold), &req)?; // cancellable: client, switch
    if approval == Approval::Needed || matches!(hold, Hold::Run { .. }) {
        let held = hold::approval(gw, &call.caller, &req, &running, sink, &hold).await; // decided
        t.approval = held.as_ref().ok().cloned(); //           a spent approval is on the record
        recheck::tool(gw, call, &req, &under, approval)?; //   after the wait
        held?;
    }
    record::tool(gw, call, &req, t).await?; //                 audit before action
    let token = credential::mint(gw, call, &req.up, &req.name, Some(t)).await?; // minted, if so
    recheck::tool(gw, call, &req, &under, approval)?; //       after the waits
    let answer = forward::tool(gw, call, req, running, token, sink, t).await?; // the upstream answers
    input::seal(gw, call, &round, answer) //                   a request for input, sealed to this call
}

/// The id a call is tracked by for cancellation: its request's, or for a task's run the task's
/// (cancelling the look that started it does not cancel the call; the kill switch does, and
/// `tasks/cancel` refuses a task whose call already runs).
fn tracked(id: &Value, hold: &Hold<'_>) -> Value {
    match hold {
        Hold::Run { task, .. } => Value::String(format!("task:{task}")),
        _ => id.clone(),
    }
}

/// Whether a task's held call would still be held now: allowed, not switched off, and not
/// refused by the mode. Nothing is recorded or counted; a tool its upstream does not offer
/// at the moment is decided when the call runs.
pub(crate) fn still_held(gw: &Gateway, call: &Call, params: Option<Value>) -> Result<(), Refusal> {
    let Ok(req) = resolve::tool(gw, call, params, &mut Trail::default()) else {
        return Ok(());
    };
    let approval = decide::tool(gw, call, &req)?;
    levers::kill(gw, call, req.server(), req.tool(), &req.name)?;
    levers::mode(gw, call, &req, approval)
}

/// `resources/read`, `resources/(un)subscribe`, `prompts/get`, `completion/complete`.
pub(crate) async fn ask(
    gw: &Gateway,
    call: &Call,
    method: &str,
    params: Option<Value>,
    sink: &Sink,
) -> Result<Value, Refusal> {
    let mut ask = ask::resolve(gw, call, method, params)?; //  name or URI, or not found
    decide::browse(gw, call, &ask)?; //                        allowlisted, `server/*` at every level
    let round = input::ask(gw, call, &mut ask)?; //            a retry's requestState is this one's
    levers::kill(gw, call, ask.up.name(), "", ask.target())?; // kill switch
    record::ask(gw, call, &ask).await?; //                     audit before action
    let token = credential::mint(gw, call, &ask.up, ask.target(), None).await?; // if minted
    recheck::ask(gw, call, &ask)?; //                          after the waits
    let answered = forward::ask(gw, call, &ask, token, sink).await; // the upstream answers
    let answer = result::ask(call, &ask, answered)?; //        renamed for the endpoint
    input::seal(gw, call, &round, answer) //                   a request for input, sealed to this one
}

/// `logging/setLevel`: recorded, kept for the session, relayed to the servers the caller may
/// browse that log.
pub(crate) async fn set_level(
    gw: &Gateway,
    call: &Call,
    params: Option<Value>,
) -> Result<Value, Refusal> {
    let level = log_level::parse(&params)?; //                 one of the RFC 5424 names
    let servers: Vec<String> = scoped(gw, &call.scope) //      servers it may browse that log
        .iter()
        .filter(|up| decide::logs_to(gw, call, up))
        .map(|up| up.name().to_string())
        .collect();
    record::set_level(gw, call, &level, &servers).await?; //   audit before action
    log_level::keep(call, &level); //                          for connections opened later
    let targets = recheck::log_targets(gw, call); //           after the wait
    forward::set_level(gw, call, &level, targets).await; //    the upstreams hear it
    Ok(json!({}))
}
