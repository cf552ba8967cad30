use super::*;

#[test]
fn a_tool_rate_allows_its_count_at_once_then_one_per_interval() {
    let l = Limits::default();
    let rate = registry::Rate::parse("2/s").unwrap();
    assert!(l.admit("s", "t", rate).is_ok());
    assert!(l.admit("s", "t", rate).is_ok());
    let wait = l.admit("s", "t", rate).unwrap_err();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    // Other tools have their own count.
    assert!(l.admit("s", "u", rate).is_ok());
    std::thread::sleep(wait + Duration::from_millis(20));
    assert!(l.admit("s", "t", rate).is_ok());
    assert!(l.admit("s", "t", rate).is_err());
}

#[test]
fn a_changed_rate_starts_afresh() {
    let l = Limits::default();
    let one = registry::Rate::parse("1/min").unwrap();
    assert!(l.admit("s", "t", one).is_ok());
    assert!(l.admit("s", "t", one).is_err());
    let more = registry::Rate::parse("5/min").unwrap();
    assert!(l.admit("s", "t", more).is_ok());
}

#[test]
fn a_limiter_whose_state_is_poisoned_refuses() {
    let l = std::sync::Arc::new(Limits::default());
    let rate = registry::Rate::parse("100/s").unwrap();
    let held = l.clone();
    let _ = std::thread::spawn(move || {
        let _guard = held.tools.lock().unwrap();
        panic!("poison the lock");
    })
    .join();
    assert!(l.admit("s", "t", rate).is_err());
}
