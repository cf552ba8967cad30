//! ARCHITECTURE.md's diagram of a tool call lists the steps exactly as `call/mod.rs` runs them.

use std::path::Path;

/// The steps `tool_steps` (and `tool`) call, in order, as `module::function` names.
fn steps_in_code() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("src/call/mod.rs")).unwrap();
    let body = text
        .split("async fn tool_steps(")
        .nth(1)
        .and_then(|b| b.split("\n}\n").next())
        .unwrap();
    let steps = [
        "resolve",
        "decide",
        "input",
        "levers",
        "arguments",
        "admit",
        "hold",
        "recheck",
        "record",
        "credential",
        "forward",
    ];
    let mut out = Vec::new();
    for line in body.lines().map(str::trim_start) {
        let line = line
            .trim_start_matches("let ")
            .trim_start_matches("running = ")
            .trim_start_matches("token = ");
        for step in steps {
            let call = line.split_once(&format!("{step}::")).map(|(_, rest)| rest);
            if let Some(rest) = call {
                let function: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(format!("{step}::{function}"));
            }
        }
    }
    out.push("result::tool".into());
    out
}

/// The words of the diagram's `tools/call:` lines, in order.
fn steps_in_diagram() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("../ARCHITECTURE.md")).unwrap();
    let start = text.find("  tools/call:").unwrap();
    let end = text[start..].find("  resources, prompts").unwrap() + start;
    text[start..end]
        .replace("tools/call:", "")
        .replace("──▶ upstream (rmcp client) ──▶ server", "")
        .split('▸')
        .map(|s| {
            s.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn the_diagram_of_a_tool_call_is_the_order_of_call_mod_rs() {
    let code = steps_in_code();
    let named: Vec<&str> = code
        .iter()
        .map(|s| match s.as_str() {
            "resolve::tool" => "resolve",
            "decide::tool" => "decide",
            "input::tool" => "input (rounds)",
            "levers::kill" => "kill switch",
            "arguments::check" => "arguments",
            "admit::limits" => "admit (limits)",
            "levers::mode" => "mode",
            "admit::track" => "track",
            "hold::task" => "task",
            "hold::approval" => "hold (approval)",
            "recheck::tool" => "recheck",
            "record::tool" => "record (audit before action)",
            "credential::mint" => "credential",
            "forward::tool" => "forward",
            "input::seal" => "input (sealed)",
            "result::tool" => "result",
            other => panic!("a step the diagram does not name: {other}"),
        })
        .collect();
    assert_eq!(named.len(), 17, "{code:?}");
    assert_eq!(steps_in_diagram(), named);
}
