//! Three gateway replicas on one real PostgreSQL server, behind a real load balancer (HAProxy,
//! round-robin over every request, no stickiness): a kill switch engaged through one replica
//! holds on all three within a second; a budget is exact over all of them; a session moves
//! between replicas on every request and keeps working with the official Python SDK; a call
//! held on one replica and approved through another runs once; a replica killed mid-run loses
//! no answered call's audit event; with PostgreSQL stopped every replica refuses, and recovers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::haproxy::{Haproxy, HeldPort};
use portcullis_tests::postgres::Postgres;
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, Replica, create_key_with, python, workspace};
use serde_json::{Value, json};

struct Cluster {
    pg: Postgres,
    fx: Fixture,
    gw: Gateway,
    others: Vec<Replica>,
    lb: Haproxy,
}

fn servers(url: &str) -> String {
    let tools: String = portcullis_tests::FIXTURE_TOOLS
        .iter()
        // `touch_watched` announces a resource change; read here so no approval holds it.
        .map(|(t, c)| (t, if *t == "touch_watched" { "read" } else { c }))
        .map(|(t, c)| format!("      {t}: {{ class: {c} }}\n"))
        .collect();
    format!(
        "  fixture:\n    url: {url}\n    allow_private: true\n    timeout: 10s\n    tools:\n{tools}    resources: [\"test://*\"]\n    prompts: [test_simple_prompt, test_prompt_with_arguments]\n"
    )
}

/// Start PostgreSQL, the fixture, three replicas on one config and HAProxy in front of them.
fn cluster(db: &str) -> Cluster {
    let pg = Postgres::start().unwrap();
    // The initialize-era fixture: it takes resource subscriptions.
    let fx = Fixture::start("legacy").unwrap();
    let held = HeldPort::new().unwrap();
    let port = held.port().unwrap();
    let top = format!(
        "{store}public_url: http://127.0.0.1:{port}\n\
         audit: {{ sinks: [{{ type: store }}] }}\n\
         approvals: {{ required_from: write, ttl: 60s, hold: 0s }}\n\
         kill_switch: {{ poll: 5s, lease: 20s }}\n\
         grants:\n  team:metered: [\"fixture/*\"]\n\
         limits:\n  - {{ match: \"team:metered\", server: fixture, budget: {{ units: 10, per: month }} }}\n",
        store = pg.store_config(db).unwrap()
    );
    let gw = Gateway::start_with(&top, &servers(&fx.url)).unwrap();
    let others = vec![gw.another().unwrap(), gw.another().unwrap()];
    let lb = Haproxy::start(held, &[&gw.base, &others[0].base, &others[1].base]).unwrap();
    Cluster {
        pg,
        fx,
        gw,
        others,
        lb,
    }
}

impl Cluster {
    fn bases(&self) -> Vec<String> {
        let mut out = vec![self.gw.base.clone()];
        out.extend(self.others.iter().map(|r| r.base.clone()));
        out
    }
}

async fn client(url: String, key: &str) -> Arc<Raw> {
    let mut c = Raw::new(url, key);
    c.init().await;
    Arc::new(c)
}

async fn call(c: &Raw, tool: &str, args: Value) -> (reqwest::StatusCode, Value) {
    c.call(req(
        7,
        "tools/call",
        json!({ "name": tool, "arguments": args }),
    ))
    .await
}

fn reason(r: &Value) -> &str {
    match r.get("result") {
        Some(_) => "ok",
        None => r["error"]["data"]["reason"].as_str().unwrap_or("?"),
    }
}

