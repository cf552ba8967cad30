use super::*;

fn charge(principal: &str, cost: i64, units: i64) -> Charge {
    Charge {
        budget: "key:* fixture/* per month".into(),
        principal: principal.into(),
        window: "2026-12".into(),
        cost,
        units,
        epoch: 0,
    }
}

/// `c` as the store reserved it, in `epoch`.
fn reserved(mut c: Charge, epoch: i64) -> Charge {
    c.epoch = epoch;
    c
}

/// `c` at another cost: what a call spends, or what goes back.
fn costing(c: &Charge, cost: i64) -> Charge {
    Charge { cost, ..c.clone() }
}

#[test]
fn units_held_ahead_serve_the_next_calls_then_run_out() {
    let (l, now) = (Leases::default(), Instant::now());
    let mut one = [charge("key:a", 1, 1 << 20)];
    assert!(!l.take(&mut one, now), "nothing held yet");
    assert_eq!(
        l.hold(&reserved(one[0].clone(), 3), 2, (now, now)),
        Vec::new()
    );
    assert!(l.take(&mut one, now));
    assert_eq!(
        one[0].epoch, 3,
        "a call spent from a lease carries its epoch"
    );
    assert!(l.take(&mut one, now));
    assert!(!l.take(&mut one, now), "two held, two spent");
    assert_eq!(l.held(), 0);
    // Another principal's units are its own.
    assert!(!l.take(&mut [charge("key:b", 1, 1 << 20)], now));
}

#[test]
fn a_call_with_several_charges_spends_from_all_or_none() {
    let (l, now) = (Leases::default(), Instant::now());
    let (a, b) = (charge("key:a", 2, 1 << 20), charge("team:x", 2, 1 << 20));
    assert_eq!(l.hold(&reserved(a.clone(), 0), 4, (now, now)), Vec::new());
    let mut both = [a.clone(), b.clone()];
    assert!(!l.take(&mut both, now), "nothing held for team:x");
    assert_eq!(l.held(), 4, "so nothing was spent from key:a either");
    assert_eq!(l.hold(&reserved(b, 0), 2, (now, now)), Vec::new());
    assert!(l.take(&mut both, now));
    assert_eq!(l.held(), 2);
}

#[test]
fn a_lease_is_spent_while_fresh_and_then_goes_back_to_the_store() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.hold(&reserved(c.clone(), 7), 5, (now, now)), Vec::new());
    let later = now + FRESH;
    assert!(
        !l.take(&mut [c.clone()], later),
        "stale units are not spent"
    );
    assert_eq!(l.release(Some(now)), Vec::new(), "still fresh: kept");
    let back = l.release(Some(later));
    assert_eq!(
        back,
        vec![Charge {
            cost: 5,
            ..reserved(c.clone(), 7)
        }]
    );
    assert_eq!(l.held(), 0);
    // A refund after that goes to the store, not to a lease no longer held.
    assert!(!l.give_back(&reserved(c, 7)));
}

#[test]
fn a_refund_returns_to_its_own_lease_only() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.hold(&reserved(c.clone(), 1), 1, (now, now)), Vec::new());
    assert!(l.give_back(&reserved(c.clone(), 1)));
    assert_eq!(l.held(), 2);
    // Reserved before an operator's reset (epoch 0), or under other units: not this lease's.
    assert!(!l.give_back(&reserved(c.clone(), 0)));
    assert!(!l.give_back(&Charge {
        units: 5,
        ..reserved(c, 1)
    }));
    assert_eq!(l.held(), 2);
}

#[test]
fn a_reset_or_a_new_allowance_ends_what_was_held_and_the_same_epoch_adds_up() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.hold(&reserved(c.clone(), 0), 3, (now, now)), Vec::new());
    assert_eq!(l.hold(&reserved(c.clone(), 0), 2, (now, now)), Vec::new());
    assert_eq!(l.held(), 5, "same epoch: one lease");
    // The store answered in epoch 1 (an operator reset the window): the old units are returned
    // (their refund, in epoch 0, changes nothing in the store).
    let back = l.hold(&reserved(c.clone(), 1), 2, (now, now));
    assert_eq!(
        back,
        vec![Charge {
            cost: 5,
            ..reserved(c.clone(), 0)
        }]
    );
    assert_eq!(l.held(), 2);
    // A reload gave the budget other units: the lease no longer serves it.
    assert!(!l.take(&mut [charge("key:a", 1, 1 << 21)], now));
}

