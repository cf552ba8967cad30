use super::*;

fn batch(bytes: usize) -> Work {
    Work::Batch(Arc::new(Batch {
        number: 1,
        chain: Arc::from("c"),
        lines: vec![Line {
            seq: 1,
            at_ms: 0,
            session: None,
            trace_id: None,
            text: "x".repeat(bytes),
        }],
        acks: std::sync::Mutex::new(Vec::new()),
        required_left: AtomicU64::new(0),
        all: false,
        sinks_left: AtomicU64::new(1),
        accepted: AtomicBool::new(true),
        report: false,
    }))
}

/// Napping until `timeout`, in a thread of its own: what it got and how long it took.
fn napper(
    nap: Arc<Nap>,
    rx: std::sync::mpsc::Receiver<Work>,
    timeout: Duration,
) -> std::thread::JoinHandle<(bool, Duration)> {
    let (ready, up) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        nap.register();
        ready.send(()).unwrap();
        let started = Instant::now();
        let got = nap.wait(&rx, timeout).is_ok();
        (got, started.elapsed())
    });
    up.recv().unwrap();
    handle
}

/// Wait until the thread naps (it says so just before it parks, and is given time to park).
fn napping(nap: &Nap) {
    while !nap.napping.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// A thread napping for 30 s on a queue of `capacity`: `before` runs while it naps, then `wake`
/// must wake it at once with a batch to take. The nap's counts, after.
fn woken(capacity: usize, before: impl FnOnce(&Queue), wake: impl FnOnce(&Queue)) -> Arc<Nap> {
    let nap = Arc::new(Nap::default());
    let (queue, rx) = Queue::new(capacity, true, Some(nap.clone()));
    let thread = napper(nap.clone(), rx, Duration::from_secs(30));
    napping(&nap);
    before(&queue);
    // Not woken yet.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!thread.is_finished());
    wake(&queue);
    let (got, took) = thread.join().unwrap();
    assert!(
        got && took < Duration::from_secs(10),
        "{got} after {took:?}"
    );
    nap
}

#[test]
fn a_batch_somebody_waits_for_wakes_the_napping_thread() {
    let nap = woken(16, |_| {}, |q| q.try_send(batch(10), true).unwrap());
    assert_eq!(nap.queued.load(Ordering::SeqCst), 0);
    assert_eq!(nap.bytes.load(Ordering::SeqCst), 0);
}

#[test]
fn enough_batches_nobody_waits_for_wake_it_too() {
    // One short of the mark, it naps on; the mark wakes it.
    let nap = woken(
        STORE_QUEUE,
        |q| (1..WAKE_AT).for_each(|_| q.try_send(batch(10), false).unwrap()),
        |q| q.try_send(batch(10), false).unwrap(),
    );
    // It took one; the rest are still counted as queued.
    assert_eq!(nap.queued.load(Ordering::SeqCst), WAKE_AT - 1);
    assert_eq!(nap.bytes.load(Ordering::SeqCst), (WAKE_AT - 1) * 10);
}

#[test]
fn a_nap_ends_at_its_time_with_nothing_queued_even_if_woken_meanwhile() {
    let nap = Arc::new(Nap::default());
    let (_queue, rx) = Queue::new(16, true, Some(nap.clone()));
    let thread = napper(nap.clone(), rx, Duration::from_millis(300));
    napping(&nap);
    // A wake-up with nothing queued (as one left over from an earlier batch) does not end it.
    thread.thread().unpark();
    let (got, took) = thread.join().unwrap();
    assert!(!got);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(!nap.napping.load(Ordering::SeqCst));
}

#[test]
fn the_chains_last_batch_is_counted_and_wakes_it() {
    let nap = woken(16, |_| {}, |q| q.send(batch(7)).unwrap());
    assert_eq!(nap.queued.load(Ordering::SeqCst), 0);
    assert_eq!(nap.bytes.load(Ordering::SeqCst), 0);
}

#[test]
fn the_store_queue_is_bounded_by_bytes_but_always_takes_one_batch() {
    let nap = Arc::new(Nap::default());
    let (queue, rx) = Queue::new(16, true, Some(nap.clone()));
    let big = usize::try_from(STORE_BYTES).unwrap() + 1;
    // Nothing queued: even a batch over the bound goes.
    queue.try_send(batch(big), false).unwrap();
    assert!(matches!(
        queue.try_send(batch(1), false),
        Err(TrySendError::Full(_))
    ));
    // A refusal leaves the counts as they were; taking the batch frees its bytes.
    assert_eq!(nap.bytes.load(Ordering::SeqCst), STORE_BYTES + 1);
    assert_eq!(nap.queued.load(Ordering::SeqCst), 1);
    let taken = rx.try_recv().unwrap();
    nap.took(&taken);
    assert_eq!(nap.bytes.load(Ordering::SeqCst), 0);
    queue.try_send(batch(1), false).unwrap();
    // Past its batches, it is full too, and counts nothing for the refused one.
    let (small, _rx) = Queue::new(1, true, Some(nap.clone()));
    let before = nap.bytes.load(Ordering::SeqCst);
    small.try_send(batch(1), false).unwrap();
    assert!(matches!(
        small.try_send(batch(1), false),
        Err(TrySendError::Full(_))
    ));
    assert_eq!(nap.bytes.load(Ordering::SeqCst), before + 1);
    assert_eq!(nap.queued.load(Ordering::SeqCst), 2);
}

#[test]
fn the_other_sinks_queues_are_bounded_by_batches_only() {
    let (queue, _rx) = Queue::new(2, false, None);
    queue
        .try_send(batch(usize::try_from(STORE_BYTES).unwrap() + 1), false)
        .unwrap();
    queue.try_send(batch(1), false).unwrap();
    assert!(matches!(
        queue.try_send(batch(1), false),
        Err(TrySendError::Full(_))
    ));
}