async fn admin_post(base: &str, key: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn levers_budgets_sessions_and_approvals_hold_across_three_replicas() {
    let c = cluster("levers");
    let admin = c.gw.operator_key("admin", Some("ops")).unwrap();
    let approver = c.gw.operator_key("approver", Some("carol")).unwrap();

    // The kill switch, engaged through the third replica, refuses on all three within 1 s:
    // announced (NOTIFY), as the replicas read the state only every 5 s otherwise.
    let direct: Vec<Arc<Raw>> = futures::future::join_all(
        c.bases()
            .into_iter()
            .map(|b| client(format!("{b}/mcp"), &c.gw.key)),
    )
    .await;
    for d in &direct {
        assert_eq!(
            reason(&call(d, "fixture__echo", json!({"text": "hi"})).await.1),
            "ok"
        );
    }
    let engaged = Instant::now();
    admin_post(
        &c.others[1].admin,
        &admin,
        "/admin/kill-switch",
        json!({ "scope": "global", "engaged": true, "reason": "incident 9" }),
    )
    .await;
    for (i, d) in direct.iter().enumerate() {
        loop {
            let (_, r) = call(d, "fixture__echo", json!({"text": "hi"})).await;
            if reason(&r) == "killed" {
                break;
            }
            assert!(
                engaged.elapsed() < Duration::from_secs(1),
                "replica {i} still allows after {:?}: {r}",
                engaged.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let reached = engaged.elapsed();
    assert!(reached < Duration::from_secs(1), "{reached:?}");
    admin_post(
        &c.gw.admin,
        &admin,
        "/admin/kill-switch",
        json!({ "scope": "global", "engaged": false, "reason": "resolved" }),
    )
    .await;
    for d in &direct {
        let started = Instant::now();
        while reason(&call(d, "fixture__echo", json!({"text": "hi"})).await.1) != "ok" {
            assert!(started.elapsed() < Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A budget of 10 is exact over 200 concurrent calls spread over the replicas.
    let metered = create_key_with(
        &c.gw.config(),
        "metered",
        &["fixture/*".to_string()],
        &["--team", "metered"],
    )
    .unwrap();
    let through_lb: Vec<Arc<Raw>> =
        futures::future::join_all((0..8).map(|_| client(c.lb.mcp(), &metered))).await;
    let before = c.fx.calls();
    let calls = (0..200).map(|i| {
        let l = through_lb[i % through_lb.len()].clone();
        tokio::spawn(async move {
            let (_, r) = call(&l, "fixture__echo", json!({"text": format!("{i}")})).await;
            reason(&r).to_string()
        })
    });
    let answers: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = answers.iter().filter(|a| *a == "ok").count();
    let over = answers.iter().filter(|a| *a == "budget_exceeded").count();
    assert_eq!((ok, over), (10, 190), "{answers:?}");
    assert_eq!(c.fx.calls() - before, 10, "counted at the upstream");

    // The official Python SDK keeps one session while every request lands on the next replica.
    let since_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let out = Command::new(python())
        .arg(workspace().join("tests/python/client_e2e.py"))
        .arg(c.lb.mcp())
        .arg(&c.gw.key)
        .arg("legacy")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Its requests were served by all three replicas (each writes its own audit chain).
    let store = store::Store::connect(&c.pg.url("levers"), Some(&c.pg.password))
        .await
        .unwrap();
    // An event of the metered key's calls above can be stamped after `since_ms` (a refusal
    // was, in one run on a loaded machine): those are not the Python client's.
    let metered_team = |e: &Value| {
        e["identity"]["principals"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == "team:metered"))
    };
    let events: Vec<Value> = store
        .audit_lines(since_ms, None, None, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|(_, l)| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| !metered_team(e))
        .collect();
    let sessions: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["kind"] == "tool.call")
        .filter_map(|e| e["session"].as_str())
        .collect();
    let strays: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "tool.call" && e["session"].is_string())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}: {strays:#?}");
    let chains: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| sessions.contains(e["session"].as_str().unwrap_or_default()))
        .filter_map(|e| e["chain"].as_str())
        .collect();
    assert_eq!(chains.len(), 3, "the session's events came from {chains:?}");

    // Held through one replica, approved through another, run once by whichever replica the
    // client's repeat lands on.
    let held = client(c.lb.mcp(), &c.gw.key).await;
    let args = json!({ "ms": 1 });
    let (_, r) = call(&held, "fixture__slow", args.clone()).await;
    assert_eq!(reason(&r), "approval_pending", "{r}");
    let id = r["error"]["data"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    admin_post(
        &c.others[0].admin,
        &approver,
        &format!("/admin/approvals/{id}/approve"),
        json!({ "reason": "replicas test" }),
    )
    .await;
    let before = c.fx.calls();
    let (_, r) = call(&held, "fixture__slow", args.clone()).await;
    assert_eq!(reason(&r), "ok", "{r}");
    let (_, r) = call(&held, "fixture__slow", args).await;
    assert_eq!(reason(&r), "approval_pending", "used once: {r}");
    assert_eq!(
        c.fx.calls() - before,
        1,
        "the approved call ran exactly once"
    );

    // A subscription made through one replica follows the session to the replica holding its
    // stream: the update reaches the client there.
    let mut sub = Raw::new(format!("{}/mcp", c.gw.base), &c.gw.key);
    sub.init().await;
    let (_, v) = sub
        .call(req(
            3,
            "resources/subscribe",
            json!({ "uri": "fixture+test://watched-resource" }),
        ))
        .await;
    assert_eq!(v["result"], json!({}), "{v}");
    let mut elsewhere = Raw::new(format!("{}/mcp", c.others[0].base), &c.gw.key);
    elsewhere.session = sub.session.clone();
    let mut stream = elsewhere
        .http
        .get(&elsewhere.url)
        .bearer_auth(&elsewhere.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", elsewhere.session.clone().unwrap())
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt as _;
        let mut buf = String::new();
        loop {
            // The update goes out through the replica's own upstream connection.
            let (_, v) = call(&elsewhere, "fixture__touch_watched", json!({})).await;
            assert_eq!(reason(&v), "ok", "{v}");
            let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
            if let Ok(Some(chunk)) = next {
                buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if buf.contains("notifications/resources/updated") {
                    return buf;
                }
            }
        }
    })
    .await
    .expect("the update reached the stream on the other replica");
    assert!(heard.contains("fixture+test://watched-resource"), "{heard}");
    drop(stream);

    // Every replica verifies a session id it did not issue: another caller's, a forged or an
    // ended one is no session (404) anywhere.
    let bases = c.bases();
    let on = |i: usize, key: &str, session: &str| {
        let mut r = Raw::new(format!("{}/mcp", bases[i]), key);
        r.session = Some(session.to_string());
        r
    };
    let mut mine = Raw::new(format!("{}/mcp", bases[0]), &c.gw.key);
    mine.init().await;
    let sid = mine.session.clone().unwrap();
    let (s, r) = call(
        &on(1, &c.gw.key, &sid),
        "fixture__echo",
        json!({"text": "b"}),
    )
    .await;
    assert_eq!((s.as_u16(), reason(&r)), (200, "ok"), "{r}");
    let (s, _) = call(
        &on(2, &metered, &sid),
        "fixture__echo",
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(
        s,
        reqwest::StatusCode::NOT_FOUND,
        "another caller's session"
    );
    let mut forged = sid.clone().into_bytes();
    let at = forged.len() / 2;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (s, _) = call(
        &on(2, &c.gw.key, &forged),
        "fixture__echo",
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::NOT_FOUND, "a forged id");
    let ended = reqwest::Client::new()
        .delete(format!("{}/mcp", bases[2]))
        .bearer_auth(&c.gw.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), reqwest::StatusCode::NO_CONTENT);
    // The replica that never held it refuses at once; those that held it let go within 5 s.
    let started = Instant::now();
    for i in [0, 1, 2] {
        loop {
            let (s, _) = call(
                &on(i, &c.gw.key, &sid),
                "fixture__echo",
                json!({"text": "x"}),
            )
            .await;
            if s == reqwest::StatusCode::NOT_FOUND {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(7),
                "replica {i} still serves an ended session"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(c.pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_run_loses_no_answered_call() {
    let mut c = cluster("killed");
    let clients: Vec<Arc<Raw>> =
        futures::future::join_all((0..8).map(|_| client(c.lb.mcp(), &c.gw.key))).await;
    let run = |from: usize, n: usize| {
        let clients = clients.clone();
        tokio::spawn(async move {
            let mut answered = Vec::new();
            for i in from..from + n {
                let l = &clients[i % clients.len()];
                let body = req(
                    7,
                    "tools/call",
                    json!({ "name": "fixture__echo", "arguments": { "text": format!("call {i}") } }),
                );
                // A call in flight on the killed replica loses its connection: not answered.
                let Ok(resp) = l.post(&body.to_string()).send().await else {
                    continue;
                };
                let Ok(text) = resp.text().await else {
                    continue;
                };
                let r: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if reason(&r) == "ok" {
                    answered.push(i);
                }
            }
            answered
        })
    };
    let load: Vec<_> = (0..4).map(|k| run(k * 1000, 100)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.others[0].kill();
    let mut answered = Vec::new();
    for h in load {
        answered.extend(h.await.unwrap());
    }
    // Calls in flight on the killed replica may fail; the rest are answered by the others.
    assert!(
        answered.len() >= 400 - 8,
        "{} of 400 answered",
        answered.len()
    );
    let after = run(9000, 40).await.unwrap();
    assert_eq!(after.len(), 40, "after the kill every call is answered");

    // Every answered call's request event is in the shared store, each found by its text.
    let store = store::Store::connect(&c.pg.url("killed"), Some(&c.pg.password))
        .await
        .unwrap();
    let lines = store.audit_lines(0, None, None, 0, 100_000).await.unwrap();
    let recorded: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|(_, l)| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "tool.call" && e["outcome"] == "allowed")
        .filter_map(|e| e["arguments"]["text"].as_str().map(str::to_string))
        .collect();
    for i in answered.iter().chain(&after) {
        assert!(
            recorded.contains(&format!("call {i}")),
            "call {i} was answered but its request event is not in the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgres_stopped_every_replica_refuses_and_recovers() {
    let c = cluster("stopped");
    let direct: Vec<Arc<Raw>> = futures::future::join_all(
        c.bases()
            .into_iter()
            .map(|b| client(format!("{b}/mcp"), &c.gw.key)),
    )
    .await;
    c.pg.stop().unwrap();
    for (i, d) in direct.iter().enumerate() {
        // The caller's key cannot be checked (503), or, checked a moment ago, the request event
        // cannot be written (the store is the only audit sink): either way, not run.
        let (status, r) = call(d, "fixture__echo", json!({"text": "hi"})).await;
        match reason(&r) {
            "store_unavailable" => assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE),
            "audit_unavailable" => {}
            other => panic!("replica {i} answered {other} without its store: {r}"),
        }
        // A caller whose key is not yet known cannot be authenticated: 503.
        let fresh = reqwest::Client::new()
            .post(format!("{}/mcp", c.bases()[i]))
            .bearer_auth("pcl_0123456789abcdef_abcdefghijklmnopqrstuvwxyzABCDEFGH")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(req(1, "tools/list", json!({})).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            fresh.status(),
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "replica {i}"
        );
        let body: Value = fresh.json().await.unwrap();
        assert_eq!(reason(&body), "store_unavailable", "{body}");
        let ready = reqwest::get(format!("{}/readyz", c.bases()[i]))
            .await
            .unwrap();
        assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(ready.text().await.unwrap().contains("store unreachable"));
    }
    c.pg.resume().unwrap();
    c.pg.wait_up().unwrap();
    // Every replica is ready again by itself, though no call reached it meanwhile (the
    // balancer sent it nothing while it was not ready), and answers through the balancer.
    for (i, base) in c.bases().iter().enumerate() {
        let started = Instant::now();
        loop {
            let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
            if r.status() == reqwest::StatusCode::OK {
                break;
            }
            let body = r.text().await.unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "replica {i} is not ready again: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for (i, d) in direct.iter().enumerate() {
        let (_, r) = call(d, "fixture__echo", json!({"text": "hi"})).await;
        assert_eq!(reason(&r), "ok", "replica {i} did not recover: {r}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lb = client(c.lb.mcp(), &c.gw.key).await;
    for _ in 0..6 {
        let (_, r) = call(&lb, "fixture__echo", json!({"text": "hi"})).await;
        assert_eq!(reason(&r), "ok", "{r}");
    }
}
