use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (dir, Store::open(&url).await.unwrap())
}

#[tokio::test]
async fn issued_key_verifies_and_revocation_sticks() {
    let (_d, s) = store().await;
    let k = s
        .create_key("ci", KeyRole::Client, KeyScope::default())
        .await
        .unwrap();
    let found = s.verify_key(&k.secret).await.unwrap().unwrap();
    assert_eq!(found.id, k.record.id);
    assert_eq!(found.role, KeyRole::Client);
    assert!(s.revoke_key(&k.record.id).await.unwrap());
    assert!(s.verify_key(&k.secret).await.unwrap().is_none());
    assert!(!s.revoke_key(&k.record.id).await.unwrap());
}

#[tokio::test]
async fn wrong_secret_and_garbage_do_not_verify() {
    let (_d, s) = store().await;
    let k = s
        .create_key("ci", KeyRole::Client, KeyScope::default())
        .await
        .unwrap();
    let mut forged = k.secret.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    assert!(s.verify_key(&forged).await.unwrap().is_none());
    assert!(s.verify_key("").await.unwrap().is_none());
    assert!(s.verify_key("pcl__").await.unwrap().is_none());
    assert!(s.verify_key("Bearer something").await.unwrap().is_none());
}

#[tokio::test]
async fn secret_is_not_stored() {
    let (dir, s) = store().await;
    let k = s
        .create_key("ci", KeyRole::Admin, KeyScope::default())
        .await
        .unwrap();
    drop(s);
    let (_, secret) = parse_key(&k.secret).unwrap();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains(secret));
}

#[tokio::test]
async fn scope_round_trips_and_old_stores_gain_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        // A store as the first release wrote it.
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
        use std::str::FromStr;
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER)")
            .execute(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO api_keys VALUES ('00000000000000aa', 'x', 'old', 'client', 1, NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let s = Store::open(&url).await.unwrap();
    let old = s.key("00000000000000aa").await.unwrap().unwrap();
    assert_eq!(old.scope, KeyScope::default());
    let scope = KeyScope {
        org: Some("acme".into()),
        team: Some("research".into()),
        agent: Some("bot".into()),
        grants: vec!["notes/*".into()],
        service: true,
        parent: Some("00000000000000aa".into()),
        user: Some("alice".into()),
    };
    let k = s
        .create_key("new", KeyRole::Client, scope.clone())
        .await
        .unwrap();
    let found = s.verify_key(&k.secret).await.unwrap().unwrap();
    assert_eq!(found.scope, scope);
}

fn call_key<'a>(digest: &'a str) -> ApprovalKey<'a> {
    ApprovalKey {
        requester: "key:aaaa",
        server: "notes",
        tool: "create_note",
        arguments: digest,
        fingerprint: "f1",
    }
}

async fn file(s: &Store, digest: &str, ttl_ms: i64) -> ApprovalRecord {
    s.create_approval(&NewApproval {
        key: call_key(digest),
        principals: &["key:aaaa".to_owned(), "user:alice".to_owned()],
        class: "write",
        preview: "{}",
        target: None,
        ttl_ms,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_approval_is_used_once_and_only_by_the_identical_call() {
    let (_d, s) = store().await;
    let r = file(&s, "d1", 60_000).await;
    assert_eq!(r.status, "pending");
    // Not usable before it is approved.
    assert_eq!(s.use_approval(&call_key("d1")).await.unwrap(), None);
    s.decide_approval(&r.id, true, "bob", "ok", 60_000)
        .await
        .unwrap();
    // Other arguments or another fingerprint do not match.
    assert_eq!(s.use_approval(&call_key("d2")).await.unwrap(), None);
    let mut refp = call_key("d1");
    refp.fingerprint = "f2";
    assert_eq!(s.use_approval(&refp).await.unwrap(), None);
    // The identical call uses it once.
    assert_eq!(
        s.use_approval(&call_key("d1")).await.unwrap(),
        Some(r.id.clone())
    );
    assert_eq!(s.use_approval(&call_key("d1")).await.unwrap(), None);
    assert!(!s.use_approval_id(&r.id).await.unwrap());
    assert_eq!(s.approval(&r.id).await.unwrap().unwrap().status, "used");
    // A decided request cannot be decided again.
    assert!(matches!(
        s.decide_approval(&r.id, true, "bob", "again", 60_000).await,
        Err(DecideError::NotPending { .. })
    ));
}

#[tokio::test]
async fn concurrent_identical_calls_use_one_approval_once() {
    let (_d, s) = store().await;
    let r = file(&s, "d1", 60_000).await;
    s.decide_approval(&r.id, true, "bob", "ok", 60_000)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.use_approval(&call_key("d1")).await.unwrap()
        }));
    }
    let mut used = 0;
    for t in tasks {
        used += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(used, 1);
}

