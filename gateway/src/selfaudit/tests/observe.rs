//! Dimension 04 reads the audit sinks: required, synced, and bounded on disk.

use super::*;

#[tokio::test]
async fn a_best_effort_audit_sink_leaves_observability_green_no_more() {
    let r = audit_of(&flip(
        "    - { type: store }",
        "    - { type: store, required: false }",
    ))
    .await;
    assert_flagged(
        &r,
        "obs.audit_sinks",
        "observability",
        "t.yaml:21:32 `audit.sinks[1].required`",
    );
    // The checklist sees it too.
    let audit = r
        .checklist
        .areas
        .iter()
        .find(|a| a.key == "audit_logs")
        .unwrap();
    assert_eq!(audit.score, 1);
}

#[tokio::test]
async fn an_unsynced_file_sink_is_flagged() {
    let r = audit_of(&flip(
        "    - { type: file, path: audit.jsonl }",
        "    - { type: file, path: audit.jsonl, fsync: false }",
    ))
    .await;
    assert_flagged(
        &r,
        "obs.audit_sinks",
        "observability",
        "`audit.sinks[0].fsync`",
    );
}

#[tokio::test]
async fn an_audit_record_that_grows_without_bound_is_flagged() {
    let clean = audit_of(CLEAN).await;
    assert_eq!(finding(&clean, "obs.audit_retention").status, Status::Pass);
    let rows = cited(&clean, "obs.audit_retention");
    assert!(
        rows.iter()
            .any(|r| r.contains("rotates at 100 MiB; every rotated file is kept")),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r.contains("kept 90d")), "{rows:#?}");
    let r = audit_of(&flip(
        "    - { type: file, path: audit.jsonl }",
        "    - { type: file, path: audit.jsonl, rotate: off }",
    ))
    .await;
    assert_flagged(
        &r,
        "obs.audit_retention",
        "observability",
        "`audit.sinks[0].rotate`: file `audit.jsonl` never rotates",
    );
}
