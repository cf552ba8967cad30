//! The store on a real PostgreSQL server: the same semantics as on SQLite (keys, levers,
//! approvals, budgets, the audit sink's rows, the operator record), exact under concurrency
//! from several handles as several replicas have, and lever changes announced to every
//! listener.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use portcullis_tests::bin;
use portcullis_tests::postgres::Postgres;
use store::{
    ApprovalKey, Backend, Charge, KeyRole, KeyScope, NewApproval, NewTask, Store, TaskStatus,
};

async fn open(pg: &Postgres, db: &str) -> (String, Store) {
    let url = pg.database(db).unwrap();
    let s = Store::connect(&url, Some(&pg.password)).await.unwrap();
    (url, s)
}

fn charge(budget: &str, cost: i64, units: i64) -> Charge {
    Charge {
        budget: budget.into(),
        principal: "team:research".into(),
        window: "2026-12-05".into(),
        cost,
        units,
        epoch: 0,
    }
}

fn call_key(digest: &str) -> ApprovalKey<'_> {
    ApprovalKey {
        requester: "key:aaaa",
        server: "notes",
        tool: "create_note",
        arguments: digest,
        fingerprint: "f1",
    }
}

#[tokio::test]
async fn the_store_keeps_its_semantics_on_postgres() {
    let pg = Postgres::start().unwrap();
    let (url, s) = open(&pg, "semantics").await;
    assert_eq!(s.backend(), Backend::Postgres);
    // Migrating again (another replica starting) changes nothing.
    let again = Store::connect(&url, Some(&pg.password)).await.unwrap();
    // A wrong password is an error, never a store.
    assert!(Store::connect(&url, Some("wrong")).await.is_err());

    // Keys: scope round-trips (the `user` column is quoted), revocation cascades.
    let scope = KeyScope {
        org: Some("acme".into()),
        team: Some("research".into()),
        agent: None,
        user: Some("alice".into()),
        grants: vec!["notes/*".into()],
        service: true,
        parent: None,
    };
    let parent = s
        .create_key("p", KeyRole::Client, scope.clone())
        .await
        .unwrap();
    let found = again.verify_key(&parent.secret).await.unwrap().unwrap();
    assert_eq!(found.scope, scope);
    let child_scope = KeyScope {
        parent: Some(parent.record.id.clone()),
        ..KeyScope::default()
    };
    let child = s
        .create_key("c", KeyRole::Client, child_scope)
        .await
        .unwrap();
    let child_rec = s.verify_key(&child.secret).await.unwrap().unwrap();
    assert_eq!(
        s.lineage(&child_rec).await.unwrap(),
        Some(vec![parent.record.id.clone()])
    );
    assert!(s.revoke_key(&parent.record.id).await.unwrap());
    assert!(s.verify_key(&child.secret).await.unwrap().is_none());
    assert_eq!(s.list_keys().await.unwrap().len(), 2);

    // Levers, and the announcement another replica hears.
    let mut watch = again
        .watch_levers()
        .await
        .unwrap()
        .expect("postgres listens");
    s.set_switch("global", "*", true, "incident", "alice")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("the change is announced within 2 s")
        .unwrap();
    let sw = again.switches().await.unwrap();
    assert!(sw[0].engaged && sw[0].reason == "incident");
    s.set_mode("read_only", "drill", "alice").await.unwrap();
    assert_eq!(again.mode().await.unwrap().unwrap().mode, "read_only");

    // Approvals: used once, by the identical call only, listed with every filter.
    let r = s
        .create_approval(&NewApproval {
            key: call_key("d1"),
            principals: &["key:aaaa".to_owned()],
            class: "write",
            preview: "{}",
            target: None,
            ttl_ms: 60_000,
        })
        .await
        .unwrap();
    assert_eq!(
        s.pending_approval(&call_key("d1"))
            .await
            .unwrap()
            .unwrap()
            .id,
        r.id
    );
    again
        .decide_approval(&r.id, true, "bob", "ok", 60_000)
        .await
        .unwrap();
    assert_eq!(s.use_approval(&call_key("d2")).await.unwrap(), None);
    let uses = futures::future::join_all((0..20).map(|i| {
        let h = if i % 2 == 0 { s.clone() } else { again.clone() };
        async move { h.use_approval(&call_key("d1")).await.unwrap() }
    }))
    .await;
    assert_eq!(
        uses.iter().flatten().count(),
        1,
        "one approval runs one call"
    );
    for status in [
        None,
        Some(store::ApprovalStatus::Used),
        Some(store::ApprovalStatus::Expired),
    ] {
        s.approvals(status, 10).await.unwrap();
    }
    assert_eq!(
        s.approvals(Some(store::ApprovalStatus::Used), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // The operator record and the audit sink's rows.
    let seq = s
        .record_event("test", "alice", &serde_json::json!({"a": 1}))
        .await
        .unwrap();
    assert_eq!(
        again.events_since(seq - 1, 10).await.unwrap()[0].detail["a"],
        1
    );
    let key = s.audit_key().await.unwrap();
    assert_eq!(again.audit_key().await.unwrap(), key);
    let mut writer = s.audit_writer().unwrap();
    // The writer runs on a thread of its own, as the audit sink's does.
    std::thread::spawn(move || {
        writer
            .append(&[store::AuditRow {
                chain: "c1",
                seq: 1,
                at_ms: 5,
                session: Some("s"),
                trace_id: None,
                line: "{\"seq\":1}",
            }])
            .unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        s.last_audit_line().await.unwrap().as_deref(),
        Some("{\"seq\":1}")
    );
    assert_eq!(
        s.audit_lines(0, Some("s"), None, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.audit_lines(0, Some("t"), None, 0, 10)
            .await
            .unwrap()
            .len(),
        0
    );
}

/// Tasks on PostgreSQL: found only by their caller on their endpoint, claimed by exactly one of
/// 20 concurrent looks from two handles (two replicas), ended once, listed newest first.
#[tokio::test]
async fn a_task_is_claimed_once_across_handles_on_postgres() {
    let pg = Postgres::start().unwrap();
    let (url, one) = open(&pg, "tasks").await;
    let two = Store::connect(&url, Some(&pg.password)).await.unwrap();
    let new = NewTask {
        subject: "key:aaaa",
        endpoint: "/mcp",
        approval: "apr_1",
        call: r#"{"name":"notes__create_note","arguments":{}}"#,
        ttl_ms: 60_000,
        message: "waiting",
    };
    let t = one.create_task(&new).await.unwrap();
    assert!(two.task(&t.id, "key:aaaa", "/mcp").await.unwrap().is_some());
    assert!(two.task(&t.id, "key:bbbb", "/mcp").await.unwrap().is_none());
    let looks = (0..20).map(|i| {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        let id = t.id.clone();
        tokio::spawn(async move { s.claim_task(&id, "running").await.unwrap() })
    });
    let won = futures::future::join_all(looks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    assert!(!two.cancel_task(&t.id, "late", "{}").await.unwrap());
    let running = TaskStatus::Running;
    assert!(
        two.finish_task(&t.id, running, TaskStatus::Completed, "ran", Some("{}"))
            .await
            .unwrap()
    );
    assert!(
        !one.finish_task(&t.id, running, TaskStatus::Failed, "again", None)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = one.create_task(&new).await.unwrap();
    let listed: Vec<String> = one
        .tasks("key:aaaa", "/mcp", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        listed,
        vec![second.id.clone(), t.id.clone()],
        "newest first"
    );
    let ended = one.task(&t.id, "key:aaaa", "/mcp").await.unwrap().unwrap();
    assert_eq!((ended.status, ended.call), (TaskStatus::Completed, None));
}

#[tokio::test]
async fn budgets_are_exact_across_handles_on_postgres() {
    let pg = Postgres::start().unwrap();
    let (url, one) = open(&pg, "budgets").await;
    let two = Store::connect(&url, Some(&pg.password)).await.unwrap();
    let calls = (0..200).map(|i| {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move {
            s.reserve_budgets(&mut [charge("wide", 1, 1000), charge("b", 1, 10)])
                .await
                .unwrap()
        })
    });
    let spent = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_none())
        .count();
    assert_eq!(spent, 10);
    let rows = one.budget_usage(&["2026-12-05".into()]).await.unwrap();
    let used: Vec<(String, i64)> = rows.iter().map(|r| (r.budget.clone(), r.used)).collect();
    assert_eq!(used, vec![("b".into(), 10), ("wide".into(), 10)]);
    // Refund, reset and raise as on SQLite.
    let mut c = [charge("b", 1, 10)];
    assert_eq!(one.reserve_budgets(&mut c).await.unwrap(), Some(0));
    let row = two
        .adjust_budget("b", "team:research", "2026-12-05", true, 5)
        .await
        .unwrap();
    assert_eq!((row.used, row.extra), (0, 5));
    assert_eq!(one.reserve_budgets(&mut c).await.unwrap(), None);
    assert_eq!(c[0].epoch, 1);
    one.refund_budget(&c[0]).await.unwrap();
    assert_eq!(
        one.budget_usage(&["2026-12-05".into()]).await.unwrap()[0].used,
        0
    );
    assert_eq!(one.prune_budgets(i64::MAX).await.unwrap(), 2);
}

#[tokio::test]
async fn a_stopped_server_is_an_error_and_the_store_recovers() {
    let pg = Postgres::start().unwrap();
    let (_url, s) = open(&pg, "recover").await;
    s.ping().await.unwrap();
    pg.stop().unwrap();
    assert!(s.ping().await.is_err());
    assert!(
        s.verify_key("pcl_0123456789abcdef_0123456789abcdef0123456789abcdef")
            .await
            .is_err()
    );
    assert!(s.reserve_budgets(&mut [charge("b", 1, 10)]).await.is_err());
    pg.resume().unwrap();
    pg.wait_up().unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if s.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the pool reconnects once the server is back");
    assert_eq!(
        s.reserve_budgets(&mut [charge("b", 1, 10)]).await.unwrap(),
        None
    );
}

/// `portcullis migrate --config FILE`.
fn migrate(config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(bin("portcullis"))
        .args(["migrate", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test]
async fn migrate_creates_the_tables_and_a_password_in_the_url_is_refused_at_load() {
    let pg = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        format!("{}servers: {{}}\n", pg.store_config("migrated").unwrap()),
    )
    .unwrap();
    let out = migrate(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("(postgres) is at schema version") && !stdout.contains(&pg.password),
        "{stdout}"
    );
    // The tables exist: a store opened on them works at once.
    let s = Store::connect(&pg.url("migrated"), Some(&pg.password))
        .await
        .unwrap();
    assert!(s.list_keys().await.unwrap().is_empty());

    // A password written into the URL never gets as far as a connection.
    let leaky = pg
        .url("migrated")
        .replace("portcullis@", &format!("portcullis:{}@", pg.password));
    std::fs::write(&config, format!("store: {leaky}\nservers: {{}}\n")).unwrap();
    let out = migrate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("p.yaml:1:8") && stderr.contains("store_password"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&pg.password),
        "the error repeats the password: {stderr}"
    );
    // A wrong password is an error naming the store, not the password.
    std::fs::write(dir.path().join("wrong"), "not-it").unwrap();
    std::fs::write(
        &config,
        format!(
            "store: {}\nstore_password: file:{}\nservers: {{}}\n",
            pg.url("migrated"),
            dir.path().join("wrong").display()
        ),
    )
    .unwrap();
    let out = migrate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("cannot open store") && !stderr.contains("not-it"),
        "{stderr}"
    );
}
