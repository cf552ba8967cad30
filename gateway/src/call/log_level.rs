//! `logging/setLevel`: the level a session asks of the servers it may browse.

use serde_json::Value;

use super::{Call, Era};
use crate::refusal::Refusal;
use crate::upstream::LOG_LEVELS;

/// The requested level, one of [`LOG_LEVELS`].
pub(super) fn parse(params: &Option<Value>) -> Result<String, Refusal> {
    let level = super::resolve::str_param(params, "level")?;
    if LOG_LEVELS.contains(&level) {
        return Ok(level.to_string());
    }
    Err(Refusal::Malformed(format!(
        "unknown logging level `{}`; one of: {}",
        level.chars().take(32).collect::<String>(),
        LOG_LEVELS.join(", ")
    )))
}

/// Kept with the session: a per-session connection that opens from now on applies it itself.
pub(super) fn keep(call: &Call, level: &str) {
    if let Era::Stateful(session) = &call.era
        && let Ok(mut l) = session.client.log_level.lock()
    {
        *l = Some(level.to_string());
    }
}
