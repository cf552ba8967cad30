use crate::load_str;
use crate::readiness::{Gate, is_generic_tool_name, readiness};

fn score(text: &str) -> Vec<crate::readiness::ServerReadiness> {
    readiness(&load_str("t.yaml", text).unwrap())
}

fn dim<'a>(
    r: &'a crate::readiness::ServerReadiness,
    key: &str,
) -> &'a crate::readiness::DimensionScore {
    r.dimensions.iter().find(|d| d.key == key).unwrap()
}

const READS_ONLY: &str = "servers:\n  docs:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      get_note: { class: read }\n    resources: [\"note://1\"]\ngrants:\n  key:*: [\"docs/*\"]\n";

#[test]
fn a_builtin_read_only_server_may_serve_production_reads() {
    let r = &score(READS_ONLY)[0];
    assert_eq!(r.dimensions.len(), 6);
    assert_eq!(dim(r, "maintainer_reliability").score, 3);
    assert_eq!(dim(r, "tool_boundaries").score, 3);
    assert_eq!(dim(r, "verification").score, 3);
    assert_eq!(r.total, r.dimensions.iter().map(|d| d.score).sum::<u8>());
    assert_eq!(r.total, 15, "{r:#?}");
    // Nothing to hold for approval: the band stands.
    assert_eq!(r.gate, Gate::WritesWithApproval);
}

#[test]
fn an_unpinned_command_blocks_whatever_the_total() {
    let r = &score(
        "profile: development\nservers:\n  files:\n    command: { program: /usr/bin/files-mcp }\n    tools:\n      read_file: { class: read }\n",
    )[0];
    let m = dim(r, "maintainer_reliability");
    assert_eq!(m.score, 0);
    assert_eq!(m.evidence[0].path, "servers.files.command");
    assert_eq!(m.evidence[0].location.line, 4);
    assert_eq!(r.gate, Gate::Block);
    assert!(r.gate_reason.contains("Maintainer reliability"));
}

#[test]
fn a_default_grant_reaching_writes_lowers_the_permission_model() {
    let r = &score(
        "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      delete_note: { class: destructive }\ngrants:\n  team:*: [\"notes/*\"]\n",
    )[0];
    let p = dim(r, "permission_model");
    assert_eq!(p.score, 1);
    assert!(p.why.contains("team:*"));
    assert_eq!(p.evidence[0].location.line, 8);
    let narrow = &score(
        "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      delete_note: { class: destructive }\ngrants:\n  team:*: [\"notes/search_notes\"]\n  team:ops: [\"notes/*\"]\n",
    )[0];
    assert_eq!(dim(narrow, "permission_model").score, 2);
}

#[test]
fn writes_held_for_approval_reach_writes_with_approval_and_unheld_unlimited_writes_stop_at_read_only()
 {
    // No `rate`, but every write waits for a single-use approval bound to its arguments.
    let held = "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      create_note: { class: write, arguments: { type: object } }\n";
    let r = &score(held)[0];
    let e = dim(r, "error_recovery");
    assert_eq!(e.score, 2, "{e:#?}");
    assert!(e.why.contains("held for a human's approval"), "{}", e.why);
    assert!(e.evidence.iter().any(|c| c.path == "approvals"), "{e:#?}");
    assert_eq!(r.total, 14, "{r:#?}");
    assert_eq!(r.gate, Gate::WritesWithApproval);
    // The same writes not held (only destructive calls wait): nothing bounds a retry.
    let unheld = format!("{held}approvals: {{ required_from: destructive }}\n");
    let r = &score(&unheld)[0];
    assert_eq!(dim(r, "error_recovery").score, 1);
    assert!(dim(r, "error_recovery").why.contains("rate limit"));
    assert_eq!(r.total, 13, "{r:#?}");
    assert_eq!(r.gate, Gate::ReadOnly);
}

