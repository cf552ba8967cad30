//! What a server's deadlines, answer bounds, breaker and endpoints add to its error recovery.

use super::{Cited, base, cite};
use crate::source_map::child;
use crate::validate::{Registry, Server, ServerSource};

/// What the server's deadlines, answer bounds and circuit breaker add to its error recovery,
/// as configured: a breaker turned off is said so, and the score is at most 1.
pub(super) fn resilience_read(
    reg: &Registry,
    server: &Server,
    score: u8,
    mut why: String,
    evidence: &mut Vec<Cited>,
) -> (u8, String) {
    let b = base(server);
    let r = &server.resilience;
    let tool_timeouts: Vec<String> = server
        .tools
        .iter()
        .filter_map(|(t, e)| e.timeout.map(|d| format!("{t} {} s", d.as_secs_f64())))
        .collect();
    if !tool_timeouts.is_empty() {
        why.push_str(&format!(
            "; per-tool timeouts: {}",
            tool_timeouts.join(", ")
        ));
    }
    why.push_str(&format!(
        "; answers are bounded at {} bytes and nesting depth {}",
        r.max_response, r.max_depth
    ));
    evidence.push(cite(reg, &child(&b, "max_response")));
    evidence.push(cite(reg, &child(&b, "breaker")));
    if let ServerSource::Http { endpoints, .. } = &server.source
        && endpoints.len() > 1
    {
        let key = match reg.source.contains(&child(&b, "endpoints")) {
            true => "endpoints",
            false => "url",
        };
        evidence.push(cite(reg, &child(&b, key)));
        evidence.push(cite(reg, &child(&b, "retry_budget")));
        why.push_str(&format!(
            "; {} endpoints ({}), {}",
            endpoints.len(),
            r.balance.as_str(),
            match r.retry_budget {
                0 => "reads never retried (`retry_budget: off`)".to_owned(),
                p =>
                    format!("reads retried on another endpoint within {p}% of calls, writes only when the request never left"),
            }
        ));
    }
    match r.breaker {
        Some(br) => {
            why.push_str(&format!(
                "; the circuit breaker opens after {} failures in a row and refuses calls for {} s before a probe",
                br.failures,
                br.cooldown.as_secs_f64()
            ));
            (score, why)
        }
        None => {
            why.push_str("; the circuit breaker is off (`breaker: off`): a failing upstream is asked again on every call");
            (score.min(1), why)
        }
    }
}
