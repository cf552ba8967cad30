use std::sync::Arc;
use std::time::Duration;

use policy::{Identity, Level};

use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (dir, Store::open(&url).await.unwrap())
}

fn settings(lease_ms: u64) -> registry::Settings {
    let yaml = format!(
        "kill_switch: {{ poll: 10ms, lease: {lease_ms}ms }}\nservers:\n  notes:\n    builtin: notes\n    tools: {{ search_notes: {{ class: read }} }}\n"
    );
    registry::load_str("t.yaml", &yaml).unwrap().settings
}

fn alice() -> Identity {
    Identity::new()
        .with_name(Level::Key, "k1")
        .with_name(Level::Team, "research")
        .with_name(Level::Org, "acme")
}

#[tokio::test]
async fn nothing_is_allowed_before_the_first_read() {
    let (_d, s) = store().await;
    let levers = Levers::new(s, &settings(1000));
    assert_eq!(
        levers.killed(&alice(), "notes", "search_notes"),
        Some(Killed::StateUnknown)
    );
    levers.refresh().await.unwrap();
    assert_eq!(levers.killed(&alice(), "notes", "search_notes"), None);
}

#[tokio::test]
async fn an_unreadable_store_fails_closed_once_the_lease_runs_out() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(150));
    levers.refresh().await.unwrap();
    assert_eq!(levers.killed(&alice(), "notes", "search_notes"), None);
    // Fault injection: the store stops answering.
    s.close().await;
    assert!(levers.refresh().await.is_err());
    // Within the lease the last good state holds…
    assert_eq!(levers.killed(&alice(), "notes", "search_notes"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …after it, every call is refused.
    assert_eq!(
        levers.killed(&alice(), "notes", "search_notes"),
        Some(Killed::StateUnknown)
    );
    assert_eq!(
        levers.killed(&Identity::new(), "other", "x"),
        Some(Killed::StateUnknown)
    );
}

#[tokio::test]
async fn the_poller_keeps_refusing_while_the_store_is_down() {
    let (_d, s) = store().await;
    let levers = Arc::new(Levers::new(s.clone(), &settings(100)));
    levers.refresh().await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(levers.clone().run(Duration::from_millis(10), stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(levers.killed(&alice(), "notes", "search_notes"), None);
    s.close().await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        levers.killed(&alice(), "notes", "search_notes"),
        Some(Killed::StateUnknown)
    );
    stop.cancel();
}

#[tokio::test]
async fn each_scope_covers_exactly_its_calls() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    let cases: &[(&str, &str, bool, bool)] = &[
        // scope, target, covers alice's notes/search_notes, covers an empty identity on other/x
        ("global", "", true, true),
        ("server", "notes", true, false),
        ("server", "other", false, true),
        ("tool", "notes/search_notes", true, false),
        ("tool", "notes/get_note", false, false),
        ("key", "k1", true, false),
        ("key", "k2", false, false),
        ("team", "research", true, false),
        ("org", "acme", true, false),
        ("org", "globex", false, false),
        ("user", "alice", false, false),
        ("agent", "bot", false, false),
    ];
    for (scope, target, alice_hit, other_hit) in cases {
        s.set_switch(scope, target, true, "test", "op")
            .await
            .unwrap();
        levers.refresh().await.unwrap();
        assert_eq!(
            levers.killed(&alice(), "notes", "search_notes").is_some(),
            *alice_hit,
            "{scope} {target} on alice"
        );
        assert_eq!(
            levers.killed(&Identity::new(), "other", "x").is_some(),
            *other_hit,
            "{scope} {target} on other"
        );
        s.set_switch(scope, target, false, "test", "op")
            .await
            .unwrap();
        levers.refresh().await.unwrap();
        assert_eq!(levers.killed(&alice(), "notes", "search_notes"), None);
    }
}

#[tokio::test]
async fn an_unknown_scope_written_by_another_version_counts_as_global() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    s.set_switch("region", "eu", true, "newer build", "op")
        .await
        .unwrap();
    levers.refresh().await.unwrap();
    assert!(levers.killed(&Identity::new(), "other", "x").is_some());
}

#[tokio::test]
async fn a_read_that_began_before_an_engagement_does_not_lift_it() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    let before = std::time::Instant::now() - Duration::from_millis(1);
    s.set_switch("server", "notes", true, "incident", "op")
        .await
        .unwrap();
    levers.refresh().await.unwrap();
    let killed = || levers.killed(&alice(), "notes", "search_notes");
    assert!(
        matches!(killed(), Some(Killed::Engaged(_))),
        "{:?}",
        killed()
    );
    // The poller's read, begun before the switch was engaged, finishes last.
    let stale = |read_at| Snapshot {
        switches: Vec::new(),
        mode: None,
        in_force: Mode::Enforce,
        read_at: Some(read_at),
    };
    levers.install(stale(before));
    assert!(
        matches!(killed(), Some(Killed::Engaged(_))),
        "{:?}",
        killed()
    );
    // A read begun later is taken.
    levers.install(stale(std::time::Instant::now()));
    assert_eq!(killed(), None);
}

#[tokio::test]
async fn engaging_cancels_matching_calls_in_flight_only() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    levers.refresh().await.unwrap();
    let hit = levers
        .start(Arc::new(alice()), "notes", "search_notes")
        .unwrap();
    let miss = levers.start(Arc::new(alice()), "other", "x").unwrap();
    s.set_switch("server", "notes", true, "incident", "op")
        .await
        .unwrap();
    levers.refresh().await.unwrap();
    assert!(hit.cancel.is_cancelled());
    assert!(!miss.cancel.is_cancelled());
    drop(hit);
    assert_eq!(levers.running.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_runtime_mode_outranks_the_config_until_changed() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    levers.refresh().await.unwrap();
    assert_eq!(levers.mode().0, Mode::Enforce);
    s.set_mode("read_only", "incident", "op").await.unwrap();
    levers.refresh().await.unwrap();
    let (mode, row) = levers.mode();
    assert_eq!(mode, Mode::ReadOnly);
    assert_eq!(row.unwrap().reason, "incident");
}

#[tokio::test]
async fn a_stored_mode_this_build_does_not_know_counts_as_read_only() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    s.set_mode("lockdown", "newer build", "op").await.unwrap();
    levers.refresh().await.unwrap();
    assert_eq!(levers.mode().0, Mode::ReadOnly);
}

#[tokio::test]
async fn approvals_are_covered_by_switches_over_their_principals() {
    let (_d, s) = store().await;
    let levers = Levers::new(s.clone(), &settings(5000));
    levers.refresh().await.unwrap();
    let principals = ["key:k1".to_owned(), "user:alice".to_owned()];
    assert_eq!(levers.covering(&principals, "notes", "create_note"), None);
    s.set_switch("user", "alice", true, "r", "op")
        .await
        .unwrap();
    levers.refresh().await.unwrap();
    assert!(
        levers
            .covering(&principals, "notes", "create_note")
            .is_some()
    );
    assert!(
        levers
            .covering(&["key:k2".to_owned()], "notes", "create_note")
            .is_none()
    );
}
