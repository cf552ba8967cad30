use std::time::Duration;

use proptest::prelude::*;

use super::{Circuit, Outcome, Phase};

fn breaker(failures: u32, cooldown_ms: u64) -> Option<registry::Breaker> {
    Some(registry::Breaker {
        failures,
        cooldown: Duration::from_millis(cooldown_ms),
    })
}

fn call(c: &Circuit, b: Option<registry::Breaker>, outcome: Outcome) -> bool {
    match c.admit(b) {
        Ok(t) => {
            t.report(outcome, "up");
            true
        }
        Err(_) => false,
    }
}

#[test]
fn failures_in_a_row_open_it_and_a_probe_closes_it() {
    let (c, b) = (Circuit::default(), breaker(3, 60));
    assert!(call(&c, b, Outcome::Failure));
    assert!(call(&c, b, Outcome::Failure));
    // An answer in between starts the count again.
    assert!(call(&c, b, Outcome::Success));
    for _ in 0..3 {
        assert!(call(&c, b, Outcome::Failure));
    }
    let r = c.reading();
    assert_eq!((r.phase, r.opened), (Phase::Open, 1));
    assert!(r.retry_in.is_some_and(|d| d <= Duration::from_millis(60)));
    // Open: refused at once, whatever the call.
    assert!(c.admit(b).is_err());
    std::thread::sleep(Duration::from_millis(70));
    assert_eq!(c.reading().phase, Phase::HalfOpen);
    // One probe at a time.
    let probe = c.admit(b).unwrap();
    assert!(c.admit(b).is_err());
    probe.report(Outcome::Success, "up");
    assert_eq!(c.reading().phase, Phase::Closed);
    assert!(call(&c, b, Outcome::Success));
}

#[test]
fn a_failed_probe_opens_it_again_and_a_dropped_one_lets_the_next_go() {
    let (c, b) = (Circuit::default(), breaker(1, 30));
    assert!(call(&c, b, Outcome::Failure));
    std::thread::sleep(Duration::from_millis(40));
    assert!(call(&c, b, Outcome::Failure));
    let r = c.reading();
    assert_eq!((r.phase, r.opened), (Phase::Open, 2));
    std::thread::sleep(Duration::from_millis(40));
    // The probe's caller went away: the next call is the probe.
    drop(c.admit(b).unwrap());
    let probe = c.admit(b).unwrap();
    // A cancelled probe says nothing: still half-open, the next call probes.
    probe.report(Outcome::Neutral, "up");
    assert!(call(&c, b, Outcome::Success));
    assert_eq!(c.reading().phase, Phase::Closed);
}

#[test]
fn crashes_count_and_no_breaker_admits_everything() {
    let (c, b) = (Circuit::default(), breaker(2, 60_000));
    c.failed(b, "up");
    c.failed(b, "up");
    assert_eq!(c.reading().phase, Phase::Open);
    let off = Circuit::default();
    for _ in 0..10 {
        off.failed(None, "up");
        assert!(call(&off, None, Outcome::Failure));
    }
    assert_eq!(off.reading().phase, Phase::Closed);
}

proptest! {
    /// Whatever the sequence of outcomes, the circuit is open exactly when the failures since
    /// the last success reached the threshold (with a cooldown no test outlives).
    #[test]
    fn open_is_failures_in_a_row(outcomes in prop::collection::vec(0u8..3, 0..40), n in 1u32..5) {
        let (c, b) = (Circuit::default(), breaker(n, 60_000));
        let mut in_a_row = 0;
        for o in outcomes {
            let outcome = [Outcome::Success, Outcome::Failure, Outcome::Neutral][usize::from(o)];
            let admitted = call(&c, b, outcome);
            prop_assert_eq!(admitted, in_a_row < n);
            if admitted {
                match outcome {
                    Outcome::Success => in_a_row = 0,
                    Outcome::Failure => in_a_row += 1,
                    Outcome::Neutral => {}
                }
            }
            prop_assert_eq!(c.reading().phase == Phase::Open, in_a_row >= n);
        }
    }
}

#[test]
fn a_crash_after_the_cooldown_opens_it_again_and_a_reset_closes_it() {
    let (c, b) = (Circuit::default(), breaker(2, 30));
    c.failed(b, "up");
    c.failed(b, "up");
    assert_eq!(c.reading().phase, Phase::Open);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(c.reading().phase, Phase::HalfOpen);
    // The process crashed again with no call to probe it: open, for another cooldown.
    c.failed(b, "up");
    let r = c.reading();
    assert_eq!((r.phase, r.opened), (Phase::Open, 2));
    c.reset();
    let r = c.reading();
    assert_eq!((r.phase, r.opened, r.failures), (Phase::Closed, 2, 0));
    assert!(call(&c, b, Outcome::Success));
}
