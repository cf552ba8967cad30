//! The gateway survives its upstreams: a tool that hangs is refused at its deadline (the
//! tool's, or the caller's own), an answer past the server's bounds fails its call with memory
//! bounded, a failing server's circuit opens and closes again, and a stdio server that crashes
//! is restarted from its pinned artifact only, its crash loop opening the breaker.

use std::time::{Duration, Instant};

use portcullis_tests::ops::{
    admin_text, call_tool as call, client, tool_text as text, upstream_state,
};
use portcullis_tests::raw::req;
use portcullis_tests::{Fixture, Gateway, bin, file_digest};
use serde_json::{Value, json};

async fn upstream(gw: &Gateway, server: &str) -> Value {
    upstream_state(gw, server).await
}

async fn metrics(gw: &Gateway) -> String {
    admin_text(gw, "/metrics").await
}

/// The gateway's peak resident memory, from the kernel.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn http_server(url: &str, extra: &str) -> String {
    format!(
        "  up:\n    url: {url}\n    allow_private: true\n    timeout: 5s\n{extra}    tools:\n      echo: {{ class: read }}\n      slow: {{ class: write, timeout: 1s }}\n      big: {{ class: read }}\n"
    )
}

#[tokio::test]
async fn a_hanging_tool_is_refused_at_its_deadline_or_the_callers_and_its_call_is_cancelled() {
    let fx = Fixture::start_with("legacy", &["--resilience"]).unwrap();
    let gw = Gateway::start(&http_server(&fx.url, "    breaker: off\n")).unwrap();
    let c = client(&gw).await;
    // The tool's own timeout (1 s), not the server's (5 s).
    let t = Instant::now();
    let r = call(&c, "up__slow", json!({ "ms": 60_000 })).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?} {r}"
    );
    assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("upstream `up` did not answer within 1s"),
        "{r}"
    );
    // The upstream is told, and its call ends there.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.cancellations() < 1 {
        assert!(
            Instant::now() < deadline,
            "the upstream never saw the call cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The caller's own deadline, shorter than the tool's, is honoured.
    let t = Instant::now();
    let r = c
        .call(req(8, "tools/call", json!({ "name": "up__slow", "arguments": { "ms": 60_000 }, "_meta": { "io.portcullis/timeoutMs": 250 } })))
        .await
        .1;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(900), "{took:?} {r}");
    assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
    // One that is not a number of milliseconds is the caller's error, and runs nothing.
    let before = fx.calls();
    let r = c
        .call(req(9, "tools/call", json!({ "name": "up__echo", "arguments": { "text": "x" }, "_meta": { "io.portcullis/timeoutMs": "soon" } })))
        .await
        .1;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("io.portcullis/timeoutMs"),
        "{r}"
    );
    assert_eq!(fx.calls(), before);
    // The connection is fine for the next call.
    let r = call(&c, "up__echo", json!({ "text": "still here" })).await;
    assert_eq!(text(&r), "still here", "{r}");
}

#[tokio::test]
async fn an_answer_past_the_bound_fails_its_call_and_memory_stays_bounded() {
    let fx = Fixture::start_with("both", &["--resilience"]).unwrap();
    let gw = Gateway::start(&http_server(&fx.url, "")).unwrap();
    let c = client(&gw).await;
    let r = call(&c, "up__echo", json!({ "text": "warm" })).await;
    assert_eq!(text(&r), "warm", "{r}");
    for _ in 0..3 {
        let r = call(&c, "up__big", json!({ "mb": 50 })).await;
        assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("upstream `up` sent an answer past its bounds")
                && message.contains("over 16777216 bytes"),
            "{r}"
        );
    }
    // The gateway read at most the bound of each 50 MB answer, never the whole of one.
    let peak = peak_rss_kib(gw.pid());
    assert!(peak < 120 * 1024, "peak RSS {peak} KiB");
    // An answer within the bound goes through, and so does the next call.
    let r = call(&c, "up__big", json!({ "mb": 1 })).await;
    assert_eq!(text(&r).len(), 1 << 20, "{}", r["error"]);
    let r = call(&c, "up__echo", json!({ "text": "after" })).await;
    assert_eq!(text(&r), "after", "{r}");
    // Not the upstream's health: the circuit stays closed.
    assert_eq!(upstream(&gw, "up").await["circuit"]["state"], "closed");
}

