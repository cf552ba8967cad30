use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (dir, Store::open(&url).await.unwrap())
}

fn new_task<'a>(subject: &'a str, ttl_ms: i64) -> NewTask<'a> {
    NewTask {
        subject,
        endpoint: "/mcp",
        approval: "apr_1",
        call: r#"{"name":"fx__write","arguments":{"a":1}}"#,
        ttl_ms,
        message: "waiting",
    }
}

#[tokio::test]
async fn a_task_is_found_only_by_its_caller_on_its_endpoint_until_it_expires() {
    let (_d, s) = store().await;
    let t = s.create_task(&new_task("key:a", 60_000)).await.unwrap();
    assert_eq!(t.status, TaskStatus::Working);
    assert!(t.id.starts_with("task_") && t.id.len() == 37, "{}", t.id);
    assert!(s.task(&t.id, "key:a", "/mcp").await.unwrap().is_some());
    assert!(s.task(&t.id, "key:b", "/mcp").await.unwrap().is_none());
    assert!(s.task(&t.id, "key:a", "/mcp/fx").await.unwrap().is_none());
    let gone = s.create_task(&new_task("key:a", -1)).await.unwrap_err();
    // A task already past its expiry is not found, even right after it was written, and
    // pruning deletes it with the call it held.
    assert!(matches!(gone, StoreError::Corrupt(_)), "{gone:?}");
    assert_eq!(s.prune_tasks().await.unwrap(), 1);
}

#[tokio::test]
async fn one_claim_wins_and_an_ended_task_keeps_its_outcome_not_its_call() {
    let (_d, s) = store().await;
    let t = s.create_task(&new_task("key:a", 60_000)).await.unwrap();
    let claims = futures_claims(&s, &t.id).await;
    assert_eq!(claims, 1, "exactly one claimant runs the call");
    assert!(!s.cancel_task(&t.id, "cancelled", "{}").await.unwrap());
    assert!(
        !s.finish_task(&t.id, TaskStatus::Working, TaskStatus::Failed, "late", None)
            .await
            .unwrap(),
        "a look that saw it waiting does not end a task another look is running"
    );
    assert!(s.release_task(&t.id, "not yet").await.unwrap());
    assert!(s.claim_task(&t.id, "again").await.unwrap());
    let ok = Some(r#"{"result":{}}"#);
    let (running, done) = (TaskStatus::Running, TaskStatus::Completed);
    assert!(
        s.finish_task(&t.id, running, done, "ran", ok)
            .await
            .unwrap()
    );
    assert!(
        !s.finish_task(&t.id, running, TaskStatus::Failed, "again", None)
            .await
            .unwrap(),
        "an ended task does not change"
    );
    assert!(!s.release_task(&t.id, "after").await.unwrap());
    let now = s.task(&t.id, "key:a", "/mcp").await.unwrap().unwrap();
    assert_eq!(now.status, TaskStatus::Completed);
    assert_eq!(now.call, None);
    assert_eq!(now.outcome.as_deref(), Some(r#"{"result":{}}"#));
}

/// Eight claims at once, from tasks of their own.
async fn futures_claims(s: &Store, id: &str) -> usize {
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let (s, id) = (s.clone(), id.to_string());
            tokio::spawn(async move { s.claim_task(&id, "running").await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in tries {
        won += usize::from(t.await.unwrap());
    }
    won
}

#[tokio::test]
async fn a_waiting_task_cancels_once_and_lists_newest_first_in_pages() {
    let (_d, s) = store().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create_task(&new_task("key:a", 60_000)).await.unwrap().id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    s.create_task(&new_task("key:b", 60_000)).await.unwrap();
    assert!(s.cancel_task(&ids[0], "by client", "{}").await.unwrap());
    assert!(!s.cancel_task(&ids[0], "by client", "{}").await.unwrap());
    let first = s.tasks("key:a", "/mcp", None, 3).await.unwrap();
    let last = first.last().unwrap();
    let rest = s
        .tasks("key:a", "/mcp", Some((last.created_ms, &last.id)), 3)
        .await
        .unwrap();
    let seen: Vec<String> = first.iter().chain(&rest).map(|t| t.id.clone()).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(rest.last().unwrap().status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn a_lost_run_ends_only_as_it_was_seen() {
    let (_d, s) = store().await;
    let t = s.create_task(&new_task("key:a", 60_000)).await.unwrap();
    assert!(
        !s.touch_task(&t.id).await.unwrap(),
        "a waiting task has no heartbeat"
    );
    assert!(s.claim_task(&t.id, "running").await.unwrap());
    let seen = s.task(&t.id, "key:a", "/mcp").await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    assert!(s.touch_task(&t.id).await.unwrap());
    // It beat since it was seen: not lost.
    let out = r#"{"error":{}}"#;
    assert!(
        !s.end_lost_task(&t.id, seen.updated_ms, "lost", out)
            .await
            .unwrap()
    );
    let now = s.task(&t.id, "key:a", "/mcp").await.unwrap().unwrap();
    assert!(
        s.end_lost_task(&t.id, now.updated_ms, "lost", out)
            .await
            .unwrap()
    );
    let ended = s.task(&t.id, "key:a", "/mcp").await.unwrap().unwrap();
    assert_eq!((ended.status, ended.call), (TaskStatus::Failed, None));
    assert!(!s.touch_task(&t.id).await.unwrap());
    assert!(
        !s.end_lost_task(&t.id, ended.updated_ms, "again", out)
            .await
            .unwrap()
    );
}
