use super::*;

#[test]
fn at_most_count_per_window_and_the_window_slides() {
    let l = Limits::default();
    let rate = registry::Rate::parse("2/s").unwrap();
    let t0 = Instant::now();
    assert!(l.admit("s", "t", rate, t0).is_ok());
    assert!(
        l.admit("s", "t", rate, t0 + Duration::from_millis(100))
            .is_ok()
    );
    let wait = l
        .admit("s", "t", rate, t0 + Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(wait, Duration::from_millis(800));
    // Other tools have their own count.
    assert!(l.admit("s", "u", rate, t0).is_ok());
    assert!(
        l.admit("s", "t", rate, t0 + Duration::from_millis(1000))
            .is_ok()
    );
    assert!(
        l.admit("s", "t", rate, t0 + Duration::from_millis(1050))
            .is_err()
    );
}

#[test]
fn a_limiter_whose_state_is_poisoned_refuses() {
    let l = std::sync::Arc::new(Limits::default());
    let rate = registry::Rate::parse("100/s").unwrap();
    let held = l.clone();
    let _ = std::thread::spawn(move || {
        let _guard = held.log.lock().unwrap();
        panic!("poison the lock");
    })
    .join();
    assert!(l.admit("s", "t", rate, Instant::now()).is_err());
}
