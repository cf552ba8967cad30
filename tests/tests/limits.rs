//! Limits and budgets end to end, against the fixture upstream that counts the calls reaching
//! it: budgets exact under 200 concurrent calls, in one gateway process and in two on one store;
//! a rate's burst then its steady pace; a concurrency cap against slow calls; whose limit
//! applies is never a header's to say; units of a call that never ran come back; operators
//! see and change budgets, on the record; units reserved ahead of calls go back (`ahead`); on a
//! frozen store disk, budgeted calls are refused and others go on (`frozen`).

// Test code may unwrap and index: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::ops::admin_text_as;
use portcullis_tests::raw::{Raw, read, req};
use portcullis_tests::{Fixture, Gateway, audit_events};
use serde_json::{Value, json};

#[path = "limits/ahead.rs"]
mod ahead;
#[path = "limits/frozen.rs"]
mod frozen;

fn servers(url: &str) -> String {
    format!(
        "  fixture:\n    url: {url}\n    allow_private: true\n    timeout: 10s\n    tools:\n      echo: {{ class: read }}\n      slow: {{ class: read }}\n"
    )
}

async fn client(base: &str, key: &str) -> Arc<Raw> {
    let mut c = Raw::new(format!("{base}/mcp"), key);
    c.init().await;
    Arc::new(c)
}

async fn call(c: &Raw, tool: &str, args: Value) -> Value {
    let (_, r) = c
        .call(req(
            7,
            "tools/call",
            json!({ "name": tool, "arguments": args }),
        ))
        .await;
    r
}

fn reason(r: &Value) -> &str {
    match r.get("result") {
        Some(_) => "ok",
        None => r["error"]["data"]["reason"].as_str().unwrap_or("?"),
    }
}

/// `n` calls to `echo` at once through `c`; how many answered, and how many were refused
/// `budget_exceeded` (anything else fails the test).
async fn burst(c: &Arc<Raw>, n: usize) -> (usize, usize) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                call(&c, "fixture__echo", json!({ "text": format!("{i}") })).await
            })
        })
        .collect();
    let (mut ok, mut over) = (0, 0);
    for h in calls {
        let r = h.await.unwrap();
        match reason(&r) {
            "ok" => ok += 1,
            "budget_exceeded" => {
                assert!(
                    r["error"]["data"]["retry_after_s"].as_u64().unwrap() >= 1,
                    "{r}"
                );
                over += 1;
            }
            other => panic!("unexpected answer ({other}): {r}"),
        }
    }
    (ok, over)
}

