//! OpenTelemetry and metrics end to end: spans with the MCP semantic-convention attributes reach a
//! real OTLP/HTTP receiver in the caller's trace, the trace goes on to the upstream (header and
//! `_meta`), no argument value is a span attribute, and `/metrics` counts what happened.

use std::time::{Duration, Instant};

use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, OtlpReceiver, fixture_server};
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const SECRET: &str = "sk-live-Z9y8X7w6V5u4T3s2R1q0";
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_the_collector_in_the_callers_trace_and_metrics_count_calls() {
    let otlp = OtlpReceiver::start().unwrap();
    let fx = Fixture::start("both").unwrap();
    let top = format!(
        "telemetry: {{ otlp: {{ endpoint: {}, timeout: 2s }}, service_name: gw-under-test }}\n",
        otlp.url
    );
    let gw = Gateway::start_with(&top, &fixture_server("fx", &fx.url)).unwrap();
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    let session = c.session.clone().unwrap();
    let traced = |body: Value| {
        c.post(&body.to_string())
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
            .send()
    };
    let ok = traced(req(
        1,
        "tools/call",
        json!({ "name": "fx__echo", "arguments": { "text": SECRET } }),
    ))
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let missing = traced(req(
        2,
        "tools/call",
        json!({ "name": "fx__nope", "arguments": {} }),
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 200);

    // The batch exporter sends within its schedule (5 s by default).
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = otlp.spans();
        let done = spans.iter().filter(|s| s["trace_id"] == TRACE).count() >= 3;
        if done || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ours: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] == TRACE).collect();
    let server = ours
        .iter()
        .find(|s| s["name"] == "tools/call fx__echo")
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
    assert_eq!(server["kind"], SERVER);
    assert_eq!(server["parent_span_id"], PARENT);
    let a = &server["attributes"];
    assert_eq!(a["mcp.method.name"], "tools/call");
    assert_eq!(a["gen_ai.operation.name"], "execute_tool");
    assert_eq!(a["gen_ai.tool.name"], "fx__echo");
    assert_eq!(a["mcp.session.id"], session.as_str());
    assert_eq!(a["mcp.protocol.version"], "2025-11-25");
    assert_eq!(a["jsonrpc.request.id"], "1");
    assert_eq!(server["resource"]["service.name"], "gw-under-test");
    let client = ours
        .iter()
        .find(|s| s["kind"] == CLIENT && s["attributes"]["gen_ai.tool.name"] == "echo")
        .unwrap_or_else(|| panic!("no client span in {ours:#?}"));
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(client["attributes"]["server.address"], "127.0.0.1");
    assert_eq!(client["attributes"]["portcullis.server"], "fx");
    let refused = ours
        .iter()
        .find(|s| s["name"] == "tools/call fx__nope")
        .expect("span of the refused call");
    assert_eq!(refused["attributes"]["error.type"], "-32602");
    assert_eq!(refused["attributes"]["portcullis.reason"], "not_found");
    let all = serde_json::to_string(&spans).unwrap();
    assert!(
        !all.contains(SECRET),
        "an argument value became a span attribute"
    );

    // The upstream saw the same trace, with the gateway's client span as parent.
    let parents = fx.traceparents();
    let want = format!("00-{TRACE}-{}-01", client["span_id"].as_str().unwrap());
    assert!(parents.contains(&want), "{want} not in {parents:?}");

    // The audit log carries the trace id.
    let audit = std::fs::read_to_string(gw.audit_file()).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"kind\":\"tool.call\"") && l.contains(TRACE)),
        "{audit}"
    );

    // Metrics: operator credentials only; counts without identities or arguments.
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{}/metrics", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let auditor = gw.operator_key("auditor", None).unwrap();
    let text = http
        .get(format!("{}/metrics", gw.admin))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "portcullis_requests_total{method=\"tools/call\",outcome=\"ok\"} 1",
        "portcullis_requests_total{method=\"tools/call\",outcome=\"not_found\"} 1",
        "portcullis_tool_calls_total{server=\"fx\",tool=\"echo\",outcome=\"ok\"} 1",
        "portcullis_kill_switch_state_fresh 1",
        "portcullis_kill_switches_engaged{scope=\"global\"} 0",
        "portcullis_mode{mode=\"enforce\"} 1",
        "portcullis_approvals_pending 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(text.contains("portcullis_upstream_requests_total{server=\"fx\",outcome=\"ok\"}"));
    assert!(text.contains(
        "portcullis_request_duration_seconds_bucket{method=\"tools/call\",le=\"+Inf\"} 2"
    ));
    assert!(text.contains(
        "portcullis_audit_sink_events_total{sink=\"store\",required=\"true\",result=\"written\"}"
    ));
    assert!(text.contains(
        "portcullis_audit_sink_flushes_total{sink=\"store\",required=\"true\",result=\"ok\"}"
    ));
    assert!(text.contains(
        "portcullis_audit_sink_flushes_total{sink=\"store\",required=\"true\",result=\"failed\"} 0"
    ));
    assert!(!text.contains(SECRET) && !text.contains("fx__nope") && !text.contains("key:"));
}

/// The live self-audit says whether spans are delivered, not only configured: a collector that
/// takes them shows a delivered export; one that is down shows the failure as a gap.
#[tokio::test(flavor = "multi_thread")]
async fn the_self_audit_reports_whether_the_latest_export_was_delivered() {
    let find = |report: &Value, id: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let otlp = OtlpReceiver::start().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    for (endpoint, delivered) in [(otlp.url.clone(), true), (dead, false)] {
        let top = format!("telemetry: {{ otlp: {{ endpoint: {endpoint}, timeout: 1s }} }}\n");
        let gw = Gateway::start_with(
            &top,
            "  notes:\n    builtin: notes\n    tools: { search_notes: { class: read } }\n",
        )
        .unwrap();
        let auditor = gw.operator_key("auditor", None).unwrap();
        let mut c = Raw::new(gw.mcp(), &gw.key);
        c.init().await;
        c.call(req(1, "tools/list", json!({}))).await;
        // The batch exporter runs every 5 s; wait for one export to have ended.
        let deadline = Instant::now() + Duration::from_secs(20);
        let finding = loop {
            let report = portcullis_tests::self_audit(&gw.admin, &auditor).await;
            let f = find(&report, "obs.otlp");
            let text = report.to_string();
            let ended = text.contains("was accepted by the collector")
                || text.contains("the latest export (");
            if ended || Instant::now() > deadline {
                break (f, text);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let (f, text) = finding;
        if delivered {
            assert_eq!(f["status"], "pass", "{f}");
            assert!(text.contains("was accepted by the collector"), "{text}");
        } else {
            assert_eq!(f["status"], "partial", "{f}");
            assert!(
                f["title"]
                    .as_str()
                    .unwrap()
                    .contains("the latest export failed"),
                "{f}"
            );
        }
    }
}
