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

/// Each budget's units spent in `windows`, as the store counts them, smallest first.
async fn used_in(s: &Store, windows: &[String]) -> Vec<i64> {
    let mut used: Vec<i64> = s
        .budget_usage(windows)
        .await
        .unwrap()
        .iter()
        .map(|r| r.used)
        .collect();
    used.sort_unstable();
    used
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
    let search = ("notes", "search_notes");
    assert!(
        reserve((&s, &l), &reg, &team("a"), search, 1, NOW)
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
    let search = ("notes", "search_notes");
    // Not covered: nothing reserved, however often.
    for _ in 0..3 {
        assert!(
            reserve((&s, &l), &reg, &team("a"), search, 1, NOW)
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

    /// Three processes on one store, each holding units ahead (a quarter of a budget at most,
    /// so budgets run out within the case; spent for a second, or for 5 ms), calls covered by
    /// two budgets of any sizes, in any interleaving: what calls spent never passes either
    /// budget; no process holds more than a lease's most; a call is refused only when the
    /// budget it names, less what calls spent and what the processes hold of it, has no room;
    /// and once they let go, the store counts exactly what calls spent: no unit made up, none
    /// lost.
    #[test]
    fn units_held_ahead_never_overspend_never_starve_and_never_go_missing(
        units in [8u64..48, 2u64..200],
        cost in 1u64..4,
        stale in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..100),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let reg = registry(&format!(
                "  - {{ match: \"team:*\", budget: {{ units: {}, per: month }} }}\n  - {{ match: \"team:*\", server: notes, budget: {{ units: {}, per: day }} }}\n",
                units[0], units[1],
            ));
            let keys = [reg.limits[0].budget_key(), reg.limits[1].budget_key()];
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("s.db").display());
            // Leases spent for a second, or for 5 ms (most calls ask again; an answer slower
            // than that goes straight back, a faster one joins what is still fresh).
            let fresh = match stale {
                true => Duration::from_millis(5),
                false => Duration::from_secs(1),
            };
            let mut procs = Vec::new();
            for _ in 0..3 {
                procs.push((Store::open(&url).await.unwrap(), Leases::with(4, fresh)));
            }
            let (at, who, cost) = (("notes", "search_notes"), team("a"), cost as i64);
            let held = |procs: &[(Store, Leases)], b: usize| {
                procs.iter().map(|(_, l)| l.held_of(&keys[b])).sum::<i64>()
            };
            let most = |b: usize| {
                let m = (units[b] as i64 / 4).min(cost * leases::AHEAD_CALLS);
                m - m % cost
            };
            let (mut kept, mut windows) = (0i64, Vec::new());
            for (p, step) in steps {
                let (s, l) = &procs[p];
                if let Step::Lets = step {
                    refund(s, &l.release(None)).await;
                    l.settled(Duration::from_secs(10)).await;
                    procs[p].1 = Leases::with(4, fresh);
                    continue;
                }
                let answer = reserve((s, l), &reg, &who, at, cost as u64, NOW).await;
                // What went back on tasks of their own is back.
                for (_, l) in &procs {
                    l.settled(Duration::from_secs(10)).await;
                }
                match answer {
                    Ok(spent) => {
                        windows = spent.iter().map(|s| s.charge.window.clone()).collect();
                        match step {
                            Step::Runs => kept += cost,
                            _ => settle((s, l), &spent, false, false).await,
                        }
                        for u in units {
                            prop_assert!(kept <= u as i64, "{kept} spent of {u}");
                        }
                    }
                    Err(Over::Budget { hit, .. }) => {
                        let b = hit.entry;
                        let free = units[b] as i64 - kept - held(&procs, b);
                        prop_assert!(free < cost, "refused by budget {b} with {free} units free");
                    }
                    Err(other) => prop_assert!(false, "{other:?}"),
                }
                for (_, l) in &procs {
                    for (b, key) in keys.iter().enumerate() {
                        prop_assert!(l.held_of(key) <= most(b), "a lease past its most");
                    }
                }
            }
            for (s, l) in &procs {
                refund(s, &l.release(None)).await;
            }
            let rows = procs[0].0.budget_usage(&windows).await.unwrap();
            for key in &keys {
                let used: i64 = rows.iter().filter(|r| &r.budget == key).map(|r| r.used).sum();
                prop_assert_eq!(used, kept, "{}", key);
            }
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

#[tokio::test]
async fn a_budget_marked_exact_holds_nothing_ahead_however_large_nor_the_budgets_beside_it() {
    let reg = registry(
        "  - { match: \"team:*\", budget: { units: 1000000, per: day, exact: true } }\n  - { match: \"team:*\", server: notes, budget: { units: 1000000, per: month } }\n",
    );
    let (_d, s) = store().await;
    let l = Leases::default();
    let at = ("notes", "search_notes");
    let mut window = Vec::new();
    for n in 1..=3 {
        let spent = reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
            .await
            .unwrap();
        window = spent.iter().map(|s| s.charge.window.clone()).collect();
        assert_eq!(l.held(), 0, "nothing held ahead");
        assert_eq!(s.reservation_groups(), n, "each call asked the store");
    }
    assert_eq!(used_in(&s, &window).await, [3, 3]);
    // Without `exact`, the same two budgets are held ahead.
    let reg = registry(
        "  - { match: \"team:*\", budget: { units: 1000000, per: day } }\n  - { match: \"team:*\", server: notes, budget: { units: 1000000, per: month } }\n",
    );
    reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
        .await
        .unwrap();
    assert_eq!(l.held(), 2 * leases::AHEAD_CALLS);
}

#[tokio::test]
async fn an_exact_call_near_a_budgets_end_takes_back_what_this_process_holds_of_it() {
    // `create_note` (cost 3) is under an exact budget and a big one; `search_notes` (cost 1)
    // only under the big one, which holds 2 units ahead for it.
    let reg = registry(
        "  - { match: \"team:*\", server: notes, tool: create_note, budget: { units: 100, per: day, exact: true } }\n  - { match: \"team:*\", budget: { units: 2048, per: day } }\n",
    );
    let (_d, s) = store().await;
    let l = Leases::default();
    let search = reserve(
        (&s, &l),
        &reg,
        &team("a"),
        ("notes", "search_notes"),
        1,
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(l.held(), 2);
    // Near the end: 1 unit free in the store, 2 more held here.
    s.execute_for_test("UPDATE budget_usage SET used = 2047")
        .await
        .unwrap();
    let create = reserve((&s, &l), &reg, &team("a"), ("notes", "create_note"), 3, NOW)
        .await
        .expect("fits once the units held ahead go back");
    assert_eq!(l.held(), 0);
    assert!(create.iter().all(|s| s.exact));
    assert_eq!(
        used_in(&s, &[search[0].charge.window.clone()]).await,
        [3, 2048]
    );
}

#[tokio::test]
async fn an_exact_calls_refund_goes_to_the_store_not_into_units_held_ahead() {
    let reg = registry(
        "  - { match: \"team:*\", server: notes, tool: create_note, budget: { units: 1000000, per: day, exact: true } }\n  - { match: \"team:*\", budget: { units: 1000000, per: day } }\n",
    );
    let (_d, s) = store().await;
    let l = Leases::default();
    let at = ("notes", "search_notes");
    let search = reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
        .await
        .unwrap();
    for _ in 0..10 {
        reserve((&s, &l), &reg, &team("a"), at, 1, NOW)
            .await
            .unwrap();
    }
    let held = l.held();
    assert_eq!(held, leases::AHEAD_CALLS - 10, "room in the lease");
    let create = reserve((&s, &l), &reg, &team("a"), ("notes", "create_note"), 3, NOW)
        .await
        .unwrap();
    let windows = [search[0].charge.window.clone()];
    assert_eq!(used_in(&s, &windows).await, [3, 260]);
    // Never sent: both charges go back to the store; the lease beside them is untouched.
    settle((&s, &l), &create, false, false).await;
    assert_eq!(l.held(), held);
    assert_eq!(used_in(&s, &windows).await, [0, 257]);
}

#[tokio::test]
async fn an_exact_call_refused_where_the_other_budget_is_held_ahead_stops_the_asking_and_names_its_own_end()
 {
    // The big budget holds ahead for `create_note` too (4 units at most, 3 at cost 3).
    let reg = registry(
        "  - { match: \"team:*\", server: notes, tool: create_note, budget: { units: 5, per: day, exact: true } }\n  - { match: \"team:*\", budget: { units: 4096, per: day } }\n",
    );
    let (_d, s) = store().await;
    let l = Leases::default();
    let (search, create) = (("notes", "search_notes"), ("notes", "create_note"));
    let first = reserve((&s, &l), &reg, &team("a"), search, 1, NOW)
        .await
        .unwrap();
    assert_eq!(l.held(), 4);
    s.execute_for_test("UPDATE budget_usage SET used = 4094")
        .await
        .unwrap();
    reserve((&s, &l), &reg, &team("a"), create, 3, NOW)
        .await
        .expect("fits once the 4 units held ahead go back");
    assert_eq!(l.held(), 0);
    // The big budget's end is near: the next call asks nothing ahead (one store reservation,
    // not an ask refused and then its exact retry).
    let groups = s.reservation_groups();
    reserve((&s, &l), &reg, &team("a"), search, 1, NOW)
        .await
        .unwrap();
    assert_eq!(l.held(), 0);
    assert_eq!(s.reservation_groups(), groups + 1);
    assert_eq!(
        used_in(&s, &[first[0].charge.window.clone()]).await,
        [3, 4094]
    );
    // The exact budget's own end refuses, naming its entry.
    match reserve((&s, &l), &reg, &team("a"), create, 3, NOW).await {
        Err(Over::Budget { hit, .. }) => assert_eq!(hit.entry, 0),
        other => panic!("{other:?}"),
    }
    // The store breaks: an exact call is refused, never let through.
    s.execute_for_test("DROP TABLE budget_usage").await.unwrap();
    assert!(matches!(
        reserve((&s, &l), &reg, &team("a"), create, 3, NOW).await,
        Err(Over::Unavailable(_))
    ));
}
