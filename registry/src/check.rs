//! The CI gate (`portcullis check`): what a config must have before it ships, beyond loading.
//!
//! Every server has a tool allowlist (loading already requires it), a pinned source (an HTTP
//! server's allowlisted tools each pinned; a stdio server's artifact pinned by digest), a grant
//! that reaches each allowlisted tool, and a rate limit or budget on each write and destructive
//! tool (its own `rate`, or a `limits:` entry with a `rate` or `budget` covering it); no
//! stdio argument carries shell syntax or a command-running option. No secret is inline
//! (loading already refuses one).

use policy::{Pattern, ToolClass};

use crate::error::ConfigProblem;
use crate::source_map::child;
use crate::validate::{Registry, ServerSource};

/// Every reason the config is not ready to ship, each at its location.
pub fn check(reg: &Registry) -> Vec<ConfigProblem> {
    let map = &reg.source;
    let mut out = Vec::new();
    let grants = reg.access.policy.grants().entries();
    for s in &reg.servers {
        let base = child("servers", &s.name);
        match &s.source {
            ServerSource::Http { .. } => match &s.pins {
                None => out.push(map.problem(
                    &base,
                    format!("server `{}` has no tool pins: a changed tool definition would not be noticed", s.name),
                    "run `portcullis pin --config FILE` and commit the `pin:` it writes",
                )),
                Some(pins) => {
                    for tool in s.tools.keys().filter(|t| !pins.contains_key(*t)) {
                        out.push(map.problem(
                            &child(&child(&base, "tools"), tool),
                            format!("`{tool}` is allowlisted but not pinned; it stays hidden"),
                            "run `portcullis pin --config FILE` to pin it; if pin reports that the upstream does not offer it, remove it from the allowlist (nothing can pin a tool the upstream does not serve)",
                        ));
                    }
                }
            },
            ServerSource::Command(c) if !c.artifact.is_pinned() => out.push(map.problem(
                &child(&base, "command"),
                format!("server `{}` runs an unpinned program", s.name),
                "add `integrity: sha256:<hex>` of the program file, or use `package:` with an exact version and its integrity",
            )),
            ServerSource::Command(_) | ServerSource::Builtin(_) => {}
        }
        if let ServerSource::Command(c) = &s.source {
            for (i, arg) in c.args.iter().enumerate() {
                if let Some(why) = risky_argument(arg) {
                    out.push(map.problem(
                        &format!("{}[{i}]", child(&child(&base, "command"), "args")),
                        format!("argument {i} of server `{}` {why}", s.name),
                        "no shell runs, so the program receives it literally: remove the shell syntax, and never pass an option that makes the program run another command",
                    ));
                }
            }
        }
        for (tool, entry) in &s.tools {
            let at = child(&child(&base, "tools"), tool);
            let pattern = Pattern::Tool(s.name.clone(), tool.clone());
            if !grants.iter().any(|(_, _, rules)| rules.covers(&pattern)) {
                out.push(map.problem(
                    &at,
                    format!("no grant reaches `{}/{tool}`: nobody can call it", s.name),
                    "grant it to the principals who need it (e.g. `grants: { team:research: [\"server/tool\"] }`), or remove it from the allowlist",
                ));
            }
            if entry.class != ToolClass::Read && reg.call_bounds(&s.name, tool).is_empty() {
                out.push(map.problem(
                    &at,
                    format!("`{tool}` is a {} tool without a rate limit or budget", entry.class),
                    "add `rate:` (e.g. `rate: 10/min`), or a `limits:` entry with a `rate` or `budget` that covers it, so a runaway agent cannot repeat it unbounded",
                ));
            }
        }
    }
    out
}

