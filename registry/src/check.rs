//! The CI gate (`portcullis check`): what a config must have before it ships, beyond loading.
//!
//! Every server has a tool allowlist (loading already requires it), a pinned source (an HTTP
//! server's allowlisted tools each pinned; a stdio server's artifact pinned by digest), a grant
//! that reaches each allowlisted tool, and a rate limit on each write and destructive tool. No
//! secret is inline (loading already refuses one).

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
                            "run `portcullis pin --config FILE` to pin it",
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
            if entry.class != ToolClass::Read && entry.rate.is_none() {
                out.push(map.problem(
                    &at,
                    format!("`{tool}` is a {} tool without a rate limit", entry.class),
                    "add `rate:` (e.g. `rate: 10/min`) so a runaway agent cannot repeat it unbounded",
                ));
            }
        }
    }
    out
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
