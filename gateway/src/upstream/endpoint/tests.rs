use proptest::prelude::*;
use registry::Balance;

use super::{RetryBudget, ranked};

#[test]
fn least_requests_asks_the_least_loaded_for_its_weight_first() {
    // (weight, running)
    assert_eq!(
        ranked(&[(1, 3), (1, 0), (1, 1)], Balance::LeastRequests, 0)[0],
        1
    );
    // Twice the weight carries twice the calls before it is the busier one.
    assert_eq!(ranked(&[(2, 4), (1, 1)], Balance::LeastRequests, 0)[0], 1);
    assert_eq!(ranked(&[(2, 2), (1, 1)], Balance::LeastRequests, 0)[0], 0);
    // Ties go round.
    let firsts: Vec<usize> = (0..4)
        .map(|t| ranked(&[(1, 0), (1, 0)], Balance::LeastRequests, t)[0])
        .collect();
    assert_eq!(firsts, [0, 1, 0, 1]);
}

#[test]
fn the_retry_budget_is_a_share_of_calls() {
    let b = RetryBudget::default();
    // A few retries to start with.
    assert!((0..3).all(|_| b.withdraw(20)));
    assert!(!b.withdraw(20));
    // Then one per five calls at 20%.
    for _ in 0..5 {
        b.deposit(20);
    }
    assert!(b.withdraw(20));
    assert!(!b.withdraw(20));
    // Off means off, whatever is banked.
    for _ in 0..50 {
        b.deposit(20);
    }
    assert!(!b.withdraw(0));
    let (made, refused) = (
        b.retried.load(std::sync::atomic::Ordering::Relaxed),
        b.refused.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!((made, refused), (4, 3));
}

proptest! {
    /// Over one round of the weights, round robin asks each endpoint first as often as its
    /// weight, and every order names each endpoint once.
    #[test]
    fn round_robin_follows_the_weights(weights in prop::collection::vec(1u32..5, 1..5), start in 0usize..100) {
        let loads: Vec<(u32, usize)> = weights.iter().map(|w| (*w, 0)).collect();
        let total: usize = weights.iter().map(|w| *w as usize).sum();
        let mut firsts = vec![0u32; weights.len()];
        for turn in start..start + total {
            let order = ranked(&loads, Balance::RoundRobin, turn);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..weights.len()).collect::<Vec<_>>());
            firsts[order[0]] += 1;
        }
        prop_assert_eq!(firsts, weights);
    }

    /// Least-requests always asks first an endpoint with the least load for its weight.
    #[test]
    fn least_requests_is_least_loaded_first(loads in prop::collection::vec((1u32..5, 0usize..20), 1..6), turn in 0usize..10) {
        let order = ranked(&loads, Balance::LeastRequests, turn);
        let load = |i: usize| (loads[i].1 as u64 + 1) * 1_000_000 / u64::from(loads[i].0);
        let best = (0..loads.len()).map(load).min().unwrap();
        prop_assert_eq!(load(order[0]), best);
        prop_assert!(order.windows(2).all(|w| load(w[0]) <= load(w[1])));
    }
}

#[test]
fn only_a_request_that_never_left_is_sent_again_as_a_write() {
    use super::super::UpstreamError as E;
    let s = || "up".to_owned();
    for (e, read, write) in [
        (E::Unreached(s()), true, true),
        (E::Transport(s()), true, false),
        (E::Status(s(), 503), true, false),
        (E::Status(s(), 502), true, false),
        (E::Status(s(), 429), false, false),
        (E::Status(s(), 401), false, false),
        (
            E::Timeout(s(), std::time::Duration::from_secs(1)),
            false,
            false,
        ),
        (E::Down(s()), true, true),
        (E::Unreadable(s()), false, false),
        (E::Open(s(), 1), false, false),
    ] {
        assert_eq!(
            (e.retryable(true), e.retryable(false)),
            (read, write),
            "{e:?}"
        );
    }
}

#[test]
fn ten_percent_ten_times_is_one_retry() {
    let b = RetryBudget::default();
    assert!((0..3).all(|_| b.withdraw(10)));
    for _ in 0..10 {
        b.deposit(10);
    }
    assert!(b.withdraw(10));
}
