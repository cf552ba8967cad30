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

/// An audit log on `store` with `sinks`.
async fn open_with(store: &Store, sinks: Vec<(SinkKind, bool)>) -> Audit {
    Audit::open(&settings(sinks), store, "test", "sha256:t")
        .await
        .unwrap()
}

/// The file and the store hold the same lines, in the same order.
async fn assert_same_lines(path: &std::path::Path, store: &Store) {
    let file: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let stored: Vec<String> = store
        .audit_lines(0, None, None, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(file, stored);
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
async fn an_event_a_caller_writes_is_in_the_file_when_it_returns_and_in_the_store_next() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, path, audit) = file_and_store(&dir, true).await;
    // The writer thread has the chain's first event out until a sink took it, and the file's
    // thread has it queued until written: until then, callers leave theirs to the writer.
    inline::settled(&audit).await;
    // A noted event is written by the caller: in the file when `note` returns.
    audit.note(call(1));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"request_id\":\"r1\""), "{text}");
    assert_eq!(audit.sinks[0].written.load(Ordering::Relaxed), 2);
    // Alone, it reaches the store moments later.
    counted(&audit.sinks[1].written, 2).await;
    // Followed by an event somebody waits for, both are in the file when the call goes on, in
    // order, and then in the store.
    audit.note(call(2));
    audit.record(call(3)).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let at = |r: &str| text.find(&format!("\"request_id\":\"{r}\"")).unwrap();
    assert!(at("r1") < at("r2") && at("r2") < at("r3"), "{text}");
    counted(&audit.sinks[1].written, 4).await;
    // The file's flushes follow on its thread.
    counted(&audit.sinks[0].flushes, 2).await;
    assert!(matches!(check(&path), Verdict::Intact { events: 4, .. }));
}

/// Callers writing at once, some waited for and some not, while the writer thread takes some
/// (the chain's first event, and any a caller finds it busy with): the file holds every event
/// once, chained in order, and the store the same lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_writing_at_once_keep_one_chain_in_both_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, audit) = file_and_store(&dir, true).await;
    let audit = Arc::new(audit);
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            let audit = audit.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    match n % 3 {
                        0 => audit.note(call(t * 100 + n)),
                        _ => audit.record(call(t * 100 + n)).await.unwrap(),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    audit.close().await.unwrap();
    assert!(
        matches!(check(&path), Verdict::Intact { events: 642, .. }),
        "{:?}",
        check(&path)
    );
    assert_same_lines(&path, &store).await;
}

/// Events callers write to the file themselves reach the store together: the store waits up to
/// `STORE_LINGER` for company, and a batch somebody waits for ends the wait.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_writes_what_callers_wrote_a_millisecond_apart_in_fewer_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, audit) = file_and_store(&dir, true).await;
    inline::settled(&audit).await;
    counted(&audit.sinks[1].written, 1).await;
    let before = audit.sinks[1].flushes.load(Ordering::Relaxed);
    // Eight events a millisecond apart: written one by one, they would take eight transactions;
    // waiting for company, one per `STORE_LINGER` they took (and one for the last ones).
    let started = std::time::Instant::now();
    for n in 0..8 {
        audit.note(call(n));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let took = started.elapsed();
    counted(&audit.sinks[1].written, 9).await;
    let transactions = audit.sinks[1].flushes.load(Ordering::Relaxed) - before;
    let most = (took.as_millis() / crate::sink::STORE_LINGER.as_millis() + 2).min(7) as u64;
    assert!(
        transactions <= most,
        "{transactions} transactions for 8 events over {took:?}"
    );
    audit.close().await.unwrap();
    assert_same_lines(&path, &store).await;
}

/// The store lags the file: a new chain that links to a file's recent event the store does not
/// hold yet waits until it does, so the link comes first in the store as well as in the file; an
/// event the store never gets costs only the wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_chain_waits_for_the_store_to_hold_the_file_event_it_links_to() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, first) = file_and_store(&dir, true).await;
    first.record(call(1)).await.unwrap();
    first.close().await.unwrap();
    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // A run with the file alone; its events reach the store 150 ms later, as from a store sink
    // that lags.
    let alone = open_with(&store, vec![(file(&path), true)]).await;
    alone.record(call(2)).await.unwrap();
    alone.close().await.unwrap();
    let written = lines(&path);
    let file_last = written.last().unwrap().clone();
    let raw = std::fs::read_to_string(&path).unwrap();
    let late: Vec<(String, i64, i64, String)> = written
        .iter()
        .zip(raw.lines())
        .filter(|(e, _)| e["chain"] == file_last["chain"])
        .map(|(e, line)| {
            let at = crate::clock::parse_time(e["time"].as_str().unwrap()).unwrap();
            let chain = e["chain"].as_str().unwrap().to_string();
            (chain, e["seq"].as_i64().unwrap(), at, line.to_string())
        })
        .collect();
    let mut writer = store.audit_writer().unwrap();
    let lagging = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let rows: Vec<AuditRow<'_>> = late
            .iter()
            .map(|(chain, seq, at_ms, line)| AuditRow {
                chain,
                seq: *seq,
                at_ms: *at_ms,
                session: None,
                trace_id: None,
                line,
            })
            .collect();
        writer.append(&rows).unwrap();
    });
    let both = || vec![(file(&path), true), (SinkKind::Store, true)];
    let third = open_with(&store, both()).await;
    third.close().await.unwrap();
    lagging.join().unwrap();
    let start = |path: &std::path::Path| {
        lines(path)
            .into_iter()
            .rfind(|e| e["kind"] == "audit.start")
            .unwrap()
    };
    assert_eq!(start(&path)["prev"], file_last["hash"]);
    // Both sinks verify strictly: each holds the link before the chain.
    assert!(
        matches!(check(&path), Verdict::Intact { .. }),
        "{:?}",
        check(&path)
    );
    let exported = dir.path().join("export.jsonl");
    let stored: Vec<String> = store
        .audit_lines(0, None, None, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l + "\n")
        .collect();
    std::fs::write(&exported, stored.concat()).unwrap();
    assert!(
        matches!(check(&exported), Verdict::Intact { .. }),
        "{:?}",
        check(&exported)
    );
    // An event the store never gets: the chain links to it after the wait, and the file verifies.
    let alone = open_with(&store, vec![(file(&path), true)]).await;
    alone.close().await.unwrap();
    let file_last = lines(&path).last().unwrap().clone();
    let started = std::time::Instant::now();
    let fourth = open_with(&store, both()).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    fourth.close().await.unwrap();
    assert_eq!(start(&path)["prev"], file_last["hash"]);
    assert!(
        matches!(check(&path), Verdict::Intact { .. }),
        "{:?}",
        check(&path)
    );
}
