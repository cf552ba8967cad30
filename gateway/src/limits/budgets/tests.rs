use policy::{Identity, Level};

use super::*;

fn registry(limits: &str) -> Registry {
    let text = format!(
        "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: {{ class: read }}\n      create_note: {{ class: write, cost: 3 }}\nlimits:\n{limits}"
    );
    registry::load_str("t.yaml", &text).unwrap()
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    (dir, Store::open(&url).await.unwrap())
}

fn team(name: &str) -> Identity {
    Identity::new().with_name(Level::Team, name)
}

// 2026-12-05T21:30:00Z
const NOW: i64 = 1_796_506_200;

#[tokio::test]
async fn a_budget_is_spent_per_principal_and_refuses_until_its_window_ends() {
    let reg = registry("  - { match: \"team:*\", budget: { units: 4, per: day } }\n");
    let (_d, s) = store().await;
    let at = ("notes", "create_note");
    assert!(reserve(&s, &reg, &team("a"), at, 3, NOW).await.is_ok());
    match reserve(&s, &reg, &team("a"), at, 3, NOW).await {
        Err(Over::Budget { hit, budget, wait }) => {
            assert_eq!((hit.entry, hit.principal.as_str()), (0, "team:a"));
            assert_eq!(budget.units, 4);
            // Until midnight UTC.
            assert_eq!(wait, Duration::from_secs(2 * 3600 + 30 * 60));
        }
        other => panic!("{other:?}"),
    }
    // One unit is left for team a; team b has its own four.
    assert!(
        reserve(&s, &reg, &team("a"), ("notes", "search_notes"), 1, NOW)
            .await
            .is_ok()
    );
    assert!(reserve(&s, &reg, &team("b"), at, 3, NOW).await.is_ok());
    // The next day starts afresh.
    assert!(
        reserve(&s, &reg, &team("a"), at, 3, NOW + 3 * 3600)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn units_come_back_when_the_upstream_was_never_asked_or_could_not_answer() {
    let reg = registry(
        "  - { match: \"team:a\", budget: { units: 1, per: hour } }\n  - { match: \"team:a\", server: notes, budget: { units: 1, per: month, refund_failed: true } }\n",
    );
    let (_d, s) = store().await;
    let at = ("notes", "search_notes");
    let spent = reserve(&s, &reg, &team("a"), at, 1, NOW).await.unwrap();
    assert_eq!(spent.len(), 2);
    assert!(reserve(&s, &reg, &team("a"), at, 1, NOW).await.is_err());
    // Never reached the upstream: every unit back.
    settle(&s, &spent, false, true).await;
    let spent = reserve(&s, &reg, &team("a"), at, 1, NOW).await.unwrap();
    // Reached it, and it could not answer: only the month's budget says refund_failed.
    settle(&s, &spent, true, true).await;
    match reserve(&s, &reg, &team("a"), at, 1, NOW).await {
        Err(Over::Budget { hit, .. }) => assert_eq!(hit.entry, 0),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_budget_no_store_and_a_broken_store_refuses() {
    let reg = registry("  - { match: \"team:b\", budget: { units: 1, per: day } }\n");
    let (_d, s) = store().await;
    // Not covered: nothing reserved, however often.
    for _ in 0..3 {
        assert!(
            reserve(&s, &reg, &team("a"), ("notes", "search_notes"), 1, NOW)
                .await
                .unwrap()
                .is_empty()
        );
    }
    s.execute_for_test("DROP TABLE budget_usage").await.unwrap();
    assert!(matches!(
        reserve(&s, &reg, &team("b"), ("notes", "search_notes"), 1, NOW).await,
        Err(Over::Unavailable(_))
    ));
}
