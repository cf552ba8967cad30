//! A server with several endpoints (real upstream processes): calls are spread by weight, a
//! read that cannot be served where it went is tried on another endpoint and a write that may
//! have run never is, a write that could not reach its endpoint runs on another, one endpoint
//! killed under load leaves reads working with no write run twice, a tool whose definition
//! differs on one endpoint is quarantined, and an endpoint whose tools could not be listed (and
//! so checked against the pins) takes no calls.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_tests::ops::{call_tool as call, client, tool_text as text, upstream_state};
use portcullis_tests::{Fixture, Gateway, audit_events};
use serde_json::{Value, json};

/// The calls a fixture logged (`--log-calls`), one `name arguments` line each.
fn logged(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn fixture(log: &Path, extra: &[&str]) -> Fixture {
    let mut args = vec!["--log-calls", log.to_str().unwrap()];
    args.extend_from_slice(extra);
    Fixture::start_with("both", &args).unwrap()
}

fn server(endpoints: &str, extra: &str) -> String {
    format!(
        "  up:\n{endpoints}    allow_private: true\n    timeout: 5s\n{extra}    tools:\n      echo: {{ class: read }}\n      slow: {{ class: write }}\n"
    )
}

/// Wait until every endpoint of the server is connected (and so listed): the gateway is ready
/// once one is.
async fn all_connected(gw: &Gateway) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = upstream(gw).await;
        let endpoints = seen["endpoints"].as_array().cloned().unwrap_or_default();
        if !endpoints.is_empty() && endpoints.iter().all(|e| e["connected"] == true) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn upstream(gw: &Gateway) -> Value {
    upstream_state(gw, "up").await
}

#[tokio::test]
async fn calls_are_spread_by_weight_and_a_definition_that_differs_on_one_endpoint_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = (fixture(&log_a, &[]), fixture(&log_b, &[]));
    let endpoints = format!(
        "    endpoints:\n      - {{ url: {}, weight: 3 }}\n      - {}\n    balance: round_robin\n",
        a.url, b.url
    );
    let gw = Gateway::start(&server(&endpoints, "")).unwrap();
    all_connected(&gw).await;
    let c = client(&gw).await;
    for i in 0..8 {
        let r = call(&c, "up__echo", json!({ "text": format!("r{i}") })).await;
        assert_eq!(text(&r), format!("r{i}"), "{r}");
    }
    assert_eq!((logged(&log_a).len(), logged(&log_b).len()), (6, 2));
    let seen = upstream(&gw).await;
    assert_eq!(seen["endpoints"].as_array().unwrap().len(), 2, "{seen}");
    assert_eq!(seen["endpoints"][0]["weight"], 3, "{seen}");
    assert_eq!(seen["balance"], "round_robin", "{seen}");
    drop(c);
    drop(gw);

    // The second endpoint serves `echo` with another description than the one pinned from the
    // first: `echo` is held back on the whole server, and the other tools are served.
    let changed = fixture(&dir.path().join("c"), &["--rug", "1"]);
    let endpoints = format!("    url: [{}, {}]\n", a.url, changed.url);
    let gw = Gateway::start(&server(&endpoints, "")).unwrap();
    let c = client(&gw).await;
    let names = c.until_tools(|t| !t.iter().any(|n| n == "up__echo")).await;
    assert!(names.iter().any(|n| n == "up__slow"), "{names:?}");
    let events = audit_events(&gw.audit_file(), "tool.quarantine");
    assert!(
        events.iter().any(|e| e["tool"] == "echo"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("offers a different definition"))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_read_is_tried_on_another_endpoint_and_a_write_that_may_have_run_never_is() {
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = fixture(&log_a, &[]);
    // A replica whose every call is answered 503 by what stands in front of it.
    let b = fixture(&log_b, &["--fail-calls", "503"]);
    let endpoints = format!(
        "    url: [{}, {}]\n    balance: round_robin\n",
        a.url, b.url
    );
    let gw = Gateway::start(&server(
        &endpoints,
        "    breaker: { failures: 4, cooldown: 1m }\n",
    ))
    .unwrap();
    all_connected(&gw).await;
    let c = client(&gw).await;
    // Two writes in a row: one goes to each endpoint. The one that met the 503 fails, naming the
    // server and the status, and is not sent anywhere else.
    let mut failed = Vec::new();
    for i in 0..2 {
        let r = call(&c, "up__slow", json!({ "ms": 1, "id": format!("w{i}") })).await;
        if r["error"].is_object() {
            assert_eq!(r["error"]["data"]["reason"], "upstream_unavailable", "{r}");
            assert!(
                r["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("upstream `up` answered with HTTP 503"),
                "{r}"
            );
            failed.push(format!("w{i}"));
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    let at_a = logged(&log_a);
    assert_eq!(at_a.len(), 1, "{at_a:?}");
    assert!(
        !at_a[0].contains(&failed[0]),
        "a failed write ran elsewhere: {at_a:?}"
    );
    // Reads all answer: the ones that met the 503 are tried again on the other endpoint.
    for i in 0..4 {
        let r = call(&c, "up__echo", json!({ "text": format!("r{i}") })).await;
        assert_eq!(text(&r), format!("r{i}"), "{r}");
    }
    assert_eq!(logged(&log_a).len(), 5);
    let seen = upstream(&gw).await;
    let made = seen["retries"]["made"].as_u64().unwrap();
    assert!(made >= 1, "{seen}");
    let retries = audit_events(&gw.audit_file(), "upstream.retry");
    assert_eq!(retries.len() as u64, made, "{retries:?}");
    assert!(
        retries.iter().all(|e| e["server"] == "up"
            && e["tool"] == "echo"
            && e["detail"]["endpoint"] == b.url),
        "{retries:?}"
    );
    // Past four failures in a row the 503 endpoint's circuit is open and it is no longer asked.
    for i in 4..10 {
        let r = call(&c, "up__echo", json!({ "text": format!("r{i}") })).await;
        assert_eq!(text(&r), format!("r{i}"), "{r}");
    }
    let seen = upstream(&gw).await;
    assert_eq!(seen["endpoints"][1]["circuit"]["state"], "open", "{seen}");
    assert_eq!(seen["endpoints"][0]["circuit"]["state"], "closed", "{seen}");
    assert_eq!(seen["circuit"]["state"], "closed", "{seen}");
}

#[tokio::test]
async fn one_of_two_endpoints_killed_under_load_leaves_reads_working_and_no_write_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = fixture(&log_a, &[]);
    let mut b = fixture(&log_b, &[]);
    let endpoints = format!("    url: [{}, {}]\n", a.url, b.url);
    let gw = Arc::new(Gateway::start(&server(&endpoints, "")).unwrap());
    all_connected(&gw).await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (gw, done) = (gw.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let c = client(&gw).await;
            let mut reads_failed = Vec::new();
            let mut writes_ok = Vec::new();
            for i in 0..60 {
                let id = format!("w{w}-{i}");
                if i % 3 == 2 {
                    let r = call(&c, "up__slow", json!({ "ms": 5, "id": id })).await;
                    if text(&r) == "done" {
                        writes_ok.push(id);
                    }
                } else {
                    let r = call(&c, "up__echo", json!({ "text": id })).await;
                    if text(&r) != id {
                        reads_failed.push(r);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            (reads_failed, writes_ok)
        }));
    }
    // A third of the way in, one endpoint's process is killed outright.
    while done.load(Ordering::SeqCst) < 80 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.kill();
    let mut writes_ok = Vec::new();
    for w in workers {
        let (reads_failed, ok) = w.await.unwrap();
        assert!(reads_failed.is_empty(), "reads failed: {reads_failed:?}");
        writes_ok.extend(ok);
    }
    let (at_a, at_b) = (logged(&log_a), logged(&log_b));
    assert!(!at_b.is_empty(), "the killed endpoint took no calls before");
    // Counted at both endpoints: every write ran at most once, and each that answered ran.
    let writes: Vec<&String> = at_a
        .iter()
        .chain(&at_b)
        .filter(|l| l.starts_with("slow "))
        .collect();
    for w in 0..4 {
        for i in (2..60).step_by(3) {
            let id = format!("\"w{w}-{i}\"");
            let runs = writes.iter().filter(|l| l.contains(&id)).count();
            assert!(runs <= 1, "{id} ran {runs} times");
            if writes_ok.iter().any(|ok| format!("\"{ok}\"") == id) {
                assert_eq!(runs, 1, "{id} answered but never ran");
            }
        }
    }
    // A failed request had the endpoint checked: operators see it down, and why.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = upstream(&gw).await;
        if seen["endpoints"][1]["connected"] == false {
            break seen;
        }
        assert!(std::time::Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen["endpoints"][1]["last_error"].is_string(), "{seen}");
    assert_eq!(seen["endpoints"][0]["connected"], true, "{seen}");
}

#[tokio::test]
async fn a_write_that_could_not_reach_its_endpoint_goes_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = fixture(&log_a, &[]);
    let mut b = fixture(&log_b, &[]);
    let endpoints = format!(
        "    url: [{}, {}]\n    balance: round_robin\n",
        a.url, b.url
    );
    let gw = Gateway::start(&server(&endpoints, "")).unwrap();
    all_connected(&gw).await;
    // The second endpoint's process goes away between calls: nothing listens there any more,
    // and the gateway has not yet had a request fail on it.
    b.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client(&gw).await;
    // Two writes in turn: the one that went to the dead endpoint never left, so it runs on the
    // live one; each runs exactly once.
    for i in 0..2 {
        let r = call(&c, "up__slow", json!({ "ms": 1, "id": format!("w{i}") })).await;
        assert_eq!(text(&r), "done", "{r}");
    }
    let at_a = logged(&log_a);
    assert_eq!(at_a.len(), 2, "{at_a:?}");
    assert!(
        at_a.iter().any(|l| l.contains("\"w0\"")) && at_a.iter().any(|l| l.contains("\"w1\"")),
        "{at_a:?}"
    );
    let seen = upstream(&gw).await;
    assert_eq!(seen["retries"]["made"], 1, "{seen}");
    let retries = audit_events(&gw.audit_file(), "upstream.retry");
    assert!(
        retries.len() == 1
            && retries[0]["tool"] == "slow"
            && retries[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("could not be reached")),
        "{retries:?}"
    );
}

#[tokio::test]
async fn an_endpoint_whose_tools_could_not_be_listed_takes_no_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = fixture(&log_a, &[]);
    // Connected, but its tool listing fails: what it would run is unchecked.
    let b = fixture(&log_b, &["--rug", "3"]);
    let endpoints = format!(
        "    url: [{}, {}]\n    balance: round_robin\n",
        a.url, b.url
    );
    let gw = Gateway::start(&server(&endpoints, "")).unwrap();
    all_connected(&gw).await;
    let c = client(&gw).await;
    for i in 0..6 {
        let r = call(&c, "up__echo", json!({ "text": format!("r{i}") })).await;
        assert_eq!(text(&r), format!("r{i}"), "{r}");
    }
    assert_eq!(logged(&log_a).len(), 6);
    assert!(logged(&log_b).is_empty(), "{:?}", logged(&log_b));
    let seen = upstream(&gw).await;
    assert!(
        seen["endpoints"][1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("listing is broken")),
        "{seen}"
    );
}
