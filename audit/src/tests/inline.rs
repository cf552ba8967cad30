//! Events their callers write to the file themselves, and the flushes that follow.

use super::*;

/// Wait until callers write to the file themselves again: the writer thread has no batch out
/// and the file's thread nothing queued.
pub(super) async fn settled(audit: &Audit) {
    let inline = audit
        .inline
        .as_ref()
        .expect("a required regular file is written inline");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lock(&inline.head).busy || inline.shared.behind.load(Ordering::Acquire) > 0 {
        assert!(std::time::Instant::now() < deadline, "the writer settled");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_goes_on_once_its_event_is_written_until_a_flush_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Each flush of the file waits for the result sent here: a flush still running is one not sent.
    let named = dir.path().join("a.jsonl");
    let flush = super::flush_faults::script(&named.display().to_string());
    let (_s, path, audit) = file_and_store(&dir, false).await;
    assert_eq!(path, named);
    let soon = std::time::Duration::from_secs(3);
    let not_yet = std::time::Duration::from_millis(300);
    // `audit.start` was answered while its flush waits. Once that flush is done, call 1's event
    // is the next flush's (written before it ended, the start's flush would have taken it).
    flush.send(Ok(())).unwrap();
    counted(&audit.sinks[0].flushes, 1).await;
    tokio::time::timeout(soon, audit.record(call(1)))
        .await
        .expect("answered before its flush")
        .unwrap();
    // That flush fails: the next caller waits for its own flush...
    flush.send(Err("injected: fsync failed".into())).unwrap();
    counted(&audit.sinks[0].flush_failures, 1).await;
    let waiting = audit.record(call(2));
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(not_yet, &mut waiting).await.is_err(),
        "answered after a failed flush without waiting for its own"
    );
    // ...and is refused when it fails too (the only required sink cannot vouch for it).
    flush.send(Err("injected: fsync failed".into())).unwrap();
    assert!(matches!(
        tokio::time::timeout(soon, waiting).await.unwrap(),
        Err(AuditError::NotAccepted)
    ));
    // A flush that succeeds answers its caller, and the next caller still waits for its own.
    for n in 3..=4 {
        let waiting = audit.record(call(n));
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(not_yet, &mut waiting).await.is_err());
        flush.send(Ok(())).unwrap();
        tokio::time::timeout(soon, waiting).await.unwrap().unwrap();
    }
    let stats = &audit.sinks[0];
    counted(&stats.flushes, 3).await;
    assert_eq!(stats.flush_failures.load(Ordering::Relaxed), 2);
    // `audit.start`, calls 1, 3 and 4 are the sink's; call 2 was refused.
    assert_eq!(stats.written.load(Ordering::Relaxed), 4);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    // Every event is in the file, chained: a failed flush is not a failed write.
    assert!(matches!(check(&path), Verdict::Intact { events: 5, .. }));
    // Closing waits for its flush.
    let closing = audit.close();
    tokio::pin!(closing);
    assert!(tokio::time::timeout(not_yet, &mut closing).await.is_err());
    flush.send(Ok(())).unwrap();
    tokio::time::timeout(soon, closing).await.unwrap().unwrap();
}

/// Fault injection on the path callers write themselves: a write to the file that fails is
/// taken back and goes to every sink through the writer thread, so the store keeps the call
/// going; when the store fails too, the call is refused, and nothing of it is in the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_caller_cannot_make_goes_to_every_sink_and_is_refused_when_none_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("a.jsonl");
    let failing = super::write_faults::arm(&named.display().to_string());
    let (s, path, audit) = file_and_store(&dir, true).await;
    settled(&audit).await;
    // Written by the caller.
    audit.record(call(1)).await.unwrap();
    assert_eq!(audit.sinks[0].written.load(Ordering::Relaxed), 2);
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"r1\""));
    // The file fails: the store has the event, the file has not, and the chain is not broken.
    failing.store(true, Ordering::Relaxed);
    audit.record(call(2)).await.unwrap();
    counted(&audit.sinks[0].failed, 1).await;
    let lines = s.audit_lines(0, None, None, 0, 1000).await.unwrap();
    assert!(lines.last().unwrap().1.contains("\"r2\""));
    assert!(!std::fs::read_to_string(&path).unwrap().contains("\"r2\""));
    // The store fails too: refused, and in neither.
    s.execute_for_test("DROP TABLE audit_events").await.unwrap();
    assert!(matches!(
        audit.record(call(3)).await,
        Err(AuditError::NotAccepted)
    ));
    assert_eq!(audit.refused.load(Ordering::Relaxed), 1);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("\"r3\""));
    // The file recovers: the next event is written by its caller again, linked to the last
    // event that exists (call 2's, in the store).
    failing.store(false, Ordering::Relaxed);
    settled(&audit).await;
    let written = audit.sinks[0].written.load(Ordering::Relaxed);
    audit.record(call(4)).await.unwrap();
    assert_eq!(audit.sinks[0].written.load(Ordering::Relaxed), written + 1);
    let text = std::fs::read_to_string(&path).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let r2: Value = serde_json::from_str(&lines.last().unwrap().1).unwrap();
    assert_eq!(last["request_id"], "r4");
    assert_eq!(last["prev"], r2["hash"]);
    assert_eq!(last["seq"], r2["seq"].as_u64().unwrap() + 1);
}