#[test]
fn writes_not_held_for_approval_cap_the_gate_at_read_only() {
    let with_writes = |approvals: &str| {
        let text = format!(
            "servers:\n  notes:\n    builtin: notes\n    tools:\n      create_note: {{ class: write }}\n{approvals}"
        );
        let reg = load_str("t.yaml", &text).unwrap();
        // Scores of a server that earned 14: the band allows writes with approval.
        let mut dims = crate::readiness::server_readiness(&reg, &reg.servers[0]).dimensions;
        for (d, s) in dims.iter_mut().zip([3, 2, 2, 2, 2, 3]) {
            d.score = s;
        }
        super::gate(&reg, &reg.servers[0], &dims, 14)
    };
    assert_eq!(with_writes("").0, Gate::WritesWithApproval);
    let (gate, why) = with_writes("approvals: { required_from: none }\n");
    assert_eq!(gate, Gate::ReadOnly);
    assert!(why.contains("approvals.required_from"));
    let (gate, _) = with_writes("approvals: { required_from: destructive }\n");
    assert_eq!(gate, Gate::ReadOnly);
}

#[test]
fn generic_verbs_and_whole_scheme_resources_are_flagged() {
    assert!(is_generic_tool_name("run_command"));
    assert!(is_generic_tool_name("execute_sql"));
    assert!(is_generic_tool_name("Shell"));
    assert!(!is_generic_tool_name("search_notes"));
    assert!(!is_generic_tool_name("executive_summary"));
    let r = &score(
        "servers:\n  db:\n    url: https://notes.example.com/mcp\n    tools:\n      execute_sql: { class: write }\n    resources: [\"db://*\"]\n",
    )[0];
    assert_eq!(dim(r, "tool_boundaries").score, 1);
    assert_eq!(
        dim(r, "tool_boundaries").evidence[0].path,
        "servers.db.tools.execute_sql"
    );
    assert_eq!(dim(r, "sensitive_data").score, 1);
    assert_eq!(dim(r, "maintainer_reliability").score, 1);
}

#[test]
fn a_default_grant_whose_deny_covers_the_writes_is_not_broad() {
    let r = &score(
        "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      delete_note: { class: destructive }\ngrants:\n  team:*: { allow: [\"notes/*\"], deny: [\"notes/delete_note\"] }\n",
    )[0];
    assert_eq!(dim(r, "permission_model").score, 2, "{r:#?}");
}

#[test]
fn rate_limited_writes_bound_retries() {
    let text = "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      create_note: { class: write, rate: 10/min }\n      delete_note: { class: destructive, rate: 5/min }\n";
    let r = &score(text)[0];
    let e = dim(r, "error_recovery");
    assert_eq!(e.score, 2, "{e:#?}");
    assert!(
        e.why.contains("each bounded by a rate or a budget"),
        "{}",
        e.why
    );
    assert!(
        e.evidence
            .iter()
            .any(|c| c.path == "servers.notes.tools.delete_note.rate" && c.location.line == 7),
        "{e:#?}"
    );
    // One write without a rate is named, and the score stays 1.
    let partly = format!(
        "{}approvals: {{ required_from: none }}\n",
        text.replace(", rate: 5/min", "")
    );
    let e = dim(&score(&partly)[0], "error_recovery").clone();
    assert_eq!(e.score, 1);
    assert!(
        e.why.contains("delete_note") && !e.why.contains("create_note"),
        "{}",
        e.why
    );
    // A `limits:` budget covering the unlimited write bounds it too, and is cited.
    let budgeted = format!(
        "{partly}limits:\n  - {{ match: \"key:*\", server: notes, tool: delete_note, budget: {{ units: 50, per: day }} }}\n"
    );
    let e = dim(&score(&budgeted)[0], "error_recovery").clone();
    assert_eq!(e.score, 2, "{e:#?}");
    assert!(e.evidence.iter().any(|c| c.path == "limits[0]"), "{e:#?}");
}

