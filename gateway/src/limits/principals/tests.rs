use std::time::Duration;

use std::sync::Arc;

use policy::{Identity, Level};

use super::*;

fn registry(limits: &str) -> Arc<Registry> {
    let text = format!(
        "servers:\n  notes:\n    builtin: notes\n    tools: {{ search_notes: {{ class: read }}, get_note: {{ class: read }} }}\nlimits:\n{limits}"
    );
    Arc::new(registry::load_str("t.yaml", &text).unwrap())
}

fn team(name: &str) -> Identity {
    Identity::new()
        .with_name(Level::Team, name)
        .with_name(Level::Key, format!("k-{name}"))
}

#[test]
fn a_rate_is_counted_per_principal_and_refuses_with_the_wait() {
    let reg = registry("  - { match: \"team:*\", rate: 2/min }\n");
    let p = Principals::default();
    let (a, b) = (team("a"), team("b"));
    assert!(p.admit(&reg, &a, "notes", "search_notes").is_ok());
    assert!(p.admit(&reg, &a, "notes", "get_note").is_ok());
    match p.admit(&reg, &a, "notes", "search_notes") {
        Err(Over::Rate { hit, wait, .. }) => {
            assert_eq!((hit.entry, hit.principal.as_str()), (0, "team:a"));
            assert!(
                wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
                "{wait:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Another team has an allowance of its own.
    assert!(p.admit(&reg, &b, "notes", "search_notes").is_ok());
}

#[test]
fn an_entry_applies_only_to_its_principal_server_and_tool() {
    let reg = registry("  - { match: \"team:a\", server: notes, tool: get_note, rate: 1/min }\n");
    let p = Principals::default();
    let a = team("a");
    assert!(p.admit(&reg, &a, "notes", "get_note").is_ok());
    assert!(p.admit(&reg, &a, "notes", "get_note").is_err());
    // Other tools, and other teams, are not limited by it.
    assert!(p.admit(&reg, &a, "notes", "search_notes").is_ok());
    assert!(p.admit(&reg, &team("b"), "notes", "get_note").is_ok());
}

#[test]
fn the_tightest_of_every_matching_entry_wins() {
    let reg = registry(
        "  - { match: \"team:*\", rate: 100/min }\n  - { match: \"key:k-a\", rate: 1/min }\n",
    );
    let p = Principals::default();
    let a = team("a");
    assert!(p.admit(&reg, &a, "notes", "search_notes").is_ok());
    match p.admit(&reg, &a, "notes", "search_notes") {
        Err(Over::Rate { hit, .. }) => {
            assert_eq!((hit.entry, hit.principal.as_str()), (1, "key:k-a"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_concurrency_cap_holds_until_the_permit_drops() {
    let reg = registry("  - { match: \"team:*\", concurrency: 2 }\n");
    let p = Principals::default();
    let a = team("a");
    let first = p.admit(&reg, &a, "notes", "search_notes").unwrap();
    let second = p.admit(&reg, &a, "notes", "search_notes").unwrap();
    let hit = Hit {
        entry: 0,
        principal: "team:a".into(),
    };
    assert_eq!(
        p.admit(&reg, &a, "notes", "search_notes").err(),
        Some(Over::Concurrency { hit, cap: 2 })
    );
    drop(first);
    let third = p.admit(&reg, &a, "notes", "search_notes");
    assert!(third.is_ok());
    drop((second, third));
}

#[test]
fn a_reload_that_keeps_the_limits_keeps_the_counts_and_a_change_starts_fresh() {
    let text = "  - { match: \"team:*\", rate: 1/min }\n";
    let (first, same) = (registry(text), registry(text));
    let p = Principals::default();
    let a = team("a");
    assert!(p.admit(&first, &a, "notes", "search_notes").is_ok());
    assert!(p.admit(&same, &a, "notes", "search_notes").is_err());
    let changed = registry("  - { match: \"team:*\", rate: 2/min }\n");
    assert!(p.admit(&changed, &a, "notes", "search_notes").is_ok());
}

#[test]
fn a_poisoned_state_refuses() {
    let reg = registry("  - { match: \"team:*\", rate: 100/min }\n");
    let p = Arc::new(Principals::default());
    let held = p.clone();
    let _ = std::thread::spawn(move || {
        let _guard = held.current.write().unwrap();
        panic!("poison the lock");
    })
    .join();
    assert!(matches!(
        p.admit(&reg, &team("a"), "notes", "search_notes"),
        Err(Over::Unavailable(_))
    ));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn level() -> impl Strategy<Value = Level> {
        prop::sample::select(Level::ALL.to_vec())
    }

    proptest! {
        /// An entry counts only principals of its own level, and of its name unless it is `*`:
        /// whatever else the caller resolves to never shares or escapes its count.
        #[test]
        fn an_entry_matches_exactly_its_level_and_name(
            entry_level in level(),
            wildcard in any::<bool>(),
            entry_name in "[a-c]{1,2}",
            principals in prop::collection::vec((level(), "[a-c]{1,2}"), 0..6),
        ) {
            let limit = Limit {
                index: 0,
                principal: registry::LimitMatch {
                    level: entry_level,
                    name: (!wildcard).then(|| entry_name.clone()),
                },
                server: None,
                tool: None,
                rate: None,
                burst: None,
                concurrency: Some(1),
                budget: None,
            };
            let texts: Vec<String> = principals.iter().map(|(l, n)| format!("{l}:{n}")).collect();
            let got = matched(&limit, &texts);
            let want: Vec<String> = principals
                .iter()
                .filter(|(l, n)| *l == entry_level && (wildcard || *n == entry_name))
                .map(|(l, n)| format!("{l}:{n}"))
                .collect();
            prop_assert_eq!(got, want);
        }

        /// However calls start and end, no principal ever has more calls running than the cap.
        #[test]
        fn running_calls_never_exceed_the_cap(
            cap in 1u32..4,
            steps in prop::collection::vec((0usize..2, any::<bool>()), 1..40),
        ) {
            let reg = registry(&format!("  - {{ match: \"team:*\", concurrency: {cap} }}\n"));
            let p = Principals::default();
            let teams = [team("a"), team("b")];
            let mut held: [Vec<Vec<OwnedSemaphorePermit>>; 2] = [Vec::new(), Vec::new()];
            for (who, start) in steps {
                let slot = &mut held[who];
                if start {
                    match p.admit(&reg, &teams[who], "notes", "search_notes") {
                        Ok(permits) => slot.push(permits),
                        Err(Over::Concurrency { .. }) => {
                            prop_assert_eq!(slot.len(), cap as usize)
                        }
                        Err(other) => prop_assert!(false, "{other:?}"),
                    }
                } else {
                    slot.pop();
                }
                prop_assert!(slot.len() <= cap as usize);
            }
        }
    }
}

#[test]
fn an_entry_a_reload_moves_or_leaves_keeps_its_counts_while_a_changed_one_starts_fresh() {
    let first = registry(
        "  - { match: \"team:*\", rate: 1/min }\n  - { match: \"key:*\", concurrency: 1 }\n",
    );
    let p = Principals::default();
    let a = team("a");
    let held = p.admit(&first, &a, "notes", "search_notes").unwrap();
    // Reordered, and the cap changed: the rate's count stays, the cap starts fresh.
    let second = registry(
        "  - { match: \"key:*\", concurrency: 2 }\n  - { match: \"team:*\", rate: 1/min }\n",
    );
    match p.admit(&second, &a, "notes", "search_notes") {
        Err(Over::Rate { hit, .. }) => assert_eq!(hit.entry, 1, "named by its new place"),
        other => panic!("{other:?}"),
    }
    drop(held);
}

#[test]
fn idle_principals_are_swept_and_running_ones_kept() {
    let reg = registry("  - { match: \"user:*\", concurrency: 1, rate: 1000/s }\n");
    let p = Principals::default();
    let user = |n: usize| Identity::new().with_name(Level::User, format!("u{n}"));
    let running = p.admit(&reg, &user(0), "notes", "search_notes").unwrap();
    for n in 1..(SWEEP_EVERY as usize + 10) {
        drop(p.admit(&reg, &user(n), "notes", "search_notes").unwrap());
    }
    let entries = p.entries(&reg).unwrap();
    let state = &entries.entries[0].1;
    let kept = state.running.lock().unwrap().len();
    assert!(kept < 20, "{kept} principals still held");
    assert!(state.running.lock().unwrap().contains_key("user:u0"));
    drop(running);
}
