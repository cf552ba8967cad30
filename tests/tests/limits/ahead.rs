//! Budget units reserved ahead: under a budget of 4,096 units, a process reserves four calls'
//! units beyond its call's own (at most 1/1024 of the budget), spends them on the next calls
//! without the store, and gives back what it did not spend once idle and when it shuts down, so
//! the store ends counting exactly the calls made; an operator's reset forgives what it holds.
//! A budget marked `exact` holds nothing ahead.

use super::*;

/// The budget's units spent so far, as the admin listener at `admin` reports them.
async fn used_at(admin: &str, auditor: &str) -> i64 {
    let text = portcullis_tests::ops::admin_get(admin, auditor, "/admin/limits").await;
    let state: Value = serde_json::from_str(&text).unwrap();
    state["limits"][0]["budget"]["principals"][0]["used"]
        .as_i64()
        .unwrap_or_else(|| panic!("no usage in {state}"))
}

/// Waits up to 10 s for the usage at `admin` to read `want`; what it read last.
async fn settles_at(admin: &str, auditor: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = used_at(admin, auditor).await;
        if used == want || Instant::now() > deadline {
            return used;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether reads made now still see the units held ahead by calls made since `since`: held for
/// a second from an answer that came within a second, so judged only within 900 ms. A runner
/// that stalled longer sees them go back, which is not what these reads test (the settled
/// counts after them are checked however long it took).
fn within_a_lease(since: Instant) -> bool {
    let took = since.elapsed();
    let fresh = took < Duration::from_millis(900);
    if !fresh {
        eprintln!("held units not checked: the calls and reads took {took:?}");
    }
    fresh
}

/// `n` calls to `echo` through `c`, one after another, each answered.
async fn one_by_one(c: &Raw, n: usize) {
    for i in 0..n {
        let r = call(c, "fixture__echo", json!({ "text": format!("{i}") })).await;
        assert_eq!(reason(&r), "ok", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_reserved_ahead_are_spent_then_given_back_when_idle_and_at_shutdown() {
    let fx = Fixture::start("both").unwrap();
    let limits =
        "limits:\n  - { match: \"key:*\", server: fixture, budget: { units: 4096, per: month } }\n";
    let gw = Gateway::start_with(limits, &servers(&fx.url)).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let c = client(&gw.base, &gw.key).await;
    let began = Instant::now();
    one_by_one(&c, 3).await;
    // The first call reserved its unit and four ahead; the next two spent two of those. (Read
    // within the second the units are held for.)
    let used = used_at(&gw.admin, &auditor).await;
    let metrics = admin_text_as(&gw, &auditor, "/metrics").await;
    if within_a_lease(began) {
        assert_eq!(used, 5);
        assert!(
            metrics.contains("\nportcullis_budget_units_held 2\n"),
            "{metrics}"
        );
    }
    // Idle, the two left go back.
    assert_eq!(settles_at(&gw.admin, &auditor, 3).await, 3);
    assert_eq!(fx.calls(), 3, "counted at the upstream");

    // Held again; an operator resets the window: what the process held is forgiven with the
    // rest, not spent in the new window.
    let began = Instant::now();
    one_by_one(&c, 1).await;
    let used = used_at(&gw.admin, &auditor).await;
    if within_a_lease(began) {
        assert_eq!(used, 8);
    }
    let admin = gw.operator_key("admin", Some("ann")).unwrap();
    let state: Value =
        serde_json::from_str(&admin_text_as(&gw, &auditor, "/admin/limits").await).unwrap();
    let principal = state["limits"][0]["budget"]["principals"][0]["principal"].clone();
    let reset =
        json!({ "entry": 0, "principal": principal, "reset": true, "reason": "new quarter" });
    let (status, row) = admin_post(&gw, &admin, "/admin/limits/adjust", reset).await;
    assert_eq!((status, row["used"].as_i64()), (200, Some(0)), "{row}");
    let metrics = admin_text_as(&gw, &auditor, "/metrics").await;
    assert!(
        metrics.contains("\nportcullis_budget_units_held 0\n"),
        "{metrics}"
    );

    // Held again, then the process is stopped: they go back as it shuts down.
    let other = gw.another().unwrap();
    let began = Instant::now();
    one_by_one(&c, 2).await;
    let used = used_at(&other.admin, &auditor).await;
    if within_a_lease(began) {
        assert_eq!(used, 5);
    }
    gw.signal("TERM");
    assert_eq!(settles_at(&other.admin, &auditor, 2).await, 2);
    assert_eq!(fx.calls(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_marked_exact_is_counted_call_by_call_however_large() {
    let fx = Fixture::start("both").unwrap();
    let limits = "limits:\n  - { match: \"key:*\", server: fixture, budget: { units: 4096, per: month, exact: true } }\n";
    let gw = Gateway::start_with(limits, &servers(&fx.url)).unwrap();
    let auditor = gw.operator_key("auditor", None).unwrap();
    let c = client(&gw.base, &gw.key).await;
    one_by_one(&c, 3).await;
    assert_eq!(used_at(&gw.admin, &auditor).await, 3, "nothing held ahead");
    let metrics = admin_text_as(&gw, &auditor, "/metrics").await;
    assert!(
        metrics.contains("\nportcullis_budget_units_held 0\n"),
        "{metrics}"
    );
    let state: Value =
        serde_json::from_str(&admin_text_as(&gw, &auditor, "/admin/limits").await).unwrap();
    assert_eq!(
        state["limits"][0]["budget"]["exact"],
        json!(true),
        "{state}"
    );
}
