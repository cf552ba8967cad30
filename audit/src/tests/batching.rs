//! Which events a batch takes: it lingers for events nobody waits for, and stops at the first
//! one somebody does.

use super::*;

fn job(n: u64, waited_for: bool) -> (Job, Option<oneshot::Receiver<bool>>) {
    let (ack, answer) = match waited_for {
        true => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let job = Job {
        event: call(n),
        ack,
        all: false,
    };
    (job, answer)
}

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| j.event.request_id.clone().unwrap_or_default())
        .collect()
}

#[test]
fn lingering_stops_at_the_first_event_somebody_waits_for_and_takes_what_queued_behind_it() {
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let mut jobs = vec![job(1, false).0];
    let (waited, _answer) = job(2, true);
    tx.try_send(waited).unwrap();
    tx.try_send(job(3, false).0).unwrap();
    let started = std::time::Instant::now();
    linger(&clock, &mut rx, &mut jobs);
    // Nothing was waited for: the recorded event was already there.
    assert!(started.elapsed() < LINGER, "{:?}", started.elapsed());
    assert_eq!(ids(&jobs), ["r1", "r2", "r3"]);
    // Only notes: they wait the whole time for company, and take what comes.
    let mut jobs = vec![job(4, false).0];
    tx.try_send(job(5, false).0).unwrap();
    let started = std::time::Instant::now();
    linger(&clock, &mut rx, &mut jobs);
    assert!(started.elapsed() >= LINGER, "{:?}", started.elapsed());
    assert_eq!(ids(&jobs), ["r4", "r5"]);
    // A closed queue (the gateway stopping) ends the wait at once.
    drop(tx);
    let mut jobs = vec![job(6, false).0];
    let started = std::time::Instant::now();
    linger(&clock, &mut rx, &mut jobs);
    assert!(started.elapsed() < LINGER, "{:?}", started.elapsed());
    assert_eq!(ids(&jobs), ["r6"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_nobody_waits_for_goes_out_with_the_next_record_or_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, path, audit) = file_and_store(&dir, true).await;
    let before = audit.batches.load(Ordering::Relaxed);
    // Alone, a noted event is not held for another: it is written moments later.
    audit.note(call(1));
    counted(&audit.sinks[0].written, 2).await;
    counted(&audit.sinks[1].written, 2).await;
    assert_eq!(audit.batches.load(Ordering::Relaxed), before + 1);
    // Followed by an event somebody waits for, both go out in one batch, in order.
    let sent = std::time::Instant::now();
    audit.note(call(2));
    audit.record(call(3)).await.unwrap();
    if sent.elapsed() < LINGER / 2 {
        assert_eq!(audit.batches.load(Ordering::Relaxed), before + 2);
    }
    counted(&audit.sinks[0].written, 4).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let at = |r: &str| text.find(&format!("\"request_id\":\"{r}\"")).unwrap();
    assert!(at("r1") < at("r2") && at("r2") < at("r3"), "{text}");
    assert!(matches!(check(&path), Verdict::Intact { events: 4, .. }));
}
