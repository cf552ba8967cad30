use std::collections::HashSet;
use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::Reserve;

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The threads that ran `n` tasks spawned from outside the runtime, each holding its worker for
/// a millisecond (long enough that a free worker would take the next one).
fn threads_running(rt: &tokio::runtime::Runtime, n: usize) -> HashSet<ThreadId> {
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let tx = tx.clone();
        rt.spawn(async move {
            std::thread::sleep(Duration::from_millis(1));
            tx.send(std::thread::current().id()).unwrap();
        });
    }
    (0..n)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect()
}

#[test]
fn a_held_worker_takes_no_work_until_woken_and_is_not_held_again() {
    let rt = runtime(2);
    let reserve = Reserve::new();
    // Dropped before the runtime, also when a check fails: its shutdown waits for every worker.
    let _end = super::EndOnDrop(reserve.clone());
    reserve.hold(rt.handle());
    until("the worker never went to sleep", || reserve.asleep());
    assert_eq!(
        threads_running(&rt, 40).len(),
        1,
        "the held worker ran tasks"
    );

    reserve.wake();
    until("the woken worker stayed asleep", || !reserve.asleep());
    assert!(!reserve.held());
    assert_eq!(
        threads_running(&rt, 40).len(),
        2,
        "the woken worker took no work"
    );
    // Never held again once woken (a worker taking the hold mid-run could strand tasks).
    reserve.hold(rt.handle());
    assert!(!reserve.held());
    assert_eq!(threads_running(&rt, 40).len(), 2);
}

#[test]
fn a_runtime_of_one_worker_or_one_thread_is_not_held() {
    let one = runtime(1);
    let reserve = Reserve::new();
    reserve.hold(one.handle());
    assert!(!reserve.held());
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    reserve.hold(current.handle());
    assert!(!reserve.held());
    assert_eq!(one.block_on(async { 7 }), 7);
}

#[test]
fn an_ended_reserve_lets_its_worker_go_and_holds_no_other() {
    let rt = runtime(2);
    let reserve = Reserve::new();
    reserve.hold(rt.handle());
    until("the worker never went to sleep", || reserve.asleep());
    let ended = super::EndOnDrop(reserve.clone());
    drop(ended);
    until("the ended reserve kept its worker", || !reserve.asleep());
    reserve.hold(rt.handle());
    assert!(!reserve.held(), "an ended reserve held a worker again");
    let started = Instant::now();
    rt.shutdown_timeout(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(4));
}
