//! A frozen store disk, for real: `frozen_file.py` holds the inode lock of the SQLite store's
//! write-ahead log, so the store's next commit blocks in the kernel, failing nothing, as on a disk
//! that stopped answering. Budgets are reserved in that store before each call.

use portcullis_tests::freeze;

use super::*;

/// The budget's units spent so far, as `/admin/limits` reports them.
async fn used(gw: &Gateway, auditor: &str) -> i64 {
    let state: Value =
        serde_json::from_str(&admin_text_as(gw, auditor, "/admin/limits").await).unwrap();
    state["limits"][0]["budget"]["principals"][0]["used"]
        .as_i64()
        .unwrap_or_else(|| panic!("no usage in {state}"))
}

/// While the store's disk hangs, a call under a budget waits for its reservation no longer than
/// the store's deadline, is refused `limits_unavailable` and reaches nothing; a call under no
/// budget goes on meanwhile (nothing on its path waits for the store). Thawed, the reservation
/// that was under way when the caller gave up is given back, and budgeted calls run again.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_frozen_store_disk_budgeted_calls_are_refused_and_others_go_on() {
    let fx = Fixture::start("both").unwrap();
    let limits = "limits:\n  - { match: \"key:*\", server: fixture, tool: echo, budget: { units: 100, per: month } }\n";
    let gw = Gateway::start_with(limits, &servers(&fx.url)).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let c = client(&gw.base, &gw.key).await;
    for _ in 0..2 {
        assert_eq!(
            reason(&call(&c, "fixture__echo", json!({ "text": "hi" })).await),
            "ok"
        );
    }
    assert_eq!(used(&gw, &auditor).await, 2);
    let before = fx.calls();

    let frozen = freeze(&gw.dir.path().join("store.db-wal"));
    let budgeted = {
        let c = c.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = call(&c, "fixture__echo", json!({ "text": "frozen" })).await;
            (r, started.elapsed())
        })
    };
    // Meanwhile a call no budget covers is served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        call(&c, "fixture__slow", json!({ "ms": 1 })),
    )
    .await
    .expect("a call under no budget waited for the frozen store");
    assert_eq!(reason(&r), "ok", "{r}");
    assert!(
        !budgeted.is_finished(),
        "the budgeted call did not wait for its reservation"
    );
    let (r, took) = tokio::time::timeout(Duration::from_secs(20), budgeted)
        .await
        .expect("the budgeted call waited for the frozen store past its deadline")
        .unwrap();
    assert_eq!(reason(&r), "limits_unavailable", "{r}");
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        took < Duration::from_secs(15),
        "refused only after {took:?}"
    );
    assert_eq!(
        fx.calls(),
        before + 1,
        "a call whose budget could not be reserved reached the upstream"
    );

    // Thawed: the reservation the refused caller left is given back, not spent.
    drop(frozen);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(&c, "fixture__echo", json!({ "text": "again" })).await;
        match reason(&r) {
            "ok" => break,
            "limits_unavailable" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("after the thaw ({other}): {r}"),
        }
    }
    assert_eq!(
        used(&gw, &auditor).await,
        3,
        "the refused call's units stayed spent"
    );
}