/// A flush in progress holds up no caller, however many write meanwhile: each is written by its
/// caller at once (the file's queue does not fill with their flushes), and one flush after the
/// held one serves them all.
#[tokio::test(flavor = "multi_thread")]
async fn callers_write_while_a_flush_runs_and_the_next_flush_serves_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("a.jsonl");
    let flush = super::flush_faults::script(&named.display().to_string());
    let (_s, path, audit) = file_and_store(&dir, true).await;
    // `audit.start`'s flush is held (nothing sent to the script yet).
    settled(&audit).await;
    let stats = &audit.sinks[0];
    let soon = std::time::Duration::from_secs(5);
    tokio::time::timeout(soon, async {
        for n in 0..(2 * SINK_QUEUE as u64 + 10) {
            audit.record(call(n)).await.unwrap();
            assert_eq!(stats.written.load(Ordering::Relaxed), n + 2, "call {n}");
        }
    })
    .await
    .expect("callers were held up by a flush in progress");
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.flushes.load(Ordering::Relaxed), 0);
    // The held flush and the one after it.
    flush.send(Ok(())).unwrap();
    flush.send(Ok(())).unwrap();
    counted(&stats.flushes, 2).await;
    assert!(matches!(
        check(&path),
        Verdict::Intact { events, .. } if events == 2 * SINK_QUEUE as u64 + 11
    ));
}

/// Callers writing one after another while a flush is owed send the file's thread one message
/// for the group (one wake-up), not one per event: the count they add to stays theirs until the
/// flush claims it. Every event is still flushed.
#[tokio::test(flavor = "multi_thread")]
async fn one_message_to_the_files_thread_serves_each_group_of_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, path, audit) = file_and_store(&dir, true).await;
    settled(&audit).await;
    let stats = &audit.sinks[0];
    // `audit.start`'s own flush.
    counted(&stats.flushes, 1).await;
    let shared = &audit.inline.as_ref().unwrap().shared;
    let (asked, flushes) = (
        shared.asked.load(Ordering::Relaxed),
        stats.flushes.load(Ordering::Relaxed),
    );
    // Notes (their flush waits longest for company) and then a request event, which brings the
    // flush forward with one more message.
    for n in 0..40 {
        audit.note(call(n));
    }
    audit.record(call(40)).await.unwrap();
    // Closing flushes whatever is still owed, then the chain's last event with a flush of its
    // own, and returns once that is counted.
    audit.close().await.unwrap();
    assert_eq!(shared.unflushed.load(Ordering::Acquire), 0);
    let groups = stats.flushes.load(Ordering::Relaxed) - flushes - 1;
    let sent = shared.asked.load(Ordering::Relaxed) - asked;
    // Each group: its first event's message; and one for the one request event (which, counted
    // just before a flush claimed it, may send one that finds nothing left).
    assert!(
        groups >= 1 && sent <= groups + 1,
        "{sent} messages for {groups} flushes"
    );
    assert!(matches!(check(&path), Verdict::Intact { events: 43, .. }));
}

/// Once the file's thread has ended, callers no longer write the file themselves: nothing would
/// flush it. (Here it ends as it does when the log is dropped; the guard that tells callers runs
/// however it ends, a panic's unwinding included.)
#[tokio::test(flavor = "multi_thread")]
async fn callers_stop_writing_the_file_themselves_once_its_thread_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, _path, audit) = file_and_store(&dir, true).await;
    settled(&audit).await;
    let shared = audit.inline.as_ref().unwrap().shared.clone();
    assert!(shared.flushing.load(Ordering::Acquire));
    // The thread ends when the last handle to its queue goes.
    drop(audit);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while shared.flushing.load(Ordering::Acquire) {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread's end was noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A failed flush of another file sink (best effort here) does not stop callers from writing
/// the required file themselves: only that file's own flushes decide.
#[tokio::test(flavor = "multi_thread")]
async fn another_sinks_failed_flush_does_not_change_how_callers_write() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let flush_b = super::flush_faults::script(&b.display().to_string());
    let s = store(&dir).await;
    let audit = Audit::open(
        &settings(vec![(file(&a), true), (file(&b), false)]),
        &s,
        "test",
        "sha256:t",
    )
    .await
    .unwrap();
    flush_b.send(Ok(())).unwrap();
    settled(&audit).await;
    audit.record(call(1)).await.unwrap();
    flush_b.send(Err("injected: fsync failed".into())).unwrap();
    counted(&audit.sinks[1].flush_failures, 1).await;
    settled(&audit).await;
    let written = audit.sinks[0].written.load(Ordering::Relaxed);
    audit.record(call(2)).await.unwrap();
    // Written by the caller: counted when `record` returns.
    assert_eq!(audit.sinks[0].written.load(Ordering::Relaxed), written + 1);
    flush_b.send(Ok(())).unwrap();
}

