//! Budget reservations: exact across handles and groups, all or none per call, refunds,
//! resets and raises.

use super::*;

/// Units used in the test day's window, by budget.
async fn used_by_budget(s: &Store) -> Vec<(String, i64)> {
    s.budget_usage(&["2026-12-05".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.budget, r.used))
        .collect()
}

fn charge(budget: &str, cost: i64, units: i64) -> Charge {
    Charge {
        budget: budget.into(),
        principal: "team:a".into(),
        window: "2026-12-05".into(),
        cost,
        units,
        epoch: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budgets_never_overspend_under_concurrency_across_handles() {
    let (dir, one) = store().await;
    // A second pool on the same file, as a second process has.
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let two = Store::open(&url).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..120 {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        calls.push(tokio::spawn(async move {
            s.reserve_budgets(&mut [charge("b", 1, 10)]).await.unwrap()
        }));
    }
    let mut spent = 0;
    for c in calls {
        if c.await.unwrap().is_none() {
            spent += 1;
        }
    }
    assert_eq!(spent, 10);
    let rows = one.budget_usage(&["2026-12-05".into()]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].used, rows[0].extra), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_reserved_in_one_group_each_spend_all_their_budgets_or_none() {
    let (_d, s) = store().await;
    // 60 calls at once, each spending from `wide` (room for all) and `narrow` (room for 7),
    // and every third also from `other` (room for 2): calls share transactions, yet each one
    // spends all three or nothing.
    let mut calls = Vec::new();
    for i in 0..60 {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            let mut charges = vec![charge("wide", 1, 1000), charge("narrow", 1, 7)];
            if i % 3 == 0 {
                charges.push(charge("other", 1, 2));
            }
            let verdict = s.reserve_budgets(&mut charges).await.unwrap();
            (verdict, charges)
        }));
    }
    let mut spent = 0;
    let mut with_other = 0;
    for c in calls {
        let (verdict, charges) = c.await.unwrap();
        if verdict.is_none() {
            spent += 1;
            with_other += usize::from(charges.len() == 3);
        }
    }
    let used = used_by_budget(&s).await;
    assert_eq!(spent, 7);
    assert!(with_other <= 2, "{with_other}");
    // They did share transactions.
    assert!(s.reservation_groups() < 60, "{}", s.reservation_groups());
    assert_eq!(
        used,
        vec![
            ("narrow".into(), 7),
            ("other".into(), with_other as i64),
            ("wide".into(), 7)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_group_refuses_every_call_that_fails_alone_and_spends_nothing() {
    let (_d, s) = store().await;
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, 10)]).await.unwrap(),
        None
    );
    s.execute_for_test("DROP TABLE budget_usage").await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.reserve_budgets(&mut [charge("b", 1, 10)]).await })
        })
        .collect();
    for c in calls {
        assert!(c.await.unwrap().is_err());
    }
}

#[tokio::test]
async fn a_closed_store_refuses_a_reservation() {
    let (_d, s) = store().await;
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, 10)]).await.unwrap(),
        None
    );
    s.close().await;
    assert!(s.reserve_budgets(&mut [charge("b", 1, 10)]).await.is_err());
}

/// The writing connection cannot be opened (its file is not there): a reservation is refused
/// with the reason, and the audit store sink's batch fails, so neither can be taken as done.
#[tokio::test]
async fn a_writing_connection_that_cannot_open_refuses_reservations_and_audit_batches() {
    let s = Store::unreachable().unwrap();
    let e = s
        .reserve_budgets(&mut [charge("b", 1, 10)])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unable to open"), "{e}");
    let mut w = s.audit_writer().unwrap();
    let row = AuditRow {
        chain: "c",
        seq: 1,
        at_ms: 1,
        session: None,
        trace_id: None,
        line: "{}",
    };
    assert!(w.append(&[row]).is_err());
}

#[tokio::test]
async fn a_call_spends_all_its_budgets_or_none() {
    let (_d, s) = store().await;
    // `wide` has room, `narrow` has room for one: the second call spends nothing at all.
    let both = [charge("wide", 2, 100), charge("narrow", 2, 3)];
    assert_eq!(s.reserve_budgets(&mut both.clone()).await.unwrap(), None);
    assert_eq!(s.reserve_budgets(&mut both.clone()).await.unwrap(), Some(1));
    let used = used_by_budget(&s).await;
    assert_eq!(used, vec![("narrow".into(), 2), ("wide".into(), 2)]);
    // A cost larger than the whole budget never fits, even on a fresh window.
    assert_eq!(
        s.reserve_budgets(&mut [charge("small", 5, 4)])
            .await
            .unwrap(),
        Some(0)
    );
    assert!(
        s.budget_usage(&["2026-12-05".into()])
            .await
            .unwrap()
            .iter()
            .all(|r| r.budget != "small")
    );
}

