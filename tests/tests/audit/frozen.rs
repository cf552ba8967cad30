//! A frozen disk, for real: `frozen_file.py` holds the audit file's inode lock (a write of its
//! own waits on a page that userfaultfd never supplies), so the gateway's next `O_APPEND` write
//! to it blocks in the kernel, failing nothing, as on a disk that stopped answering.

use std::time::{Duration, Instant};

use portcullis_tests::ops::admin_text_as;
use portcullis_tests::raw::{Raw, req};
use portcullis_tests::{Fixture, Gateway, fixture_server, freeze};
use serde_json::json;

use super::{call, events, verify};

/// `GET path` on the MCP listener, answered within 10 s: (status, body).
async fn probe(gw: &Gateway, path: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{}{path}", gw.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} unanswered: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Whether the runtime worker held in reserve is asleep, by `/metrics` read with `key` (made
/// before the freeze: making one writes to the audit log).
async fn reserve_asleep(gw: &Gateway, key: &str) -> bool {
    let text = admin_text_as(gw, key, "/metrics").await;
    let line = text
        .lines()
        .find(|l| l.starts_with("portcullis_runtime_reserve_asleep "))
        .unwrap_or_else(|| panic!("no reserve gauge in {text}"));
    line.ends_with(" 1")
}

/// One worker serves (the default on two cores), one more is held asleep in reserve. The caller
/// whose own write hangs waits with it (its worker is in the kernel); the reserve is woken, and
/// every other call is refused at the recording cap without reaching the upstream; readiness
/// turns 503 while liveness stays 200, so a balancer moves traffic away. Thawed, the waiting call
/// goes on recorded, calls are served again (the reserve among the serving workers from then
/// on), and the file's chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_frozen_audit_disk_calls_are_refused_at_the_cap_and_readiness_says_so() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start_with_env(
        "audit: { sinks: [{ type: file, path: \"{dir}/audit.jsonl\" }] }\n",
        &fixture_server("fx", &fx.url),
        true,
        &[("TOKIO_WORKER_THREADS", "1")],
    )
    .unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    assert!(
        reserve_asleep(&gw, &auditor).await,
        "no worker held in reserve"
    );
    let mut c = Raw::new(gw.mcp(), &gw.key);
    c.init().await;
    for id in 1..=3 {
        let r = call(&c, id, "fx__echo", json!({ "text": "hi" })).await;
        assert!(r["result"].is_object(), "{r}");
    }
    assert_eq!(probe(&gw, "/readyz").await.0, 200);
    let before = fx.calls();

    let frozen = freeze(&gw.audit_file());
    let first = {
        let body = req(
            9,
            "tools/call",
            json!({ "name": "fx__echo", "arguments": { "text": "frozen" } }),
        )
        .to_string();
        tokio::spawn(c.post(&body).send())
    };
    // Past the stall threshold, readiness names the audit log; liveness still answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, text) = probe(&gw, "/readyz").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("audit log not writable"), "{text}");
    assert_eq!(probe(&gw, "/healthz").await.0, 200);
    assert!(
        !reserve_asleep(&gw, &auditor).await,
        "the reserve was not woken"
    );
    // Another call is refused at the cap, with the reason, and reaches nothing.
    let started = Instant::now();
    let r = call(&c, 10, "fx__echo", json!({ "text": "hi" })).await;
    let took = started.elapsed();
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "audit_unavailable", "{r}");
    assert!(took < Duration::from_secs(8), "refused only after {took:?}");
    assert!(
        !first.is_finished(),
        "the call whose write hangs was answered"
    );
    assert_eq!(
        fx.calls(),
        before,
        "an unrecorded call reached the upstream"
    );

    // Thawed: the first call's event is written, and only then does it run.
    drop(frozen);
    let answer = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the waiting call went on once the disk answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    assert_eq!(fx.calls(), before + 1, "{text}");
    let r = call(&c, 11, "fx__echo", json!({ "text": "hi" })).await;
    assert!(r["result"].is_object(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe(&gw, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not held again: a worker taking the hold mid-run could strand the tasks it put off.
    assert!(!reserve_asleep(&gw, &auditor).await);
    let all = events(&gw.audit_file());
    // Three before, the one that waited, the one refused at the cap (its refusal only: the
    // request event its caller stopped waiting for is not written once the head is free), one after.
    let calls: Vec<String> = all
        .iter()
        .filter(|e| e["kind"] == "tool.call")
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        calls,
        [
            "allowed",
            "allowed",
            "allowed",
            "allowed",
            "audit_unavailable",
            "allowed"
        ],
        "{all:#?}"
    );
    let (ok, out) = verify(&gw.audit_file());
    assert!(ok, "{out}");
}