#[tokio::test]
async fn expired_requests_cannot_be_decided_or_used() {
    let (_d, s) = store().await;
    let r = file(&s, "d1", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(s.approval(&r.id).await.unwrap().unwrap().status, "expired");
    assert!(
        s.decide_approval(&r.id, true, "bob", "late", 60_000)
            .await
            .is_err()
    );
    // Approved, then not used in time.
    let r = file(&s, "d2", 60_000).await;
    s.decide_approval(&r.id, true, "bob", "ok", 1)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(s.use_approval(&call_key("d2")).await.unwrap(), None);
    assert_eq!(s.approval(&r.id).await.unwrap().unwrap().status, "expired");
    // Listings apply expiry the same way.
    let live = file(&s, "d3", 60_000).await;
    let expired = s
        .approvals(Some(ApprovalStatus::Expired), 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 2);
    let pending = s
        .approvals(Some(ApprovalStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [live.id.as_str()]
    );
    assert_eq!(s.approvals(None, 2).await.unwrap().len(), 2);
    assert_eq!(s.open_approvals().await.unwrap().len(), 1);
    assert!(matches!(
        s.decide_approval("apr_missing", true, "bob", "x", 1).await,
        Err(DecideError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_key_whose_lineage_cannot_be_vouched_for_does_not_authenticate() {
    let (_d, s) = store().await;
    let scope = |parent: Option<&str>, org: Option<&str>| KeyScope {
        grants: vec!["a/*".to_owned()],
        parent: parent.map(str::to_owned),
        org: org.map(str::to_owned),
        ..KeyScope::default()
    };
    let parent = s
        .create_key("p", KeyRole::Client, scope(None, None))
        .await
        .unwrap();
    let pid = parent.record.id.clone();
    let child = s
        .create_key("c", KeyRole::Client, scope(Some(&pid), None))
        .await
        .unwrap();
    assert_eq!(
        s.lineage(&child.record).await.unwrap(),
        Some(vec![pid.clone()])
    );
    // Wider than its parent on a level the parent lacks.
    let wider = s
        .create_key("w", KeyRole::Client, scope(Some(&pid), Some("acme")))
        .await
        .unwrap();
    assert_eq!(s.lineage(&wider.record).await.unwrap(), None);
    // A parent that is not there.
    let orphan = s
        .create_key("o", KeyRole::Client, scope(Some("gone"), None))
        .await
        .unwrap();
    assert_eq!(s.lineage(&orphan.record).await.unwrap(), None);
    // A loop between two keys.
    sqlx::query("UPDATE api_keys SET parent = ? WHERE id = ?")
        .bind(&child.record.id)
        .bind(&pid)
        .execute(&s.pool)
        .await
        .unwrap();
    assert_eq!(s.lineage(&child.record).await.unwrap(), None);
    // A store that cannot answer is an error (the authenticator's 503), never a lineage.
    s.close().await;
    assert!(s.lineage(&child.record).await.is_err());
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
    let used: Vec<(String, i64)> = s
        .budget_usage(&["2026-12-05".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.budget, r.used))
        .collect();
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
    let used: Vec<(String, i64)> = s
        .budget_usage(&["2026-12-05".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.budget, r.used))
        .collect();
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
async fn session_records_are_shared_by_handles_and_ending_forgets_subscriptions() {
    let (dir, s) = store().await;
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let two = Store::open(&url).await.unwrap();
    let k = s.session_key().await.unwrap();
    assert_eq!(two.session_key().await.unwrap(), k);
    s.add_subscription("x", "u1", i64::MAX).await.unwrap();
    s.add_subscription("x", "u0", 1).await.unwrap();
    // Past its session's expiry a subscription is not reported.
    assert_eq!(two.subscriptions("x").await.unwrap(), ["u1"]);
    assert!(!two.session_ended("x").await.unwrap());
    two.end_session("x", i64::MAX).await.unwrap();
    assert!(s.session_ended("x").await.unwrap());
    assert!(s.subscriptions("x").await.unwrap().is_empty());
    assert_eq!(
        s.sessions_ended_since(now_ms() + 60_000)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn audit_retention_deletes_only_events_older_than_the_cut() {
    let (_d, s) = store().await;
    let mut w = s.audit_writer().unwrap();
    // 12,000 old events (more than one pruning chunk) and two recent ones.
    let old: Vec<String> = (0..12_000).map(|i| format!("{{\"seq\":{i}}}")).collect();
    let rows: Vec<AuditRow<'_>> = old
        .iter()
        .enumerate()
        .map(|(i, line)| AuditRow {
            chain: "c",
            seq: i as i64 + 1,
            at_ms: 1_000 + i as i64,
            session: None,
            trace_id: None,
            line,
        })
        .collect();
    w.append(&rows).unwrap();
    let recent = [
        AuditRow {
            chain: "c",
            seq: 12_001,
            at_ms: 50_000,
            session: None,
            trace_id: None,
            line: "{\"seq\":12001}",
        },
        AuditRow {
            chain: "c",
            seq: 12_002,
            at_ms: 60_000,
            session: None,
            trace_id: None,
            line: "{\"seq\":12002}",
        },
    ];
    w.append(&recent).unwrap();
    // Stamped before the cut but written after a newer event: it stays with its neighbours.
    let late = [AuditRow {
        chain: "c",
        seq: 12_003,
        at_ms: 2_000,
        session: None,
        trace_id: None,
        line: "{\"seq\":12003}",
    }];
    w.append(&late).unwrap();
    assert_eq!(s.prune_audit_events(500).await.unwrap(), 0);
    assert_eq!(s.prune_audit_events(50_000).await.unwrap(), 12_000);
    let left = s.audit_lines(0, None, None, 0, 100).await.unwrap();
    let lines: Vec<&str> = left.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        lines,
        ["{\"seq\":12001}", "{\"seq\":12002}", "{\"seq\":12003}"]
    );
    // A cut after every stamp takes everything.
    assert_eq!(s.prune_audit_events(100_000).await.unwrap(), 3);
    assert_eq!(s.last_audit_line().await.unwrap(), None);
}