const BUDGET: &str =
    "limits:\n  - { match: \"key:*\", server: fixture, budget: { units: 12, per: month } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_calls_against_ten_units_run_exactly_ten_times() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(BUDGET, &servers(&fx.url)).unwrap();
    let c = client(&gw.base, &gw.key).await;
    // Two of the twelve units are spent first: ten remain.
    assert_eq!(burst(&c, 2).await, (2, 0));
    let before = fx.calls();
    assert_eq!(burst(&c, 200).await, (10, 190));
    assert_eq!(fx.calls() - before, 10, "counted at the upstream");
    // Refusals are recorded with the entry that refused them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let over: Vec<Value> = audit_events(&gw.audit_file(), "tool.call")
            .into_iter()
            .filter(|e| e["outcome"] == "budget_exceeded")
            .collect();
        if over.len() == 190 {
            assert_eq!(over[0]["detail"]["limit"], "limits[0]", "{}", over[0]);
            assert!(
                over[0]["detail"]["principal"]
                    .as_str()
                    .unwrap()
                    .starts_with("key:")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} refusals recorded",
            over.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateway_processes_on_one_store_share_one_exact_budget() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with(BUDGET, &servers(&fx.url)).unwrap();
    let other = gw.another().unwrap();
    let (a, b) = (
        client(&gw.base, &gw.key).await,
        client(&other.base, &gw.key).await,
    );
    assert_eq!(burst(&a, 2).await, (2, 0));
    let before = fx.calls();
    let (x, y) = tokio::join!(burst(&a, 100), burst(&b, 100));
    assert_eq!((x.0 + y.0, x.1 + y.1), (10, 190), "{x:?} {y:?}");
    assert_eq!(fx.calls() - before, 10, "counted at the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_allows_its_burst_then_its_steady_pace_and_no_header_changes_whose_it_is() {
    let fx = Fixture::start("both").unwrap();
    let limits =
        "limits:\n  - { match: \"key:*\", server: fixture, tool: echo, rate: 30/min, burst: 3 }\n";
    let gw = Gateway::start_with(limits, &servers(&fx.url)).unwrap();
    let c = client(&gw.base, &gw.key).await;
    // Each call claims to come from somewhere else: the key's allowance is the one spent.
    let from = |i: usize| {
        let body = req(
            7,
            "tools/call",
            json!({ "name": "fixture__echo", "arguments": { "text": "x" } }),
        );
        c.post(&body.to_string())
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=203.0.113.{i}"))
            .header("x-real-ip", format!("192.0.2.{i}"))
    };
    for i in 0..3 {
        let (_, r) = read(from(i).send().await.unwrap()).await;
        assert_eq!(reason(&r), "ok", "{r}");
    }
    let before = fx.calls();
    let (_, r) = read(from(3).send().await.unwrap()).await;
    assert_eq!(reason(&r), "rate_limited", "{r}");
    let wait = r["error"]["data"]["retry_after_s"].as_u64().unwrap();
    assert!((1..=2).contains(&wait), "{r}");
    assert_eq!(
        fx.calls(),
        before,
        "a limited call never reaches the upstream"
    );
    // Another key has an allowance of its own.
    let other = client(&gw.base, &gw.new_key("other").unwrap()).await;
    assert_eq!(
        reason(&call(&other, "fixture__echo", json!({ "text": "y" })).await),
        "ok"
    );
    // Then one call every two seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        reason(&call(&c, "fixture__echo", json!({ "text": "z" })).await),
        "ok"
    );
    assert_eq!(
        reason(&call(&c, "fixture__echo", json!({ "text": "z" })).await),
        "rate_limited"
    );
    let log = std::fs::read_to_string(gw.audit_file()).unwrap();
    assert!(
        !log.contains("198.51.100.") && !log.contains("203.0.113."),
        "no header is a principal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_cap_holds_while_slow_calls_run_and_frees_when_they_end() {
    let fx = Fixture::start("both").unwrap();
    let limits = "limits:\n  - { match: \"key:*\", server: fixture, concurrency: 2 }\n";
    let gw = Gateway::start_with(limits, &servers(&fx.url)).unwrap();
    let admin = gw.operator_key("auditor", None).unwrap();
    let c = client(&gw.base, &gw.key).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { call(&c, "fixture__slow", json!({ "ms": 5000 })).await })
        })
        .collect();
    // Both are running: the operator sees them, and a third call is refused at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state: Value =
            serde_json::from_str(&admin_text_as(&gw, &admin, "/admin/limits").await).unwrap();
        let running = &state["limits"][0]["running"];
        if running[0]["running"] == 2 {
            assert!(
                running[0]["principal"]
                    .as_str()
                    .unwrap()
                    .starts_with("key:"),
                "{state}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let r = call(&c, "fixture__echo", json!({ "text": "third" })).await;
    assert_eq!(reason(&r), "concurrency_limited", "{r}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "refused without waiting"
    );
    for h in slow {
        assert_eq!(h.await.unwrap()["result"]["content"][0]["text"], "done");
    }
    assert_eq!(
        reason(&call(&c, "fixture__echo", json!({ "text": "after" })).await),
        "ok"
    );
}

async fn admin_post(gw: &Gateway, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", gw.admin))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_usage_and_an_admin_raises_or_resets_a_budget_on_the_record() {
    let fx = Fixture::start("both").unwrap();
    let limits =
        "limits:\n  - { match: \"key:*\", server: fixture, budget: { units: 2, per: month } }\n";
    let gw = Gateway::start_with(limits, &servers(&fx.url)).unwrap();
    let (admin, auditor) = (
        gw.operator_key("admin", Some("ann")).unwrap(),
        gw.operator_key("auditor", None).unwrap(),
    );
    let c = client(&gw.base, &gw.key).await;
    assert_eq!(burst(&c, 3).await, (2, 1));
    let state: Value =
        serde_json::from_str(&admin_text_as(&gw, &auditor, "/admin/limits").await).unwrap();
    let budget = &state["limits"][0]["budget"];
    assert_eq!(
        (budget["units"].as_u64(), budget["per"].as_str()),
        (Some(2), Some("month")),
        "{state}"
    );
    let row = &budget["principals"][0];
    assert_eq!(
        (row["used"].as_i64(), row["remaining"].as_i64()),
        (Some(2), Some(0)),
        "{state}"
    );
    let principal = row["principal"].as_str().unwrap().to_string();
    assert!(
        state["limits"][0]["at"]
            .as_str()
            .unwrap()
            .contains("portcullis.yaml:"),
        "{state}"
    );
    // An auditor reads but does not change; a change needs a reason.
    let raise = json!({ "entry": "limits[0]", "principal": principal, "raise": 3, "reason": "release day" });
    assert_eq!(
        admin_post(&gw, &auditor, "/admin/limits/adjust", raise.clone())
            .await
            .0,
        403
    );
    let no_reason = json!({ "entry": 0, "principal": principal, "raise": 3, "reason": " " });
    assert_eq!(
        admin_post(&gw, &admin, "/admin/limits/adjust", no_reason)
            .await
            .0,
        400
    );
    let stranger = json!({ "entry": 0, "principal": "team:x", "raise": 3, "reason": "r" });
    assert_eq!(
        admin_post(&gw, &admin, "/admin/limits/adjust", stranger)
            .await
            .0,
        400
    );
    let (status, row) = admin_post(&gw, &admin, "/admin/limits/adjust", raise).await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        (row["allowed"].as_i64(), row["remaining"].as_i64()),
        (Some(5), Some(3)),
        "{row}"
    );
    assert_eq!(burst(&c, 4).await, (3, 1));
    let reset = json!({ "entry": "limits[0]", "principal": principal, "reset": true, "reason": "new quota" });
    let (status, row) = admin_post(&gw, &admin, "/admin/limits/adjust", reset).await;
    assert_eq!((status, row["used"].as_i64()), (200, Some(0)), "{row}");
    assert_eq!(burst(&c, 6).await, (5, 1));
    // Both changes are on the record, with who and why.
    let changes = audit_events(&gw.audit_file(), "budget.adjust");
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["detail"]["reason"], "release day");
    assert_eq!(changes[0]["detail"]["raise"], 3);
    assert_eq!(changes[1]["detail"]["reset"], true);
    assert!(
        changes[0]["identity"]["principals"]
            .to_string()
            .contains("user:ann"),
        "{}",
        changes[0]
    );
    // Admitted and refused calls are counted per entry.
    let metrics = admin_text_as(&gw, &auditor, "/metrics").await;
    assert!(
        metrics.contains(
            "portcullis_limit_decisions_total{entry=\"limits[0]\",outcome=\"admitted\"} 10"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "portcullis_limit_decisions_total{entry=\"limits[0]\",outcome=\"budget_exceeded\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_of_a_call_that_never_ran_come_back() {
    let fx = Fixture::start("both").unwrap();
    let limits = "limits:\n  - { match: \"key:*\", budget: { units: 1, per: month } }\n";
    // `echo` as a write tool, so read-only mode refuses it after its unit was reserved.
    let servers = servers(&fx.url).replace("echo: { class: read }", "echo: { class: write }");
    let gw = Gateway::start_with(limits, &servers).unwrap();
    let admin = gw.operator_key("admin", Some("ann")).unwrap();
    let c = client(&gw.base, &gw.key).await;
    let mode = |m: &str| json!({ "mode": m, "reason": "drill" });
    assert_eq!(
        admin_post(&gw, &admin, "/admin/mode", mode("read_only"))
            .await
            .0,
        200
    );
    for _ in 0..3 {
        let r = call(&c, "fixture__echo", json!({ "text": "x" })).await;
        assert_eq!(reason(&r), "read_only", "{r}");
    }
    assert_eq!(
        admin_post(&gw, &admin, "/admin/mode", mode("enforce"))
            .await
            .0,
        200
    );
    // The refunds are settled behind the answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = call(&c, "fixture__echo", json!({ "text": "x" })).await;
        match reason(&r) {
            "ok" => break,
            "budget_exceeded" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other}: {r}"),
        }
    }
    let r = call(&c, "fixture__echo", json!({ "text": "x" })).await;
    assert_eq!(reason(&r), "budget_exceeded", "{r}");
}