#[tokio::test]
async fn a_failing_upstream_opens_its_circuit_which_refuses_fast_then_closes_on_a_probe() {
    let fx = Fixture::start_with("both", &["--resilience"]).unwrap();
    let gw = Gateway::start(&http_server(
        &fx.url,
        "    breaker: { failures: 2, cooldown: 2s }\n",
    ))
    .unwrap();
    let c = client(&gw).await;
    for _ in 0..2 {
        let r = call(&c, "up__slow", json!({ "ms": 60_000 })).await;
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("did not answer"),
            "{r}"
        );
    }
    let before = fx.calls();
    let t = Instant::now();
    let r = call(&c, "up__echo", json!({ "text": "x" })).await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
    assert_eq!(r["error"]["data"]["server"], "up", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit is open"),
        "{r}"
    );
    assert_eq!(fx.calls(), before, "an open circuit sent the call");
    let seen = upstream(&gw, "up").await;
    assert_eq!(seen["circuit"]["state"], "open", "{seen}");
    assert_eq!(seen["circuit"]["opened"], 1, "{seen}");
    assert_eq!(seen["breaker"]["failures"], 2, "{seen}");
    let m = metrics(&gw).await;
    assert!(
        m.contains("portcullis_upstream_circuit_state{server=\"up\",state=\"open\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_upstream_circuit_opened_total{server=\"up\"} 1"),
        "{m}"
    );
    // After the cooldown one probe goes through; it answers, and the circuit closes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = call(&c, "up__echo", json!({ "text": "probe" })).await;
    assert_eq!(text(&r), "probe", "{r}");
    assert_eq!(upstream(&gw, "up").await["circuit"]["state"], "closed");
}

fn stdio_server(program: &std::path::Path, args: &str, extra: &str) -> String {
    format!(
        "  local:\n    command: {{ program: {}, integrity: \"{}\", args: [\"--stdio\", \"--resilience\"{args}] }}\n{extra}    tools:\n      echo: {{ class: read }}\n      crash: {{ class: read }}\n",
        program.display(),
        file_digest(program).unwrap()
    )
}

fn starts(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[tokio::test]
async fn a_crashed_stdio_server_is_restarted_from_its_pinned_artifact_only() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("upstream");
    std::fs::copy(bin("fixture-upstream"), &program).unwrap();
    let started = dir.path().join("starts");
    let args = format!(", \"--starts\", \"{}\"", started.display());
    let gw = Gateway::start(&stdio_server(&program, &args, "")).unwrap();
    let c = client(&gw).await;
    let r = call(&c, "local__echo", json!({ "text": "first" })).await;
    assert_eq!(text(&r), "first", "{r}");
    // The process dies mid-call: the call fails, naming the server; the process is started again.
    let r = call(&c, "local__crash", json!({})).await;
    assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(&c, "local__echo", json!({ "text": "again" })).await;
        if text(&r) == "again" {
            break;
        }
        assert!(Instant::now() < deadline, "never restarted: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(starts(&started), 2);
    assert_eq!(upstream(&gw, "local").await["restarts"], 1);
    // Other bytes at the same path (a file replaced while the process runs): the next start is
    // refused, however often it is tried, and operators see why.
    let tampered = dir.path().join("tampered");
    let mut bytes = std::fs::read(&program).unwrap();
    bytes.extend_from_slice(b"flipped");
    std::fs::write(&tampered, bytes).unwrap();
    std::fs::rename(&tampered, &program).unwrap();
    let _ = call(&c, "local__crash", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = upstream(&gw, "local").await;
        if seen["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not match its pinned digest"))
        {
            break seen;
        }
        assert!(Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seen["connected"], false, "{seen}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(starts(&started), 2, "a tampered program was started");
    let r = call(&c, "local__echo", json!({ "text": "x" })).await;
    assert!(r["error"].is_object(), "{r}");
}

#[tokio::test]
async fn a_stdio_crash_loop_opens_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("upstream");
    std::fs::copy(bin("fixture-upstream"), &program).unwrap();
    let started = dir.path().join("starts");
    let args = format!(
        ", \"--starts\", \"{}\", \"--exit-after-ms\", \"1500\"",
        started.display()
    );
    let servers = stdio_server(
        &program,
        &args,
        "    breaker: { failures: 3, cooldown: 1m }\n",
    );
    let gw = Gateway::start_unready_with("", &servers, "warn").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = upstream(&gw, "local").await;
        if seen["circuit"]["state"] == "open" {
            break seen;
        }
        assert!(Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(starts(&started) >= 3, "{seen}");
    assert!(seen["restarts"].as_u64().unwrap() >= 2, "{seen}");
    // While open, a call is refused at once, naming the server.
    let c = client(&gw).await;
    let t = Instant::now();
    let r = c
        .call(req(
            3,
            "tools/call",
            json!({ "name": "local__echo", "arguments": { "text": "x" } }),
        ))
        .await
        .1;
    assert!(t.elapsed() < Duration::from_millis(500));
    // Refused by the circuit, whether the process is up at this instant or not; or, if its
    // tools are not listed at this instant, not found: never run.
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream `local` is unavailable: its circuit is open")
            || r["error"]["data"]["reason"] == "not_found",
        "{r}"
    );
}