/// When an upstream's annotations raise a tool above its configured class: the class the
/// gateway enforces, and the annotations that raised it (as the upstream wrote them). The
/// registry's class is the floor; an upstream can raise it, never lower it.
pub fn raised_class(
    configured: ToolClass,
    definition: &serde_json::Value,
) -> Option<(ToolClass, String)> {
    let annotations = definition.get("annotations")?;
    let read_only = annotations
        .get("readOnlyHint")
        .and_then(serde_json::Value::as_bool);
    let destructive = annotations
        .get("destructiveHint")
        .and_then(serde_json::Value::as_bool);
    let raised = configured.raised_by(policy::UpstreamHints {
        read_only,
        destructive,
    });
    if raised == configured {
        return None;
    }
    let said: Vec<String> = [
        ("readOnlyHint", read_only),
        ("destructiveHint", destructive),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
    .collect();
    Some((raised, said.join(", ")))
}

/// Tools whose pinned definitions (`record`: server → tool → definition, as `portcullis pin`
/// keeps them) raise their class above the config's: the config would say less than is enforced.
pub fn raised_by_definitions(
    reg: &Registry,
    record: &std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, serde_json::Value>,
    >,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    for s in &reg.servers {
        let Some(defs) = record.get(&s.name) else {
            continue;
        };
        for (tool, entry) in &s.tools {
            let Some((raised, said)) = defs.get(tool).and_then(|d| raised_class(entry.class, d))
            else {
                continue;
            };
            out.push(reg.source.problem(
                &child(&child(&child("servers", &s.name), "tools"), tool),
                format!(
                    "`{tool}` is configured `class: {}`, but its pinned definition says `{said}`: the gateway enforces it as {raised}",
                    entry.class
                ),
                &format!(
                    "set `class: {raised}` so the config says what is enforced (annotations can raise a class, never lower it)"
                ),
            ));
        }
    }
    out
}

/// Options that make common programs (git, ssh, node, interpreters) run a command or load
/// code named by their value.
const COMMAND_OPTIONS: &[&str] = &[
    "--upload-pack",
    "--receive-pack",
    "--exec",
    "--eval",
    "--require",
    "--import",
    "--loader",
    "--config-env",
    "proxycommand",
    "localcommand",
    "core.sshcommand",
    "core.pager",
    "ld_preload",
];

/// Why a stdio argument deserves a reviewer's eye: shell syntax (it reaches the program
/// literally, so it was written for a shell or is an injection), or an option that runs a
/// command.
fn risky_argument(arg: &str) -> Option<String> {
    if let Some(c) = arg
        .chars()
        .find(|c| matches!(c, ';' | '|' | '&' | '`' | '$' | '>' | '<' | '\n' | '\r'))
    {
        return Some(format!(
            "holds the shell metacharacter `{}`",
            c.escape_default()
        ));
    }
    let lower = arg.to_ascii_lowercase();
    COMMAND_OPTIONS
        .iter()
        .find(|o| lower.starts_with(**o) || lower.contains(&format!("{}=", o)))
        .map(|o| format!("passes `{o}`, an option that makes a program run a command"))
}

/// `text` with server `server`'s `pin:` block replaced by (or, if absent, given) `pins`. The
/// rest of the file, comments included, is kept byte for byte. The result is checked to load.
pub fn write_pins(
    file: &str,
    text: &str,
    server: &str,
    pins: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    let (_, map) = crate::source_map::parse(file, text).map_err(|e| e.to_string())?;
    let base = child("servers", server);
    let pin_path = child(&base, "pin");
    let tools_path = child(&base, "tools");
    if !map.contains(&tools_path) {
        return Err(format!("server `{server}` has no `tools` in {file}"));
    }
    let server_line = map.key(&base).line;
    let tools = map.key(&tools_path);
    if tools.line == server_line {
        return Err(format!(
            "server `{server}` is written on one line; write it in block style (one key per line) so its pins can be written"
        ));
    }
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let indent = tools.column.saturating_sub(1);
    let pad = " ".repeat(indent);
    let mut block = format!("{pad}pin:");
    if pins.is_empty() {
        block.push_str(" {}\n");
    } else {
        block.push('\n');
        for (tool, digest) in pins {
            // Allowlisted names are `[A-Za-z0-9_-]`; anything else is quoted.
            let plain = tool
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tool
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
            let key = match plain {
                true => tool.clone(),
                false => serde_json::to_string(tool).unwrap_or_default(),
            };
            block.push_str(&format!("{pad}  {key}: \"{digest}\"\n"));
        }
    }
    let indent_of = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let at = if map.contains(&pin_path) {
        let start = map.key(&pin_path).line.saturating_sub(1);
        let own = lines.get(start).map_or(0, |l| indent_of(l));
        // The block runs to its last line indented deeper than `pin:`; blank and comment lines
        // inside it go with it, those after it stay with what follows.
        let mut end = start + 1;
        let mut i = start + 1;
        while let Some(l) = lines.get(i) {
            let t = l.trim();
            if !t.is_empty() && !t.starts_with('#') {
                if indent_of(l) <= own {
                    break;
                }
                end = i + 1;
            }
            i += 1;
        }
        lines.drain(start..end);
        start
    } else {
        server_line
    };
    if at > lines.len() {
        return Err(format!("cannot place the pins of `{server}` in {file}"));
    }
    if at == lines.len()
        && let Some(l) = lines.last_mut()
        && !l.ends_with('\n')
    {
        l.push('\n');
    }
    lines.insert(at, block);
    let out: String = lines.concat();
    crate::load_str(file, &out).map_err(|e| format!("the pinned config would not load:\n{e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
