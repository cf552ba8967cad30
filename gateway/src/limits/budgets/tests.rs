use policy::{Identity, Level};
use proptest::prelude::*;

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
    let l = Leases::default();
    let at = ("notes", "create_note");
    assert!(
        reserve((&s, &l), &reg, &team("a"), at, 3, NOW)
            .await
            .is_ok()
    );
    match reserve((&s, &l), &reg, &team("a"), at, 3, NOW).await {
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
        reserve(
            (&s, &l),
            &reg,
            &team("a"),
            ("notes", "search_notes"),
            1,
            NOW
        )
        .await
        .is_ok()
    );
    assert!(
        reserve((&s, &l), &reg, &team("b"), at, 3, NOW)
            .await
            .is_ok()
    );
    // The next day starts afresh.
    assert!(
        reserve((&s, &l), &reg, &team("a"), at, 3, NOW + 3 * 3600)
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
    let l = Leases::default();
    let at = ("notes", "search_notes");
    let spent = reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
        .await
        .unwrap();
    assert_eq!(spent.len(), 2);
    assert!(
        reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
            .await
            .is_err()
    );
    // Never reached the upstream: every unit back.
    settle((&s, &l), &spent, false, true).await;
    let spent = reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
        .await
        .unwrap();
    // Reached it, and it could not answer: only the month's budget says refund_failed.
    settle((&s, &l), &spent, true, true).await;
    match reserve((&s, &l), &reg, &team("a"), at, 1, NOW).await {
        Err(Over::Budget { hit, .. }) => assert_eq!(hit.entry, 0),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_budget_no_store_and_a_broken_store_refuses() {
    let reg = registry("  - { match: \"team:b\", budget: { units: 1, per: day } }\n");
    let (_d, s) = store().await;
    let l = Leases::default();
    // Not covered: nothing reserved, however often.
    for _ in 0..3 {
        assert!(
            reserve(
                (&s, &l),
                &reg,
                &team("a"),
                ("notes", "search_notes"),
                1,
                NOW
            )
            .await
            .unwrap()
            .is_empty()
        );
    }
    s.execute_for_test("DROP TABLE budget_usage").await.unwrap();
    assert!(matches!(
        reserve(
            (&s, &l),
            &reg,
            &team("b"),
            ("notes", "search_notes"),
            1,
            NOW
        )
        .await,
        Err(Over::Unavailable(_))
    ));
}

/// What one process does next, in the property below.
#[derive(Clone, Debug)]
enum Step {
    /// A call that runs (its units stay spent).
    Runs,
    /// A call that never reached its upstream (its units go back).
    NeverSent,
    /// The process lets go of what it holds ahead (idle, or shutting down).
    Lets,
}

fn step() -> impl Strategy<Value = (usize, Step)> {
    (
        0usize..3,
        prop_oneof![4 => Just(Step::Runs), 1 => Just(Step::NeverSent), 1 => Just(Step::Lets)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Three processes on one store, each holding units ahead (a quarter of the budget at most,
    /// so the budget runs out within the case), in any interleaving: what calls spent never
    /// passes the budget; a call is refused only when the budget, less what calls spent and
    /// what the processes hold, has no room for it; and once they let go, the store counts
    /// exactly what calls spent: no unit made up, none lost.
    #[test]
    fn units_held_ahead_never_overspend_never_starve_and_never_go_missing(
        units in 8u64..48,
        cost in 1u64..4,
        steps in proptest::collection::vec(step(), 1..100),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let reg = registry(&format!("  - {{ match: \"team:*\", budget: {{ units: {units}, per: month }} }}\n"));
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("s.db").display());
            let mut procs = Vec::new();
            for _ in 0..3 {
                procs.push((Store::open(&url).await.unwrap(), Leases::with_share(4)));
            }
            let (at, who) = (("notes", "search_notes"), team("a"));
            let held = |procs: &[(Store, Leases)]| procs.iter().map(|(_, l)| l.held()).sum::<i64>();
            let (mut kept, mut window) = (0i64, None);
            for (p, step) in steps {
                let (s, l) = &procs[p];
                if let Step::Lets = step {
                    refund(s, &l.release(None)).await;
                    continue;
                }
                match reserve((s, l), &reg, &who, at, cost, NOW).await {
                    Ok(spent) => {
                        window = Some(spent[0].charge.window.clone());
                        match step {
                            Step::Runs => kept += cost as i64,
                            _ => settle((s, l), &spent, false, false).await,
                        }
                        prop_assert!(kept <= units as i64, "{kept} spent of {units}");
                    }
                    Err(Over::Budget { .. }) => {
                        let free = units as i64 - kept - held(&procs);
                        prop_assert!(free < cost as i64, "refused with {free} units free");
                    }
                    Err(other) => prop_assert!(false, "{other:?}"),
                }
            }
            for (s, l) in &procs {
                refund(s, &l.release(None)).await;
            }
            let used = match window {
                Some(w) => procs[0].0.budget_usage(&[w]).await.unwrap().iter().map(|r| r.used).sum(),
                None => 0,
            };
            prop_assert_eq!(used, kept);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_big_budget_is_reserved_ahead_and_a_store_that_breaks_meanwhile_refuses_the_next_top_up()
{
    let reg = registry("  - { match: \"team:*\", budget: { units: 1000000, per: day } }\n");
    let (_d, s) = store().await;
    let l = Leases::default();
    let at = ("notes", "search_notes");
    let first = reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
        .await
        .unwrap();
    let window = first[0].charge.window.clone();
    // 1,000,000 / SHARE = 976 units, at most AHEAD_CALLS calls: 256 ahead.
    assert_eq!(l.held(), leases::AHEAD_CALLS);
    assert_eq!(s.reservation_groups(), 1);
    for _ in 0..leases::AHEAD_CALLS {
        reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
            .await
            .unwrap();
    }
    assert_eq!(
        s.reservation_groups(),
        1,
        "spent from the lease, no store asked"
    );
    let used = |rows: Vec<store::UsageRow>| rows.iter().map(|r| r.used).sum::<i64>();
    assert_eq!(
        used(s.budget_usage(std::slice::from_ref(&window)).await.unwrap()),
        257
    );
    // The lease is spent; the store breaks: the next call is refused, never let through.
    s.execute_for_test("DROP TABLE budget_usage").await.unwrap();
    assert!(matches!(
        reserve((&s, &l), &reg, &team("a"), at, 1, NOW).await,
        Err(Over::Unavailable(_))
    ));
}