#[test]
fn how_much_goes_ahead_is_small_beside_the_budget_and_stops_near_its_end() {
    let (l, now) = (Leases::default(), Instant::now());
    // Fewer than SHARE units per call's cost: call by call.
    assert_eq!(l.ahead(&charge("key:a", 1, SHARE - 1), now), 0);
    assert_eq!(l.ahead(&charge("key:b", 3, 3 * SHARE - 1), now), 0);
    assert_eq!(l.ahead(&charge("key:c", 1, 10 * SHARE), now), 10);
    // A multiple of the cost, at most AHEAD_CALLS calls.
    assert_eq!(l.ahead(&charge("key:d", 3, 10 * SHARE), now), 9);
    assert_eq!(l.ahead(&charge("key:e", 0, i64::MAX), now), 0);
    let big = charge("key:f", 2, i64::MAX);
    assert_eq!(l.ahead(&big, now), 2 * AHEAD_CALLS);
    // Units ahead did not fit: none asked for while that is fresh.
    assert_eq!(l.hold(&reserved(big.clone(), 0), 4, (now, now)), Vec::new());
    assert_eq!(
        l.short(&big, now),
        Some(Charge {
            cost: 4,
            ..reserved(big.clone(), 0)
        }),
        "what was held goes back"
    );
    assert_eq!(l.ahead(&big, now), 0);
    assert!(!l.take(&mut [big.clone()], now));
    assert_eq!(l.ahead(&big, now + FRESH), 2 * AHEAD_CALLS);
}

#[test]
fn no_two_budgets_principals_or_windows_share_a_lease() {
    let (l, now) = (Leases::default(), Instant::now());
    let mut a = charge("x", 1, 1 << 20);
    a.budget = "b".into();
    let mut b = charge("", 1, 1 << 20);
    b.budget = "bx".into();
    assert_eq!(l.hold(&a, 3, (now, now)), Vec::new());
    assert!(!l.take(&mut [b], now), "\"b\"+\"x\" is not \"bx\"+\"\"");
}

#[test]
fn while_one_call_asks_ahead_the_calls_beside_it_reserve_their_own_cost() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.ahead(&c, now), 256);
    assert_eq!(l.ahead(&c, now), 0, "one asks at a time");
    // Nothing is held while the ask is under way, and nothing given back is kept there.
    assert!(!l.give_back(&reserved(c.clone(), 0)));
    assert_eq!(l.hold(&reserved(c.clone(), 0), 256, (now, now)), Vec::new());
    assert_eq!(
        l.ahead(&c, now),
        0,
        "the lease covers the next call: no need"
    );
    for _ in 0..256 {
        assert!(l.take(&mut [c.clone()], now));
    }
    assert_eq!(l.ahead(&c, now), 256, "spent: the next may ask");
    // An ask that was never answered stops holding the others back once it is stale.
    let d = charge("key:d", 1, 1 << 20);
    assert_eq!(l.ahead(&d, now), 256);
    assert_eq!(l.ahead(&d, now + FRESH), 256);
    // One that ended without an answer (the store failed) at once.
    let e = charge("key:e", 1, 1 << 20);
    assert_eq!(l.ahead(&e, now), 256);
    l.unask(std::slice::from_ref(&e), &[256]);
    assert_eq!(l.ahead(&e, now), 256);
}

#[test]
fn a_lease_never_holds_more_than_its_most_and_the_rest_goes_back() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.hold(&reserved(c.clone(), 0), 200, (now, now)), Vec::new());
    let back = l.hold(&reserved(c.clone(), 0), 100, (now, now));
    assert_eq!(back, vec![costing(&c, 44)]);
    assert_eq!(l.held(), 256);
    // A refund to a full lease goes to the store.
    assert!(!l.give_back(&reserved(c, 0)));
}

#[test]
fn an_answer_in_an_older_epoch_never_replaces_a_newer_lease() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.hold(&reserved(c.clone(), 2), 10, (now, now)), Vec::new());
    // Two asks crossed an operator's reset; the older answer came last.
    let back = l.hold(&reserved(c.clone(), 1), 10, (now, now));
    assert_eq!(
        back,
        vec![Charge {
            cost: 10,
            ..reserved(c.clone(), 1)
        }]
    );
    assert_eq!(l.held(), 10);
    assert!(
        !l.give_back(&reserved(c.clone(), 1)),
        "nor takes its refunds"
    );
    assert!(l.take(&mut [c.clone()], now));
    assert_eq!(l.held(), 9);
    // The reset made in this process forgets the lease at once.
    l.forget(&c.budget, &c.principal, &c.window);
    assert_eq!(l.held(), 0);
    assert!(!l.take(&mut [c], now));
}

