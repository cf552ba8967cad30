//! `portcullis pin` and `portcullis check`: writing tool pins, and the CI gate.
//!
//! `pin` connects to every upstream the config reaches over HTTP or stdio, reads the
//! definitions of the allowlisted tools, shows what changed since the last pin (field by field
//! when the previous definitions are on record, in `<config>.pins.json`), refuses definitions
//! carrying hidden characters, holds back definitions with instruction-like text until the
//! operator confirms them (`--confirm SERVER/TOOL`), and writes each server's `pin:` into the
//! config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;

use crate::command::{EX_CONFIG, EX_SOFTWARE};
use crate::upstream::{UpstreamSetup, Upstreams};

/// `dir` as an absolute path (relative to the gateway's working directory), so a child's own
/// `cwd` never changes which cached artifact runs.
pub(crate) fn absolute(dir: &str) -> PathBuf {
    let p = PathBuf::from(dir);
    match (p.is_absolute(), std::env::current_dir()) {
        (false, Ok(here)) => here.join(p),
        _ => p,
    }
}

/// The file that keeps the pinned definitions next to the config, for readable diffs.
fn record_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(".pins.json");
    config.with_file_name(name)
}

/// What one allowlisted tool's pin becomes.
enum Outcome {
    Same,
    New(String),
    Changed { old: String, new: String },
    Refused(String),
    Missing,
}

