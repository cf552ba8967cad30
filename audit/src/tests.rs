use std::io::BufReader;

use registry::{AuditSettings, AuditSink, SinkKind};

use super::verify::{Verdict, verify};
use super::*;

async fn store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    Store::open(&url).await.unwrap()
}

fn settings(sinks: Vec<(SinkKind, bool)>) -> AuditSettings {
    AuditSettings {
        sinks: sinks
            .into_iter()
            .map(|(kind, required)| AuditSink { kind, required })
            .collect(),
        redact: Vec::new(),
        redact_key: None,
        retention: None,
    }
}

fn file(path: &std::path::Path) -> SinkKind {
    SinkKind::File {
        path: path.display().to_string(),
        fsync: true,
        rotate: registry::Rotation::OFF,
    }
}

/// A store in `dir` and an audit log with a required file sink `a.jsonl` and the store sink.
async fn file_and_store(
    dir: &tempfile::TempDir,
    store_required: bool,
) -> (Store, std::path::PathBuf, Audit) {
    let s = store(dir).await;
    let path = dir.path().join("a.jsonl");
    let audit = Audit::open(
        &settings(vec![(file(&path), true), (SinkKind::Store, store_required)]),
        &s,
        "test",
        "sha256:t",
    )
    .await
    .unwrap();
    (s, path, audit)
}

fn check(path: &std::path::Path) -> Verdict {
    verify(BufReader::new(std::fs::File::open(path).unwrap())).unwrap()
}