#[test]
fn at_shutdown_everything_goes_back_and_nothing_more_is_held() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.hold(&reserved(c.clone(), 0), 8, (now, now)), Vec::new());
    assert_eq!(l.release(None), vec![costing(&c, 8)]);
    assert_eq!(l.ahead(&c, now), 0, "no more asks");
    // A call still running then: what it reserved ahead, and its refund, go to the store.
    assert_eq!(l.hold(&c, 4, (now, now)), vec![costing(&c, 4)]);
    assert!(!l.give_back(&c));
    assert_eq!(l.held(), 0);
}

#[test]
fn two_charges_on_one_lease_need_room_for_both() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 2, 1 << 20);
    assert_eq!(l.hold(&c, 3, (now, now)), Vec::new());
    assert!(!l.take(&mut [c.clone(), c.clone()], now));
    assert_eq!(l.held(), 3);
    assert!(l.take(&mut [c], now));
}

#[test]
fn an_answer_to_an_ask_made_before_a_reset_here_is_not_held() {
    let (l, now) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    assert_eq!(l.ahead(&c, now), 256);
    // The reset lands while the ask is under way; its answer (in either epoch) goes back.
    l.forget(&c.budget, &c.principal, &c.window);
    let later = Instant::now();
    let back = l.hold(&reserved(c.clone(), 0), 256, (now, later));
    assert_eq!(back, vec![costing(&c, 256)]);
    assert_eq!(l.held(), 0);
    // An ask begun after it is held.
    assert_eq!(
        l.hold(&reserved(c.clone(), 1), 256, (later, later)),
        Vec::new()
    );
    assert_eq!(l.held(), 256);
}

#[test]
fn a_refusal_after_a_reset_keeps_its_mark_so_an_older_asks_answer_still_goes_back() {
    // Charges of one key whose budget is held ahead (cost 1) or reserved call by call
    // (cost 2,000: more than 1/1024 of the units).
    for refused_cost in [1, 2_000] {
        let (l, now) = (Leases::default(), Instant::now());
        let c = charge("key:a", 1, 1 << 20);
        assert_eq!(l.ahead(&c, now), 256);
        l.forget(&c.budget, &c.principal, &c.window);
        // A call refused at the store after the reset (the budget's end is near).
        let later = Instant::now();
        let refused = costing(&c, refused_cost);
        assert_eq!(l.short(&refused, later), None);
        // The ask begun before the reset is answered: its units go back, not held.
        let back = l.hold(&reserved(c.clone(), 0), 256, (now, later));
        assert_eq!(
            back,
            vec![costing(&c, 256)],
            "refused at cost {refused_cost}"
        );
        assert_eq!(l.held(), 0);
    }
}

#[test]
fn an_answer_that_took_a_leases_life_is_not_held_so_a_reset_anywhere_lands_within_two() {
    let (l, asked) = (Leases::default(), Instant::now());
    let c = charge("key:a", 1, 1 << 20);
    // A reset made by another process while this ask waited is not seen here (the answer may
    // carry the old epoch): an answer that took FRESH or longer goes back whole.
    assert_eq!(l.ahead(&c, asked), 256);
    let late = asked + FRESH;
    assert_eq!(
        l.hold(&reserved(c.clone(), 0), 256, (asked, late)),
        vec![costing(&c, 256)]
    );
    assert_eq!(l.held(), 0);
    // A store that slow: no asking ahead for a while; then the next call asks again.
    assert_eq!(l.ahead(&c, late + FRESH / 2), 0);
    assert_eq!(l.ahead(&c, late + FRESH), 256);
    // Answered just within it: held, and spent for FRESH from the answer.
    let asked = late + FRESH;
    let soon = asked + FRESH - Duration::from_millis(1);
    assert_eq!(
        l.hold(&reserved(c.clone(), 0), 256, (asked, soon)),
        Vec::new()
    );
    assert!(l.take(&mut [c.clone()], soon + FRESH - Duration::from_millis(1)));
    assert!(!l.take(&mut [c.clone()], soon + FRESH));
    // What a stale lease still holds is not carried into the next one: it goes back.
    let next = soon + FRESH;
    assert_eq!(
        l.hold(&reserved(c.clone(), 0), 10, (next, next)),
        vec![costing(&c, 255)]
    );
    assert_eq!(l.held(), 10);
}
