//! The self-audit end to end: the quickstart's `/admin/self-audit` in JSON, Markdown and HTML
//! (rendered in headless Chromium from the operator page, screenshots in
//! `target/ui-screenshots/`), the offline CLI with `--fail-under`, live probes of a real
//! identity provider going down, and two processes sharing one SQLite store.

use std::process::Command;

use portcullis_tests::{Gateway, Idp, bin, node, self_audit, workspace};
use serde_json::Value;

const NOTES: &str =
    "  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n";

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id} in {report:#}"))
}

/// The evidence rows a finding cites.
fn cited<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    let rows = report["evidence"].as_array().unwrap();
    finding(report, id)["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| rows.iter().find(|r| r["id"] == *e).unwrap())
        .collect()
}

/// The quickstart in a directory of its own, kept for as long as the test runs.
struct Quickstart {
    q: portcullis_tests::quickstart::Quickstart,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Quickstart {
    type Target = portcullis_tests::quickstart::Quickstart;
    fn deref(&self) -> &Self::Target {
        &self.q
    }
}

fn quickstart() -> Quickstart {
    let dir = tempfile::tempdir().unwrap();
    let q = portcullis_tests::quickstart::start(dir.path(), &[]);
    Quickstart { q, dir }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_audits_itself_in_three_formats_and_in_the_browser() {
    let q = quickstart();
    let http = reqwest::Client::new();
    let url = format!("{}/admin/self-audit", q.admin);

    // Only auditors and admins: no credential is 401, a client key 403, a bad format 400.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(&url).bearer_auth(&q.client).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{url}?format=xml"))
        .bearer_auth(&q.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let report = self_audit(&q.admin, &q.admin_key).await;
    assert_eq!(report["schema"], "portcullis.self-audit/1");
    assert_eq!(report["mode"], "live");
    assert_eq!(report["config_file"], "portcullis.yaml");
    assert_eq!(report["dimensions"].as_array().unwrap().len(), 7);
    assert_eq!(report["checklist"]["areas"].as_array().unwrap().len(), 10);
    assert!(
        report["build"]["commit"].as_str().unwrap().len() >= 7,
        "{}",
        report["build"]
    );
    // The live probes ran and saw a safe gateway.
    for (id, probe) in [
        ("fail.audit", "probe: audit probe event"),
        ("fail.kill_lease", "probe: kill-switch state"),
        ("ops.replicas", "probe: gateway processes on this store"),
        (
            "fail.store_error",
            "probe: credential check with the store unreachable",
        ),
    ] {
        let f = finding(&report, id);
        assert_eq!(f["static_only"], false, "{id}");
        let row = cited(&report, id)
            .into_iter()
            .find(|r| r["source"] == probe)
            .unwrap_or_else(|| panic!("{id} cites no `{probe}`"));
        assert_eq!(row["ok"], true, "{id}: {row}");
    }
    // The quickstart is a development setup and says so, citing its line.
    let profile = finding(&report, "ops.profile");
    assert_eq!(profile["status"], "partial");
    assert_eq!(
        cited(&report, "ops.profile")[0]["source"],
        "portcullis.yaml:3:10 `profile`"
    );
    // The built-in upstream is connected and scored.
    assert_eq!(report["servers"][0]["server"], "notes");
    assert_eq!(report["servers"][0]["max"], 18);
    // The probe event is in the audit log, credited to the operator who asked.
    let log = std::fs::read_to_string(q.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"kind\":\"audit.probe\"") && l.contains("\"subject\":\"key:")),
        "{log}"
    );

    let r = http
        .get(format!("{url}?format=md"))
        .bearer_auth(&q.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = r.text().await.unwrap();
    for heading in [
        "## 03 Scored gap matrix",
        "## 06 Roadmap",
        "## 09 Evidence index",
    ] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    let r = http
        .get(format!("{url}?format=html"))
        .bearer_auth(&q.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"matrix\"") && !html.contains("<script"));

    // The operator page links the report; Chromium renders it with the matrix coloured.
    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(node())
        .arg(workspace().join("tests/node/ui.mjs"))
        .arg("self-audit")
        .env("ADMIN_URL", &q.admin)
        .env("ADMIN_KEY", &q.admin_key)
        .env("SHOTS", &shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{seen:#}");
    assert_eq!(seen["violations"], serde_json::json!([]), "{seen:#}");
    assert_eq!(seen["dangling"], 0);
    assert_eq!(seen["external"], 0);
    assert_eq!(seen["overflow"], false, "{seen}");
    assert_eq!(seen["wrapped_status"], 0, "{seen}");
    assert_eq!(seen["roadmap_links"], 0, "{seen}");
    assert!(seen["evidence_rows"].as_u64().unwrap() > 10);
    let matrix = seen["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 7);
    for (row, dim) in matrix.iter().zip(report["dimensions"].as_array().unwrap()) {
        assert_eq!(row["dimension"], dim["key"]);
        assert_eq!(row["status"], dim["color"]);
        let expected = match dim["color"].as_str().unwrap() {
            "green" => "rgb(218, 251, 225)",
            "yellow" => "rgb(255, 248, 197)",
            _ => "rgb(255, 235, 233)",
        };
        assert_eq!(row["background"], expected, "{row}");
    }
    assert_eq!(seen["verdict"], report["verdict"]);
    for file in ["self-audit.png", "self-audit-print.png", "self-audit.pdf"] {
        assert!(
            std::fs::metadata(shots.join(file)).unwrap().len() > 10_000,
            "{file}"
        );
    }
}

#[test]
fn the_cli_audits_a_config_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(
        &config,
        format!(
            "profile: production\nstore: sqlite://{}/s.db\nservers:\n{NOTES}audit:\n  sinks:\n    - {{ type: file, path: {}/a.jsonl }}\n    - {{ type: stdout, required: false }}\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin("portcullis"))
            .arg("audit")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg = config.to_str().unwrap();
    let (code, out, err) = run(&["--config", cfg, "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["mode"], "static");
    // The best-effort sink is found, with its line.
    let f = finding(&report, "obs.audit_sinks");
    assert_eq!(f["status"], "partial");
    assert_eq!(f["cause"], "config");
    assert!(
        cited(&report, "obs.audit_sinks")[0]["source"]
            .as_str()
            .unwrap()
            .contains("gw.yaml:11:33 `audit.sinks[1].required`"),
        "{}",
        cited(&report, "obs.audit_sinks")[0]
    );
    // Live checks did not run and say so.
    assert_eq!(finding(&report, "fail.audit")["static_only"], true);
    // Nothing was written: an offline audit does not open the store or the sinks.
    assert!(!dir.path().join("s.db").exists());
    assert!(!dir.path().join("a.jsonl").exists());

    let (code, out, _) = run(&["--config", cfg]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("# Portcullis self-audit"));
    let (code, out, _) = run(&["--config", cfg, "--format", "html"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("<!doctype html>"));

    // No dimension is red: `partial` passes. A write tool without a rate limit turns cost red,
    // and `partial` then fails, naming it.
    let (code, _, err) = run(&["--config", cfg, "--fail-under", "partial"]);
    assert_eq!(code, Some(0), "{err}");
    let unlimited = dir.path().join("unlimited.yaml");
    std::fs::write(
        &unlimited,
        std::fs::read_to_string(&config).unwrap().replace(
            "      search_notes: { class: read }\n",
            "      search_notes: { class: read }\n      create_note: { class: write }\n",
        ),
    )
    .unwrap();
    let (code, _, err) = run(&[
        "--config",
        unlimited.to_str().unwrap(),
        "--fail-under",
        "partial",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("05 Multi-LLM routing & cost controls (red)"),
        "{err}"
    );
    let (code, _, err) = run(&["--config", cfg, "--fail-under", "pass"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("04 Observability & tracing (yellow)"), "{err}");

    // Bad input: a broken config is 64 with its line; no config is 64; `verify` still works.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "servers:\n  x:\n    url: http://127.0.0.1:9/mcp\n",
    )
    .unwrap();
    let (code, _, err) = run(&["--config", dir.path().join("bad.yaml").to_str().unwrap()]);
    assert_eq!(code, Some(64));
    assert!(err.contains("bad.yaml:2:3"), "{err}");
    let (code, _, err) = run(&[]);
    assert_eq!(code, Some(64));
    assert!(err.contains("--config"), "{err}");
    let (code, _, _) = run(&["--config", cfg, "--format", "pdf"]);
    assert_eq!(code, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_identity_provider_is_seen_by_the_live_probe() {
    let mut idp = Idp::start().unwrap();
    let top = format!(
        "identity:\n  require: [org]\n  oidc:\n    - issuer: {}\n      claims: {{ org: org }}\ngrants:\n  org:*: [\"notes/*\"]\n",
        idp.issuer
    );
    let gw = Gateway::start_with(&top, NOTES).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let report = self_audit(&gw.admin, &auditor).await;
    let f = finding(&report, "id.oidc");
    assert_eq!(f["status"], "pass", "{f:#}");
    let probe = cited(&report, "id.oidc")
        .into_iter()
        .find(|r| r["kind"] == "probe")
        .unwrap()
        .clone();
    assert_eq!(probe["ok"], true, "{probe}");

    idp.stop();
    let report = self_audit(&gw.admin, &auditor).await;
    let f = finding(&report, "id.oidc");
    assert_eq!(
        (f["status"].as_str(), f["cause"].as_str()),
        (Some("partial"), Some("probe")),
        "{f:#}"
    );
    let probe = cited(&report, "id.oidc")
        .into_iter()
        .find(|r| r["kind"] == "probe")
        .unwrap();
    assert_eq!(probe["ok"], false);
    assert!(
        probe["observed"]
            .as_str()
            .unwrap()
            .contains("key set not fetched"),
        "{probe}"
    );
    let identity = report["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "identity")
        .unwrap();
    assert_ne!(identity["status"], "pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_sqlite_store_are_flagged() {
    let gw = Gateway::start(NOTES).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let report = self_audit(&gw.admin, &auditor).await;
    let f = finding(&report, "ops.replicas");
    // One process on SQLite: a team's deployment, which does not scale out.
    assert_eq!(
        (f["status"].as_str(), f["cause"].as_str()),
        (Some("partial"), Some("config"))
    );

    let _second = gw.another().unwrap();
    let report = self_audit(&gw.admin, &auditor).await;
    let f = finding(&report, "ops.replicas");
    assert_eq!(
        (f["status"].as_str(), f["cause"].as_str()),
        (Some("absent"), Some("probe")),
        "{f:#}"
    );
    let rows = cited(&report, "ops.replicas");
    assert!(
        rows.iter()
            .any(|r| r["source"].as_str().unwrap().ends_with(":3:8 `store`")),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| {
        r["observed"]
            .as_str()
            .unwrap()
            .starts_with("2 gateway process(es)")
    }));
    let ops = report["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "operations")
        .unwrap();
    assert_eq!(ops["status"], "absent");
}