/// A caller's write that stalls (held here before it is made, as a frozen disk holds it) fails
/// nothing, yet no sink takes an event meanwhile (the write holds the chain's head): once it has
/// lasted past [`crate::stall::STALLED`] the log is not writable (readiness says so), though the
/// store, required too, is healthy; it is again once the write returns.
#[tokio::test(flavor = "multi_thread")]
async fn a_callers_write_that_stalls_makes_the_log_unwritable_until_it_returns() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (_s, path, audit) = file_and_store(&dir, true).await;
    settled(&audit).await;
    let inline = audit.inline.as_ref().unwrap();
    assert_eq!(inline.writing.lasting(), None);
    assert!(audit.writable());
    let stall = crate::stall::STALLED + Duration::from_millis(700);
    *inline.stall.lock().unwrap() = stall;
    let audit = Arc::new(audit);
    let started = Instant::now();
    let writing = {
        let audit = audit.clone();
        std::thread::spawn(move || audit.note(call(1)))
    };
    let lasting = || audit.inline.as_ref().unwrap().writing.lasting();
    let first = loop {
        if let Some(d) = lasting() {
            break d;
        }
        assert!(
            started.elapsed() < stall,
            "the write was never seen under way"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    // Under way, but not yet for long: still writable.
    assert!(audit.writable());
    std::thread::sleep(
        (crate::stall::STALLED + Duration::from_millis(200)).saturating_sub(started.elapsed()),
    );
    let later = lasting().expect("still under way");
    assert!(
        later > crate::stall::STALLED && later >= first && later <= started.elapsed(),
        "{first:?} then {later:?}"
    );
    assert!(
        !audit.writable(),
        "a stalled file still counted as writable"
    );
    writing.join().unwrap();
    assert!(started.elapsed() >= stall);
    assert_eq!(lasting(), None);
    assert!(audit.writable());
    // The caller wrote it itself: it is in the file once `note` returns.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"r1\""), "{text}");
}

/// The file's thread held in a flush (an `fsync` a frozen disk does not answer): while callers
/// are answered before the flush and go on writing, the file still takes events; once a flush
/// has failed and callers wait for their own, a flush under way past
/// [`crate::stall::STALLED`] makes the log unwritable until it returns.
#[tokio::test(flavor = "multi_thread")]
async fn a_flush_that_stalls_makes_the_log_unwritable_only_once_callers_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("a.jsonl");
    let flush = super::flush_faults::script(&named.display().to_string());
    let (_s, _path, audit) = file_and_store(&dir, false).await;
    let past = crate::stall::STALLED + std::time::Duration::from_millis(300);
    // `audit.start`'s flush is under way, unanswered; callers do not wait for it.
    tokio::time::sleep(past).await;
    assert!(
        audit.writable(),
        "a flush nobody waits for counted as stalled"
    );
    // It fails: callers now wait for their own flush.
    flush.send(Err("injected: fsync failed".into())).unwrap();
    counted(&audit.sinks[0].flush_failures, 1).await;
    let audit = std::sync::Arc::new(audit);
    let one = tokio::spawn({
        let audit = audit.clone();
        async move { audit.record(call(1)).await }
    });
    flush.send(Ok(())).unwrap();
    one.await.unwrap().unwrap();
    assert!(audit.writable());
    // The next caller's flush hangs: not writable once it has lasted past the threshold.
    let two = tokio::spawn({
        let audit = audit.clone();
        async move { audit.record(call(2)).await }
    });
    tokio::time::sleep(past).await;
    assert!(
        !audit.writable(),
        "a stalled flush callers wait for still counted as writable"
    );
    flush.send(Ok(())).unwrap();
    two.await.unwrap().unwrap();
    assert!(audit.writable());
}
