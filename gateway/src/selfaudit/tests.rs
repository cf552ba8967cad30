//! Honesty tests: each unsafe setting the gateway permits is flipped in an otherwise clean
//! production config, and the report must move the right dimension off green and cite the line.

use std::collections::BTreeSet;

use super::probes::{Outcome, Probes};
use super::{Cause, Report, Status, report};

/// A clean production config: every finding it leaves is a control this build lacks.
const CLEAN: &str = "\
profile: production
listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:8081
identity:
  require: [org]
  oidc:
    - issuer: https://idp.example.com
      claims: { org: org, team: groups }
servers:
  notes:
    builtin: notes
    tools:
      search_notes: { class: read }
      create_note: { class: write, rate: 10/min, arguments: { type: object } }
    resources: [\"note://1\"]
grants:
  org:acme: [\"notes/search_notes\", \"notes/create_note\"]
audit:
  sinks:
    - { type: file, path: audit.jsonl }
    - { type: store }
  redact_key: env:PORTCULLIS_REDACT_KEY
telemetry:
  otlp: { endpoint: \"http://127.0.0.1:4318\" }
limits:
  - { match: \"org:*\", concurrency: 8, budget: { units: 500, per: day } }
";

async fn audit_of(text: &str) -> Report {
    let reg = registry::load_str("t.yaml", text).unwrap();
    report(&reg, None).await
}

/// `CLEAN` with the line starting `from` replaced by `to` (which may span lines).
fn flip(from: &str, to: &str) -> String {
    let mut hit = 0;
    let out: Vec<String> = CLEAN
        .lines()
        .map(|l| {
            if l.starts_with(from) {
                hit += 1;
                to.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_eq!(hit, 1, "`{from}` must match one line");
    out.join("\n") + "\n"
}

fn dimension_status(r: &Report, key: &str) -> Status {
    r.dimensions.iter().find(|d| d.key == key).unwrap().status
}

fn finding<'a>(r: &'a Report, id: &str) -> &'a super::Finding {
    r.findings
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no finding {id}"))
}

/// The evidence rows a finding cites, as `source: observed`.
fn cited(r: &Report, id: &str) -> Vec<String> {
    let f = finding(r, id);
    f.evidence
        .iter()
        .map(|e| {
            let row = r.evidence.iter().find(|x| &x.id == e).unwrap();
            format!("{}: {}", row.source, row.observed)
        })
        .collect()
}

fn gaps(r: &Report) -> BTreeSet<&'static str> {
    r.findings
        .iter()
        .filter(|f| f.status != Status::Pass)
        .map(|f| f.id)
        .collect()
}

/// Asserts `id` is a config gap citing `needle` (a `file:line:col `key`` source), and that
/// `dimension` is no longer green.
fn assert_flagged(r: &Report, id: &str, dimension: &str, needle: &str) {
    let f = finding(r, id);
    assert_ne!(f.status, Status::Pass, "{id} should be a gap: {f:#?}");
    assert_eq!(f.cause, Some(Cause::Config), "{id}");
    assert_ne!(dimension_status(r, dimension), Status::Pass, "{dimension}");
    let rows = cited(r, id);
    assert!(
        rows.iter().any(|row| row.contains(needle)),
        "{id} should cite `{needle}`: {rows:#?}"
    );
}

#[tokio::test]
async fn a_clean_production_config_has_no_false_findings() {
    let r = audit_of(CLEAN).await;
    // Only controls this build does not have are gaps, and one process on SQLite (a team's
    // deployment, which does not scale out); nothing else about the config is.
    for f in r.findings.iter().filter(|f| f.status != Status::Pass) {
        let cause = match f.id {
            "ops.replicas" => Cause::Config,
            _ => Cause::Unbuilt,
        };
        assert_eq!(f.cause, Some(cause), "{f:#?}");
    }
    assert_eq!(
        gaps(&r),
        BTreeSet::from(["id.operator_scope", "ops.replicas"])
    );
    // Rates on every write tool and a budget per team: calls are bounded and spend is capped.
    for key in ["rbac", "fail_closed", "observability", "cost"] {
        assert_eq!(dimension_status(&r, key), Status::Pass, "{key}");
    }
    assert_eq!(r.verdict_key, "production_ready_with_caveats");
    assert_eq!(r.mode, "static");
    assert_eq!(r.profile, "production");
    // A checklist area is short only where a finding is: operators are not scoped by org, so
    // tenant isolation holds for callers only.
    let short: Vec<&str> = r
        .checklist
        .areas
        .iter()
        .filter(|a| a.score < 2)
        .map(|a| a.key)
        .collect();
    assert_eq!(short, vec!["tenant_isolation"], "{:#?}", r.checklist);
    let tenancy = r
        .checklist
        .areas
        .iter()
        .find(|a| a.key == "tenant_isolation")
        .unwrap();
    assert!(
        tenancy.why.contains("operator views are not scoped by org"),
        "{tenancy:?}"
    );
    assert_eq!(r.checklist.score, 19);
    assert_eq!(r.checklist.band, "production_candidate");
    let gate = &r.servers[0];
    // Its write tool is rate-limited and held for approval.
    assert_eq!((gate.server.as_str(), gate.score), ("notes", 14));
    assert_eq!(gate.gate, "writes_with_approval");
}

#[tokio::test]
async fn every_colour_traces_to_evidence() {
    for text in [CLEAN.to_owned(), flip("profile:", "profile: development")] {
        let r = audit_of(&text).await;
        let ids: BTreeSet<&str> = r.evidence.iter().map(|e| e.id.as_str()).collect();
        for f in &r.findings {
            assert!(!f.evidence.is_empty(), "{} cites nothing", f.id);
            for e in &f.evidence {
                assert!(ids.contains(e.as_str()), "{} cites missing {e}", f.id);
            }
        }
        for d in &r.dimensions {
            assert!(!d.findings.is_empty(), "{} has no findings", d.key);
        }
        for s in &r.servers {
            for d in &s.dimensions {
                assert!(
                    !d.evidence.is_empty(),
                    "{}/{} cites nothing",
                    s.server,
                    d.key
                );
            }
        }
        let total: usize = r.counts.values().sum();
        assert_eq!(total, 7);
    }
}

#[tokio::test]
async fn development_profile_is_flagged_with_its_line() {
    let r = audit_of(&flip("profile:", "profile: development")).await;
    assert_flagged(&r, "ops.profile", "operations", "t.yaml:1:10 `profile`");
    assert_eq!(r.profile, "development");
}

#[tokio::test]
async fn no_otlp_exporter_is_flagged() {
    let text =
        flip("telemetry:", "").replace("  otlp: { endpoint: \"http://127.0.0.1:4318\" }\n", "");
    let r = audit_of(&text).await;
    assert_flagged(&r, "obs.otlp", "observability", "t.yaml `telemetry.otlp`");
    assert!(cited(&r, "obs.otlp")[0].contains("not set"));
}

#[tokio::test]
async fn a_public_admin_listener_is_flagged() {
    let r = audit_of(&flip("admin_listen:", "admin_listen: 0.0.0.0:8081")).await;
    assert_flagged(
        &r,
        "id.admin_listener",
        "identity",
        "t.yaml:3:15 `admin_listen`",
    );
    assert_eq!(finding(&r, "id.admin_listener").status, Status::Absent);
}

#[tokio::test]
async fn a_public_listener_without_tls_is_flagged() {
    let r = audit_of(&flip("listen:", "listen: 0.0.0.0:8080")).await;
    assert_flagged(&r, "id.transport", "identity", "t.yaml:2:9 `listen`");
    let https = flip(
        "listen:",
        "listen: 0.0.0.0:8080\npublic_url: https://mcp.example.com",
    );
    let r = audit_of(&https).await;
    assert_eq!(finding(&r, "id.transport").status, Status::Pass);
}

#[tokio::test]
async fn an_unpinned_stdio_server_is_flagged_and_its_gate_blocks() {
    // Production refuses it at load; development runs it, and the self-audit says so.
    let production = CLEAN.replace(
        "grants:\n",
        "  files:\n    command: { program: /usr/local/bin/files-mcp }\n    tools:\n      read_file: { class: read }\ngrants:\n",
    );
    let e = registry::load_str("t.yaml", &production)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t.yaml:17:14") && e.contains("no `integrity`"),
        "{e}"
    );
    let text = flip("profile:", "profile: development").replace(
        "grants:\n",
        "  files:\n    command: { program: /usr/local/bin/files-mcp }\n    tools:\n      read_file: { class: read }\ngrants:\n",
    );
    let r = audit_of(&text).await;
    let f = finding(&r, "onboard.stdio_pinning");
    assert_eq!((f.status, f.cause), (Status::Absent, Some(Cause::Config)));
    assert_eq!(dimension_status(&r, "onboarding"), Status::Absent);
    assert!(
        cited(&r, "onboard.stdio_pinning")[0].contains("t.yaml:17:14 `servers.files.command`"),
        "{:#?}",
        cited(&r, "onboard.stdio_pinning")
    );
    let files = r.servers.iter().find(|s| s.server == "files").unwrap();
    assert_eq!(files.gate, "block");
    let poisoning = r
        .checklist
        .areas
        .iter()
        .find(|a| a.key == "tool_poisoning")
        .unwrap();
    assert_eq!(poisoning.score, 1);
}

#[tokio::test]
async fn an_http_upstream_is_judged_by_its_pins_and_address_guard() {
    let text = CLEAN.replace(
        "grants:\n",
        "  web:\n    url: https://tools.example.com/mcp\n    tools:\n      fetch_page: { class: read }\ngrants:\n",
    );
    let r = audit_of(&text).await;
    // Unpinned: its tools are hidden, and the CI gate says so.
    assert_flagged(&r, "onboard.fingerprints", "onboarding", "`servers.web`");
    assert!(cited(&r, "onboard.fingerprints")[0].contains("every tool of this server is hidden"));
    assert_flagged(&r, "onboard.ci_gate", "onboarding", "`servers.web`");
    // No credential at all: nothing shared between callers, nothing passed on.
    assert_eq!(finding(&r, "id.token_exchange").status, Status::Pass);
    assert_eq!(finding(&r, "id.ssrf").status, Status::Pass);
    // Pinned, and granted: both findings pass.
    let pinned = text
        .replace(
            "      fetch_page: { class: read }\n",
            &format!(
                "      fetch_page: {{ class: read }}\n    pin:\n      fetch_page: \"sha256:{}\"\n",
                "ab".repeat(32)
            ),
        )
        .replace(
            "\"notes/create_note\"]",
            "\"notes/create_note\", \"web/fetch_page\"]",
        );
    let r = audit_of(&pinned).await;
    assert_eq!(finding(&r, "onboard.fingerprints").status, Status::Pass);
    assert_eq!(
        finding(&r, "onboard.ci_gate").status,
        Status::Pass,
        "{:#?}",
        cited(&r, "onboard.ci_gate")
    );
    // https to another host is not cleartext.
    assert_eq!(finding(&r, "id.transport").status, Status::Pass);
    let plain = text.replace(
        "url: https://tools.example.com/mcp",
        "url: http://10.1.2.3:9000/mcp\n    allow_private: true",
    );
    let r = audit_of(&plain).await;
    assert_flagged(&r, "id.transport", "identity", "`servers.web.url`");
    assert_flagged(&r, "id.ssrf", "identity", "`servers.web.allow_private`");
    // Without `allow_private`, the private address does not load.
    let refused = text.replace("https://tools.example.com", "http://10.1.2.3:9000");
    let e = registry::load_str("t.yaml", &refused)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`servers.web.url`") && e.contains("a private address"),
        "{e}"
    );
}

#[tokio::test]
async fn writes_without_approval_are_flagged() {
    let text = format!("{CLEAN}approvals: {{ required_from: none }}\n");
    let r = audit_of(&text).await;
    assert_flagged(
        &r,
        "rbac.approvals",
        "rbac",
        "t.yaml:27:29 `approvals.required_from`",
    );
    let area = r
        .checklist
        .areas
        .iter()
        .find(|a| a.key == "tool_approval")
        .unwrap();
    assert_eq!(area.score, 0);
    let text = format!("{CLEAN}approvals: {{ required_from: destructive }}\n");
    let r = audit_of(&text).await;
    assert_flagged(&r, "rbac.approvals", "rbac", "`approvals.required_from`");
}

#[tokio::test]
async fn a_default_grant_reaching_writes_is_flagged() {
    let r = audit_of(&CLEAN.replace(
        "  org:acme: [\"notes/search_notes\", \"notes/create_note\"]",
        "  org:acme: [\"notes/search_notes\", \"notes/create_note\"]\n  team:*: [\"notes/*\"]",
    ))
    .await;
    assert_flagged(
        &r,
        "rbac.default_grants",
        "rbac",
        "t.yaml:18:11 `grants.team:*`",
    );
}

#[tokio::test]
async fn a_generic_tool_is_flagged() {
    let r = audit_of(&flip(
        "      search_notes:",
        "      search_notes: { class: read }\n      run_command: { class: read }",
    ))
    .await;
    assert_flagged(
        &r,
        "rbac.generic_tools",
        "rbac",
        "`servers.notes.tools.run_command`",
    );
}

#[tokio::test]
async fn a_long_kill_switch_lease_is_flagged() {
    let r = audit_of(&format!("{CLEAN}kill_switch: {{ lease: 45s }}\n")).await;
    assert_flagged(&r, "fail.kill_lease", "fail_closed", "`kill_switch.lease`");
}

#[tokio::test]
async fn identity_settings_are_flagged() {
    let no_org = flip("  require: [org]", "  require: [team]");
    let r = audit_of(&no_org).await;
    assert_flagged(
        &r,
        "id.tenancy",
        "identity",
        "t.yaml:5:12 `identity.require`",
    );

    let no_key = flip("  redact_key:", "");
    let r = audit_of(&no_key).await;
    assert_flagged(&r, "id.redaction_key", "identity", "`audit.redact_key`");

    let keys_only = CLEAN.replace(
        "  oidc:\n    - issuer: https://idp.example.com\n      claims: { org: org, team: groups }\n",
        "",
    );
    let r = audit_of(&keys_only).await;
    assert_flagged(&r, "id.oidc", "identity", "`identity.oidc`");
}

#[tokio::test]
async fn an_inline_secret_is_cited_by_line_and_never_repeated() {
    let secret = "ghp_1234567890abcdefghijABCDEFGHIJ123456";
    let text = CLEAN.replace(
        "grants:\n",
        &format!(
            "  files:\n    command: {{ program: /usr/local/bin/files-mcp, args: [\"--token\", \"{secret}\"] }}\n    tools:\n      read_file: {{ class: read }}\ngrants:\n"
        ),
    );
    // The loader refuses it, naming the place and never the value.
    let e = registry::load_str("t.yaml", &text).unwrap_err().to_string();
    assert!(
        e.contains("t.yaml:17:69: `servers.files.command.args[1]`: this value looks like a secret"),
        "{e}"
    );
    assert!(!e.contains(secret), "the secret was repeated: {e}");
    // A clean config's finding cites its references.
    let r = audit_of(CLEAN).await;
    let f = finding(&r, "id.secrets");
    assert_eq!(f.status, Status::Pass);
    assert!(
        cited(&r, "id.secrets")
            .iter()
            .any(|row| row.contains("`audit.redact_key`")
                && row.contains("env:PORTCULLIS_REDACT_KEY")),
        "{:#?}",
        cited(&r, "id.secrets")
    );
}

#[tokio::test]
async fn a_probe_that_sees_an_allow_turns_fail_closed_red() {
    let reg = registry::load_str("t.yaml", CLEAN).unwrap();
    let mut probes: Probes = super::probes::run(&reg, None).await;
    assert!(probes.store_error.ok && probes.faulted_level.ok && probes.panic_guard.ok);
    probes.store_error = Outcome {
        ok: false,
        observed: "the caller was allowed".into(),
    };
    let mut ix = super::checks::Index::default();
    let findings = super::checks::findings(&reg, &probes, &mut ix);
    let servers = super::checks::server_gates(&reg, &mut ix);
    let r = super::assemble::assemble(&reg, false, findings, servers, ix);
    let f = finding(&r, "fail.store_error");
    assert_eq!(
        (f.status, f.severity),
        (Status::Absent, super::Severity::Critical)
    );
    assert_eq!(dimension_status(&r, "fail_closed"), Status::Absent);
    assert_eq!(r.top_risks[0].finding, "fail.store_error");
    let area = r
        .checklist
        .areas
        .iter()
        .find(|a| a.key == "fail_closed")
        .unwrap();
    assert_eq!(area.score, 0);
}

#[tokio::test]
async fn offline_fingerprint_checks_are_static_only() {
    let text = CLEAN.replace(
        "servers:\n",
        "servers:\n  web:\n    url: https://web.example.com/mcp\n    tools: { fetch: { class: read } }\n    pin: { fetch: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\" }\n",
    );
    let r = audit_of(&text).await;
    let f = finding(&r, "onboard.fingerprints");
    assert!(f.static_only, "{f:?}");
    assert!(
        r.evidence.iter().any(|e| e.source
            == "probe: upstream tool definitions against their pins"
            && e.static_only),
        "{:?}",
        r.evidence
    );
}

#[tokio::test]
async fn offline_reports_mark_live_checks_static_only() {
    let r = audit_of(CLEAN).await;
    for id in [
        "fail.audit",
        "fail.kill_lease",
        "ops.kill_switch",
        "ops.replicas",
    ] {
        assert!(finding(&r, id).static_only, "{id}");
    }
    // Probes of the code itself run offline too.
    assert!(!finding(&r, "fail.store_error").static_only);
    let md = super::markdown(&r);
    assert!(md.contains("static-only"));
    assert!(md.contains("## 03 Scored gap matrix"));
    let html = super::html(&r);
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script"));
    assert!(!html.contains("src=\"http"));
    assert!(!html.contains("href=\"http"));
}

mod cost;
mod observe;
mod shape;

/// The report is the table: each finding comes from the row of its id, rows are unique and
/// ordered by dimension, every dimension has rows, and findings keep the table's order.
#[tokio::test]
async fn every_finding_comes_from_its_row_of_the_table() {
    let rules = super::checks::RULES;
    let ids: BTreeSet<&str> = rules.iter().map(|r| r.id).collect();
    assert_eq!(
        ids.len(),
        rules.len(),
        "a check id appears twice in the table"
    );
    assert!(rules.windows(2).all(|w| w[0].dimension <= w[1].dimension));
    for d in 1..=7u8 {
        assert!(
            rules.iter().any(|r| r.dimension == d),
            "dimension {d} has no rule"
        );
    }
    let generic = flip(
        "      search_notes:",
        "      run_command: { class: read }\n      search_notes: { class: read }",
    );
    for text in [CLEAN.to_string(), generic] {
        let r = audit_of(&text).await;
        let mut last = 0;
        for f in &r.findings {
            let at = rules.iter().position(|row| row.id == f.id);
            let at = at.unwrap_or_else(|| panic!("{} is in no row of the table", f.id));
            assert_eq!(rules[at].dimension, f.dimension, "{}", f.id);
            assert!(at >= last, "{} is out of the table's order", f.id);
            last = at;
        }
    }
}

#[tokio::test]
async fn a_postgres_store_passes_replicas_only_over_a_verified_connection() {
    let on = |url: &str| {
        flip(
            "listen:",
            &format!("listen: 127.0.0.1:8080\nstore: {url}\nstore_password: env:PG"),
        )
    };
    let verified = audit_of(&on("postgres://p@db.example.com/p?sslmode=verify-full")).await;
    assert_eq!(finding(&verified, "ops.replicas").status, Status::Pass);
    let local = audit_of(&on("postgres://p@127.0.0.1:5432/p")).await;
    assert_eq!(finding(&local, "ops.replicas").status, Status::Pass);
    let open = audit_of(&on("postgres://p@db.example.com/p")).await;
    let f = finding(&open, "ops.replicas");
    assert_eq!((f.status, f.cause), (Status::Partial, Some(Cause::Config)));
}