/// Wait until `counter` reaches `at_least`: a sink that did not answer the call counts its
/// batch on its own thread.
async fn counted(counter: &std::sync::atomic::AtomicU64, at_least: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while counter.load(Ordering::Relaxed) < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "counter stayed below {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn call(n: u64) -> Event {
    let mut e = Event::new("tool.call");
    e.request_id = Some(format!("r{n}"));
    e.tool = Some("search_notes".into());
    e.outcome = Some("allowed");
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_chained_across_runs_and_an_edit_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let path = dir.path().join("audit.jsonl");
    for _run in 0..2 {
        let audit = Audit::open(
            &settings(vec![(file(&path), true), (SinkKind::Store, true)]),
            &s,
            "test",
            "sha256:t",
        )
        .await
        .unwrap();
        for n in 0..20 {
            audit.record(call(n)).await.unwrap();
        }
        audit.note(call(99));
        // A record after a note means the note is written too (one writer, in order).
        audit.record(call(100)).await.unwrap();
        // Closing waits for every sink, not only the first to answer.
        audit.close().await.unwrap();
    }
    let Verdict::Intact {
        events,
        chains,
        anchor,
        ..
    } = check(&path)
    else {
        panic!("{:?}", check(&path));
    };
    assert_eq!((events, chains, anchor), (2 * 24, 2, None));
    // The store has the same lines.
    let rows = s.audit_lines(0, None, None, 0, 1000).await.unwrap();
    assert_eq!(rows.len(), 48);

    // Edit one field of line 7.
    let text = std::fs::read_to_string(&path).unwrap();
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 6 {
                l.replace("search_notes", "delete_note")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    match check(&path) {
        Verdict::Broken { line, why, .. } => {
            assert_eq!(line, 7);
            assert!(why.contains("edited"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Remove line 7 instead.
    let removed: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&path, removed.join("\n") + "\n").unwrap();
    match check(&path) {
        Verdict::Broken { line, why, .. } => {
            assert_eq!(line, 7);
            assert!(why.contains("removed"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Remove the whole first run: the second run links to an event that is gone.
    let second: Vec<&str> = text.lines().skip(23).collect();
    let mut with_head = vec![text.lines().next().unwrap()];
    with_head.extend(second.iter().copied());
    std::fs::write(&path, with_head.join("\n") + "\n").unwrap();
    assert!(
        matches!(check(&path), Verdict::Broken { line: 2, .. }),
        "{:?}",
        check(&path)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_sink_refuses_records_and_another_required_sink_is_enough() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let full = std::path::Path::new("/dev/full");
    // The only required sink is full: nothing can be recorded, so the gateway cannot start.
    let err = Audit::open(
        &settings(vec![(file(full), true), (SinkKind::Stdout, false)]),
        &s,
        "test",
        "sha256:t",
    )
    .await
    .err()
    .unwrap();
    assert!(err.contains("no required audit sink"), "{err}");
    // With the store also required, either one succeeding is enough.
    let audit = Audit::open(
        &settings(vec![(file(full), true), (SinkKind::Store, true)]),
        &s,
        "test",
        "sha256:t",
    )
    .await
    .unwrap();
    audit.record(call(1)).await.unwrap();
    assert!(audit.sinks[1].written.load(Ordering::Relaxed) >= 2);
    // The call was answered by the store; the full file's failure is counted on its own thread.
    counted(&audit.sinks[0].failed, 2).await;
    // Fault: the store loses its table too. Now the record is refused, and counted.
    s.execute_for_test("DROP TABLE audit_events").await.unwrap();
    assert!(matches!(
        audit.record(call(2)).await,
        Err(AuditError::NotAccepted)
    ));
    assert_eq!(audit.refused.load(Ordering::Relaxed), 1);
}

/// An audit log whose required sinks are a FIFO that is full (its next write blocks until the
/// returned end is read, and fails once it is dropped) and the store; and how many bytes of
/// filler are in the pipe ahead of the events.
async fn stuck_fifo_and_store(dir: &tempfile::TempDir, s: &Store) -> (Audit, std::fs::File, usize) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fifo = dir.path().join("audit.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Held open for reading and writing, without blocking (O_NONBLOCK).
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(0o4000)
        .open(&fifo)
        .unwrap();
    let mut junk = 0usize;
    loop {
        match pipe.write(&[b'#'; 4096]) {
            Ok(n) => junk += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let audit = Audit::open(
        &settings(vec![(file(&fifo), true), (SinkKind::Store, true)]),
        s,
        "test",
        "sha256:t",
    )
    .await
    .unwrap();
    (audit, pipe, junk)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_required_sink_does_not_hold_up_calls_and_catches_up_in_order() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let (audit, mut pipe, junk) = stuck_fifo_and_store(&dir, &s).await;
    // The store answers every call while the file is stuck.
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        for n in 0..50 {
            audit.record(call(n)).await.unwrap();
        }
    })
    .await
    .expect("calls are not held up by the stalled sink");
    assert_eq!(
        s.audit_lines(0, None, None, 0, 1000).await.unwrap().len(),
        51
    );
    assert_eq!(audit.sinks[0].written.load(Ordering::Relaxed), 0);
    // Once the pipe is read, the file gets every event, in chain order, nothing skipped.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while seen.len() < junk || seen[junk..].iter().filter(|b| **b == b'\n').count() < 51 {
        assert!(
            std::time::Instant::now() < deadline,
            "the file sink caught up"
        );
        match pipe.read(&mut buf) {
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(seen[..junk].iter().all(|b| *b == b'#'));
    let text = String::from_utf8(seen[junk..].to_vec()).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    counted(&audit.sinks[0].written, 51).await;
    assert_eq!(audit.sinks[0].failed.load(Ordering::Relaxed), 0);
    // It caught up with one write and flush for everything that queued while it was stuck:
    // the stuck write (`audit.start`), then the 50 calls together.
    assert_eq!(audit.batches.load(Ordering::Relaxed), 51);
    counted(&audit.sinks[0].flushes, 2).await;
    counted(&audit.sinks[1].flushes, 51).await;
    assert_eq!(audit.sinks[0].flushes.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_fails_while_behind_fails_what_queued_and_the_other_sink_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let (audit, pipe, _) = stuck_fifo_and_store(&dir, &s).await;
    for n in 0..50 {
        audit.record(call(n)).await.unwrap();
    }
    // The pipe's only reader goes away: the stuck write fails, then everything queued behind it.
    drop(pipe);
    counted(&audit.sinks[0].failed, 51).await;
    assert_eq!(audit.sinks[0].written.load(Ordering::Relaxed), 0);
    assert_eq!(audit.sinks[0].flushes.load(Ordering::Relaxed), 0);
    // The store has every event, chained without a gap: nothing was taken back.
    let lines = s.audit_lines(0, None, None, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = lines
        .iter()
        .map(|(_, l)| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    // And calls go on.
    audit.record(call(50)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_best_effort_sink_does_not_stop_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path, audit) = file_and_store(&dir, false).await;
    // The best-effort store fails; the required file still takes the event.
    s.execute_for_test("DROP TABLE audit_events").await.unwrap();
    audit.record(call(1)).await.unwrap();
    counted(&audit.sinks[1].failed, 1).await;
    assert!(matches!(check(&path), Verdict::Intact { events: 2, .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_last_line_is_kept_apart_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let path = dir.path().join("a.jsonl");
    {
        let audit = Audit::open(&settings(vec![(file(&path), true)]), &s, "test", "sha256:t")
            .await
            .unwrap();
        audit.record(call(1)).await.unwrap();
    }
    // A crash mid-write leaves half a line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"kind\":\"tool.ca").unwrap();
    drop(f);
    let audit = Audit::open(&settings(vec![(file(&path), true)]), &s, "test", "sha256:t")
        .await
        .unwrap();
    audit.record(call(2)).await.unwrap();
    match check(&path) {
        Verdict::Broken { line, why, .. } => {
            assert_eq!(line, 3);
            assert!(why.contains("cut"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Everything after the torn line is whole JSON, on its own lines.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .count(),
        4
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Lines as the writer chains them, for events with arbitrary text in them.
    fn chained(texts: &[String]) -> Vec<String> {
        let mut w = Head::new("0123456789abcdef".into(), GENESIS.into());
        texts
            .iter()
            .map(|t| {
                let mut e = Event::new("tool.call");
                e.reason = Some(t.clone());
                e.outcome = Some("denied");
                w.link(&e).text
            })
            .collect()
    }

    fn check(lines: &[String]) -> Verdict {
        verify(lines.concat().as_bytes()).unwrap()
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        /// Replace one byte of one line.
        Byte { line: usize, at: usize, to: u8 },
        /// Remove a line that is not the last.
        Remove(usize),
        /// Swap two lines.
        Swap(usize, usize),
        /// Repeat a line right after itself.
        Repeat(usize),
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(line, at, to)| Tamper::Byte {
                line,
                at,
                to
            }),
            any::<usize>().prop_map(Tamper::Remove),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::Swap(a, b)),
            any::<usize>().prop_map(Tamper::Repeat),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A chain as written verifies; every edit of an event, removal of an event before the
        /// last, reordering or repetition is a broken link.
        #[test]
        fn any_tampering_but_cutting_the_tail_is_detected(
            texts in proptest::collection::vec("\\PC{0,40}", 2..12),
            t in tamper(),
        ) {
            let mut lines = chained(&texts);
            let intact = matches!(check(&lines), Verdict::Intact { .. });
            prop_assert!(intact);
            let n = lines.len();
            match t {
                Tamper::Byte { line, at, to } => {
                    let l = line % n;
                    let mut bytes = lines[l].clone().into_bytes();
                    // Keep the newline that separates events: an edit is inside an event.
                    let at = at % (bytes.len() - 1);
                    prop_assume!(bytes[at] != to && to != b'\n');
                    bytes[at] = to;
                    lines[l] = String::from_utf8_lossy(&bytes).into_owned();
                }
                Tamper::Remove(i) => {
                    lines.remove(i % (n - 1));
                }
                Tamper::Swap(a, b) => {
                    let (a, b) = (a % n, b % n);
                    prop_assume!(a != b);
                    lines.swap(a, b);
                }
                Tamper::Repeat(i) => {
                    let i = i % n;
                    let copy = lines[i].clone();
                    lines.insert(i + 1, copy);
                }
            }
            let broken = matches!(check(&lines), Verdict::Broken { .. });
            prop_assert!(broken, "undetected: {:?}", t);
        }
    }
}

mod batching;
mod inline;

#[tokio::test(flavor = "multi_thread")]
async fn a_store_export_past_retention_verifies_as_continued_with_every_chain_begun_earlier() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    // Two processes sharing the store: two chains, interleaved.
    let only_store = settings(vec![(SinkKind::Store, true)]);
    let a = Audit::open(&only_store, &s, "test", "sha256:t")
        .await
        .unwrap();
    let b = Audit::open(&only_store, &s, "test", "sha256:t")
        .await
        .unwrap();
    for n in 0..6 {
        a.record(call(n)).await.unwrap();
        b.record(call(100 + n)).await.unwrap();
    }
    let lines: Vec<String> = s
        .audit_lines(0, None, None, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert_eq!(lines.len(), 14);
    // The first six rows went (both chains' starts among them).
    let rest = lines[6..].concat();
    assert!(matches!(
        verify(rest.as_bytes()).unwrap(),
        Verdict::Broken { line: 1, .. }
    ));
    let mut v = crate::verify::Verifier::continuing();
    assert!(v.file(rest.as_bytes()).unwrap().is_none());
    assert!(matches!(
        v.finish(),
        Verdict::Intact {
            events: 8,
            chains: 2,
            anchor: Some(_),
            ..
        }
    ));
    // Inside what is left, a removed event is still a broken link.
    let gap = [&lines[6..9], &lines[10..]].concat().concat();
    let mut v = crate::verify::Verifier::continuing();
    assert!(v.file(gap.as_bytes()).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn continuing_still_names_an_event_moved_before_the_one_it_links_to() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path, a) = file_and_store(&dir, false).await;
    a.record(call(1)).await.unwrap();
    a.close().await.unwrap();
    drop(a);
    // A second run links its start to the first run's `audit.stop`.
    let b = Audit::open(&settings(vec![(file(&path), true)]), &s, "test", "sha256:t")
        .await
        .unwrap();
    b.record(call(2)).await.unwrap();
    b.close().await.unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let run = |input: String| {
        let mut v = crate::verify::Verifier::continuing();
        match v.file(input.as_bytes()).unwrap() {
            Some(broken) => broken,
            None => v.finish(),
        }
    };
    // The first run's start gone: what is left verifies, continued.
    assert!(matches!(
        run(lines[1..].concat()),
        Verdict::Intact { events: 5, .. }
    ));
    // The second run's start moved before the event it links to: named.
    let moved = [&lines[1..2], &lines[3..4], &lines[2..3], &lines[4..]]
        .concat()
        .concat();
    let Verdict::Broken { line, why, .. } = run(moved) else {
        panic!("a reordering verified");
    };
    assert_eq!(line, 3, "{why}");
    assert!(why.contains("reordered"), "{why}");
}