#[tokio::test]
async fn refunds_resets_and_raises_change_what_is_left() {
    let (_d, s) = store().await;
    let c = charge("b", 1, 2);
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), None);
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), None);
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), Some(0));
    s.refund_budget(&c).await.unwrap();
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), None);
    let raised = s
        .adjust_budget("b", "team:a", "2026-12-05", false, 3)
        .await
        .unwrap();
    assert_eq!((raised.used, raised.extra), (2, 3));
    for _ in 0..3 {
        assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), None);
    }
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), Some(0));
    let reset = s
        .adjust_budget("b", "team:a", "2026-12-05", true, 0)
        .await
        .unwrap();
    assert_eq!((reset.used, reset.extra), (0, 3));
    // A raise lets through a call that costs more than the budget's own units.
    let big = Charge {
        cost: 4,
        ..c.clone()
    };
    s.adjust_budget("b", "team:a", "2026-12-05", true, 0)
        .await
        .unwrap();
    assert_eq!(s.reserve_budgets(&mut [big.clone()]).await.unwrap(), None);
    // Rows not changed since a moment are pruned; later ones stay.
    assert_eq!(s.prune_budgets(0).await.unwrap(), 0);
    assert!(s.prune_budgets(now_ms() + 1).await.unwrap() >= 1);
    assert!(
        s.budget_usage(&["2026-12-05".into()])
            .await
            .unwrap()
            .is_empty()
    );
    // Another window starts from nothing.
    let next = Charge {
        window: "2026-12-06".into(),
        ..c
    };
    assert_eq!(s.reserve_budgets(&mut [next]).await.unwrap(), None);
}

#[tokio::test]
async fn a_window_raised_before_its_first_call_charges_against_the_raise() {
    let (_d, s) = store().await;
    // The raise creates the window's row (nothing used, 3 extra): a call costing more than the
    // budget's own units fits in units plus raise, and is charged to that row, not a new one.
    s.adjust_budget("b", "team:a", "2026-12-05", false, 3)
        .await
        .unwrap();
    let c = charge("b", 5, 4);
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), None);
    assert_eq!(s.reserve_budgets(&mut [c.clone()]).await.unwrap(), Some(0));
    let rows = s.budget_usage(&["2026-12-05".into()]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].used, rows[0].extra), (5, 3));
    // A full window is refused and left as it is; a call that fits in what is left is charged.
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 3, 4)]).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 2, 4)]).await.unwrap(),
        None
    );
    let rows = s.budget_usage(&["2026-12-05".into()]).await.unwrap();
    assert_eq!((rows.len(), rows[0].used, rows[0].extra), (1, 7, 3));
}

#[tokio::test]
async fn a_refund_after_a_reset_gives_back_nothing_the_reset_already_did() {
    let (_d, s) = store().await;
    // Two calls in flight hold both units; an operator resets the window meanwhile.
    let mut first = [charge("b", 1, 2)];
    let mut second = [charge("b", 1, 2)];
    assert_eq!(s.reserve_budgets(&mut first).await.unwrap(), None);
    assert_eq!(s.reserve_budgets(&mut second).await.unwrap(), None);
    s.adjust_budget("b", "team:a", "2026-12-05", true, 0)
        .await
        .unwrap();
    // Two new calls spend the fresh window; the old calls' refunds must not make room for more.
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, 2)]).await.unwrap(),
        None
    );
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, 2)]).await.unwrap(),
        None
    );
    s.refund_budget(&first[0]).await.unwrap();
    s.refund_budget(&second[0]).await.unwrap();
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, 2)]).await.unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn a_windows_first_call_is_charged_when_its_cost_is_the_whole_budget_and_no_more() {
    let (_d, s) = store().await;
    // One unit over the budget: refused, and the window is not created.
    assert_eq!(
        s.reserve_budgets(&mut [charge("over", 5, 4)])
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(used_by_budget(&s).await, Vec::new());
    // Exactly the budget: charged, the window created with all of it used; the next unit is
    // refused and leaves the window as it is.
    assert_eq!(
        s.reserve_budgets(&mut [charge("whole", 4, 4)])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.reserve_budgets(&mut [charge("whole", 1, 4)])
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(used_by_budget(&s).await, vec![("whole".to_string(), 4)]);
}

#[tokio::test]
async fn a_charge_whose_sum_would_overflow_is_refused_and_leaves_the_window() {
    let (_d, s) = store().await;
    let most = i64::MAX;
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 5, most)])
            .await
            .unwrap(),
        None
    );
    // 5 used plus the largest cost cannot be counted: refused, the window as it was (SQLite's
    // own sum would have turned into a float, and the row with it).
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", most, most)])
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(used_by_budget(&s).await, vec![("b".to_string(), 5)]);
    // A raise past the largest count leaves the room at the largest, not wrapped round to
    // below what is used.
    s.adjust_budget("b", "team:a", "2026-12-05", false, most)
        .await
        .unwrap();
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, most)])
            .await
            .unwrap(),
        None
    );
    assert_eq!(used_by_budget(&s).await, vec![("b".to_string(), 6)]);
}