pub(crate) async fn pin(config: &Path, confirmed: &[String]) -> ExitCode {
    let reg = match crate::command::load(config) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let file = config.display().to_string();
    let mut text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("portcullis: cannot read {file}: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let secrets = match crate::secrets::Secrets::new(reg.settings.vault.as_ref()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let setup = UpstreamSetup {
        minter: Arc::new(crate::credentials::Minter::new(secrets.clone())),
        secrets,
        cache: absolute(&reg.settings.cache_dir),
        profile: reg.settings.profile,
        audit: None,
    };
    let record_file = record_path(config);
    let mut record: BTreeMap<String, BTreeMap<String, Value>> = std::fs::read(&record_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut failed = false;
    let mut changed = false;
    for server in &reg.servers {
        if matches!(server.source, registry::ServerSource::Builtin(_)) {
            continue;
        }
        let up = Upstreams::standalone(server, &setup);
        let listed = match crate::upstream::fetch_definitions(&up).await {
            Ok(l) => l,
            Err(e) => {
                println!(
                    "{}: cannot connect: {e:#}; pins left as they are",
                    server.name
                );
                failed = true;
                continue;
            }
        };
        let old = server.pins.clone().unwrap_or_default();
        let before = record.remove(&server.name).unwrap_or_default();
        let mut defs: BTreeMap<String, Value> = BTreeMap::new();
        let mut pins = BTreeMap::new();
        let mut lines = Vec::new();
        let twice = crate::upstream::listed_twice(server, &listed);
        for tool in server.tools.keys() {
            let def = listed
                .iter()
                .find(|t| t.name == tool.as_str())
                .and_then(|t| serde_json::to_value(t).ok());
            let outcome = match &def {
                None => Outcome::Missing,
                // The gateway holds such a name back whatever its pin says.
                Some(_) if twice.iter().any(|(name, _)| name == tool) => Outcome::Refused(format!(
                    "{}; the gateway will not serve it until the upstream lists it once",
                    crate::upstream::LISTED_TWICE
                )),
                Some(d) => match registry::hidden_in_definition(d) {
                    Some((at, why)) => Outcome::Refused(format!(
                        "the definition carries {why} at `{}`",
                        if at.is_empty() { "/" } else { &at }
                    )),
                    // Confirmed now, or before: the pin in force is this very definition.
                    None if !confirmed.contains(&format!("{}/{tool}", server.name))
                        && old.get(tool) != Some(&registry::tool_pin(d))
                        && registry::instructions_in_definition(d).is_some() =>
                    {
                        let (at, what) =
                            registry::instructions_in_definition(d).unwrap_or_default();
                        Outcome::Refused(format!(
                            "the definition carries instruction-like text (`{what}`) at `{}`:\n      {}\n      read it; if it is benign, run again with `--confirm {}/{tool}`",
                            if at.is_empty() { "/" } else { &at },
                            shown_at(d, &at),
                            server.name
                        ))
                    }
                    None => {
                        let new = registry::tool_pin(d);
                        match old.get(tool) {
                            Some(o) if *o == new => Outcome::Same,
                            Some(o) => Outcome::Changed {
                                old: o.clone(),
                                new,
                            },
                            None => Outcome::New(new),
                        }
                    }
                },
            };
            if let (Some(d), Some(entry)) = (&def, server.tools.get(tool))
                && let Some((raised, said)) = registry::raised_class(entry.class, d)
            {
                lines.push(format!(
                    "  ^ {tool}: configured `class: {}`, but the upstream's definition says `{said}`: enforced as {raised}; set `class: {raised}` in the config",
                    entry.class
                ));
            }
            match outcome {
                Outcome::Same => {
                    pins.insert(tool.clone(), old.get(tool).cloned().unwrap_or_default());
                }
                Outcome::New(new) => {
                    lines.push(format!("  + {tool}: {new}"));
                    pins.insert(tool.clone(), new);
                }
                Outcome::Changed { old: o, new } => {
                    lines.push(format!("  ~ {tool}: {o} -> {new}"));
                    if let (Some(prev), Some(d)) = (before.get(tool), &def) {
                        lines.extend(field_diff(prev, d));
                    } else {
                        lines.push("      (the previous definition is not on record; only digests can be compared)".into());
                    }
                    pins.insert(tool.clone(), new);
                }
                Outcome::Refused(why) => {
                    lines.push(format!("  ! {tool}: not pinned: {why}"));
                    failed = true;
                    // An existing pin stays (the tool stays quarantined until the upstream is
                    // fixed or the operator confirms), and so does the definition on record for
                    // it, so the next run still shows what changed.
                    if let Some(o) = old.get(tool) {
                        pins.insert(tool.clone(), o.clone());
                    }
                    if let Some(prev) = before.get(tool) {
                        defs.insert(tool.clone(), prev.clone());
                    }
                    continue;
                }
                Outcome::Missing => {
                    lines.push(format!(
                        "  ? {tool}: allowlisted, but the upstream does not offer it (not even to a client declaring sampling, elicitation and roots); not pinned"
                    ));
                }
            }
            if let Some(d) = def
                && pins.contains_key(tool)
            {
                defs.insert(tool.clone(), d);
            }
        }
        for gone in old.keys().filter(|t| !pins.contains_key(*t)) {
            lines.push(format!("  - {gone}: pin removed"));
        }
        record.insert(server.name.clone(), defs);
        if lines.is_empty() {
            println!("{}: {} tool(s) pinned, unchanged", server.name, pins.len());
            continue;
        }
        println!("{}:", server.name);
        for l in lines {
            println!("{l}");
        }
        if server.pins.as_ref() == Some(&pins) {
            continue;
        }
        match registry::write_pins(&file, &text, &server.name, &pins) {
            Ok(t) => {
                text = t;
                changed = true;
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        }
    }
    if changed {
        let tmp = config.with_extension("pin-tmp");
        let written = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, config));
        if let Err(e) = written {
            eprintln!("portcullis: cannot write {file}: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
        println!("wrote the pins to {file}");
    }
    if let Ok(bytes) = serde_json::to_vec_pretty(&record) {
        let _ = std::fs::write(&record_file, bytes);
    }
    match failed {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    }
}

/// The string at JSON pointer `at` in `def`, for the operator to read.
fn shown_at(def: &Value, at: &str) -> String {
    match def.pointer(at) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// The fields of a tool definition that changed, as `-`/`+` lines.
fn field_diff(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in [
        "title",
        "description",
        "inputSchema",
        "outputSchema",
        "annotations",
    ] {
        let a = old.get(f).filter(|v| !v.is_null());
        let b = new.get(f).filter(|v| !v.is_null());
        if a == b {
            continue;
        }
        let show = |v: Option<&Value>| match v {
            None => "(absent)".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        out.push(format!("      {f}:"));
        for l in show(a).lines() {
            out.push(format!("      - {l}"));
        }
        for l in show(b).lines() {
            out.push(format!("      + {l}"));
        }
    }
    out
}

/// `portcullis check`: exit 1 listing every problem, unless the config is ready to ship.
pub(crate) fn check(config: &Path, explain: bool) -> ExitCode {
    let reg = match registry::load_file(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut problems = registry::check(&reg);
    // The definitions `pin` last recorded say what the upstream claims about each tool. A record
    // that exists but cannot be read is a problem of its own: the check would be skipped silently.
    let record_file = record_path(config);
    let mut unreadable = 0;
    let record: BTreeMap<String, BTreeMap<String, Value>> = match std::fs::read(&record_file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            println!(
                "{}: cannot be read ({e}): the pinned definitions' annotations were not checked\n  fix: run `portcullis pin --config {}` to write it again",
                record_file.display(),
                config.display()
            );
            unreadable = 1;
            BTreeMap::new()
        }
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            println!(
                "{}: is not a record `portcullis pin` wrote ({e}): the pinned definitions' annotations were not checked\n  fix: run `portcullis pin --config {}` to write it again",
                record_file.display(),
                config.display()
            );
            unreadable = 1;
            BTreeMap::new()
        }),
    };
    problems.extend(registry::raised_by_definitions(&reg, &record));
    for p in &problems {
        println!("{p}");
    }
    if explain {
        for r in registry::readiness(&reg) {
            println!(
                "\n{}: {}/18, gate: {} ({})",
                r.server,
                r.total,
                r.gate.title(),
                r.gate_reason
            );
            for d in &r.dimensions {
                println!("  {:<22} {}/3  {}", d.title, d.score, d.why);
            }
        }
    }
    match problems.is_empty() && unreadable == 0 {
        true => {
            println!(
                "{}: ready: every server is allowlisted, pinned, granted and limited; no inline secret",
                config.display()
            );
            ExitCode::SUCCESS
        }
        false => {
            eprintln!("{} problem(s)", problems.len() + unreadable);
            ExitCode::from(1)
        }
    }
}
