use super::*;

mod budgets;

/// A SQLite store keeps no index on its events but `(chain, seq)`'s (schema.rs).
async fn no_event_indexes(s: &Store) {
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events'
           AND sql IS NOT NULL",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert!(indexes.is_empty(), "{indexes:?}");
}

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
async fn scope_round_trips_and_old_stores_gain_the_columns_and_lose_the_event_indexes() {
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
        // Events as an earlier release kept them, with two secondary indexes.
        for statement in [
            "CREATE TABLE audit_events (id INTEGER PRIMARY KEY AUTOINCREMENT, chain TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, session TEXT, trace_id TEXT, line TEXT NOT NULL, UNIQUE (chain, seq))",
            "CREATE INDEX audit_events_at ON audit_events (at_ms)",
            "CREATE INDEX audit_events_session ON audit_events (session)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let s = Store::open(&url).await.unwrap();
    no_event_indexes(&s).await;
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
    // Events carry no secondary index on SQLite (schema.rs): the cut is found in id order.
    no_event_indexes(&s).await;
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