#[test]
fn pinned_http_and_stdio_servers_are_credited_for_their_pins() {
    let http = format!(
        "servers:\n  web:\n    url: https://tools.example.com/mcp\n    tools:\n      fetch_page: {{ class: read }}\n    pin:\n      fetch_page: \"sha256:{}\"\n",
        "ab".repeat(32)
    );
    let m = dim(&score(&http)[0], "maintainer_reliability").clone();
    assert_eq!(m.score, 2, "{m:#?}");
    assert!(m.why.contains("fingerprinted"), "{}", m.why);
    assert!(!m.why.contains("not fingerprinted"), "{}", m.why);
    assert_eq!(m.evidence[0].path, "servers.web.pin");
    let npm = "servers:\n  memory:\n    command:\n      package: \"npm:@modelcontextprotocol/server-memory@2026.8.31\"\n      integrity: \"sha512-ljj/3S4aGjxdNSQWw6gucKKGnTLdBPWxzapyY/MT2tOVyZwvxChvevXSLPwx59nKJAlVpUVW+cOlnVRXRwiqMQ==\"\n    tools:\n      read_graph: { class: read }\n";
    let r = &score(npm)[0];
    let m = dim(r, "maintainer_reliability");
    assert_eq!(m.score, 3, "{m:#?}");
    assert!(!m.why.contains("no version or digest"), "{}", m.why);
    assert_ne!(r.gate, Gate::Block, "{r:#?}");
    let local = format!(
        "servers:\n  files:\n    command: {{ program: /usr/bin/files-mcp, integrity: \"sha256:{}\" }}\n    tools:\n      read_file: {{ class: read }}\n",
        "cd".repeat(32)
    );
    assert_eq!(dim(&score(&local)[0], "maintainer_reliability").score, 2);
}

#[test]
fn error_recovery_reads_deadlines_bounds_and_the_breaker() {
    let on = "servers:\n  notes:\n    builtin: notes\n    max_timeout: 1m\n    max_response: 1MiB\n    breaker: { failures: 3, cooldown: 10s }\n    tools:\n      search_notes: { class: read, timeout: 5s }\n";
    let e = dim(&score(on)[0], "error_recovery").clone();
    assert_eq!(e.score, 2, "{e:#?}");
    for said in [
        "per-tool timeouts: search_notes 5 s",
        "bounded at 1048576 bytes",
        "opens after 3 failures in a row and refuses calls for 10 s",
    ] {
        assert!(e.why.contains(said), "{said}: {}", e.why);
    }
    let breaker = e
        .evidence
        .iter()
        .find(|c| c.path == "servers.notes.breaker");
    assert!(breaker.is_some_and(|c| c.written), "{e:#?}");
    // Turned off, it is said so, and the dimension is not scored as if it were on.
    let off = "servers:\n  notes:\n    builtin: notes\n    breaker: off\n    tools:\n      search_notes: { class: read }\n";
    let e = dim(&score(off)[0], "error_recovery").clone();
    assert_eq!(e.score, 1, "{e:#?}");
    assert!(e.why.contains("the circuit breaker is off"), "{}", e.why);
}

#[test]
fn error_recovery_names_several_endpoints_and_their_retries() {
    let text = "servers:\n  notes:\n    url: [https://a.example.com/mcp, https://b.example.com/mcp]\n    retry_budget: 10%\n    pin: { search: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\" }\n    tools:\n      search: { class: read }\n";
    let e = dim(&score(text)[0], "error_recovery").clone();
    assert!(e.why.contains("2 endpoints (least_requests), reads retried on another endpoint within 10% of calls, writes only when the request never left"), "{}", e.why);
    assert!(
        e.evidence
            .iter()
            .any(|c| c.path == "servers.notes.url" && c.written),
        "{e:#?}"
    );
    assert!(
        e.evidence
            .iter()
            .any(|c| c.path == "servers.notes.retry_budget" && c.written),
        "{e:#?}"
    );
}
