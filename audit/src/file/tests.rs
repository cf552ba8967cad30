use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use registry::{AuditSettings, AuditSink, Rotation, SinkKind};

use super::{
    is_rotated, is_stamp, rotated_files, rotated_name, rotation_time, stamp_ms, write_counted,
};
use crate::verify::{Verdict, Verifier};
use crate::{Audit, Event};

fn call(n: u64) -> Event {
    let mut e = Event::new("tool.call");
    e.request_id = Some(format!("r{n}"));
    e.tool = Some("search_notes".into());
    e.outcome = Some("allowed");
    e
}

async fn open(dir: &tempfile::TempDir, path: &Path, rotate: Rotation) -> Audit {
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = store::Store::open(&url).await.unwrap();
    let settings = AuditSettings {
        sinks: vec![AuditSink {
            kind: SinkKind::File {
                path: path.display().to_string(),
                fsync: true,
                rotate,
            },
            required: true,
        }],
        redact: Vec::new(),
        redact_key: None,
        retention: None,
    };
    Audit::open(&settings, &store, "test", "sha256:t")
        .await
        .unwrap()
}

/// Check `files` as one log, in order.
fn check(files: &[PathBuf], continuing: bool) -> Verdict {
    let mut v = match continuing {
        true => Verifier::continuing(),
        false => Verifier::default(),
    };
    for f in files {
        let input = BufReader::new(std::fs::File::open(f).unwrap());
        if let Some(broken) = v.file(input).unwrap() {
            return broken;
        }
    }
    v.finish()
}

fn all(path: &Path) -> Vec<PathBuf> {
    let mut files = rotated_files(path);
    files.push(path.to_path_buf());
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_log_is_one_chain_across_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotate = Rotation {
        size: Some(2048),
        ..Rotation::OFF
    };
    let audit = open(&dir, &path, rotate).await;
    for n in 0..60 {
        audit.record(call(n)).await.unwrap();
    }
    audit.close().await.unwrap();
    let rotated = rotated_files(&path);
    assert!(rotated.len() >= 3, "{rotated:?}");
    // Every rotated file stopped at the first batch past the size.
    for f in &rotated {
        assert!(is_rotated(f), "{f:?}");
        let len = std::fs::metadata(f).unwrap().len();
        assert!((2048..2048 + 2048).contains(&len), "{f:?}: {len} bytes");
    }
    // start + 60 calls + stop, in order across the files, from the genesis.
    let Verdict::Intact {
        events,
        chains,
        anchor,
        unclosed,
        ..
    } = check(&all(&path), false)
    else {
        panic!("{:?}", check(&all(&path), false));
    };
    assert_eq!((events, chains, anchor), (62, 1, None));
    assert!(unclosed.is_empty());
    // A file in the middle removed: the link from the next one is missing.
    let mut gap = all(&path);
    gap.remove(1);
    assert!(matches!(check(&gap, true), Verdict::Broken { .. }));
    // Alone, a later file continues a chain: strict, refused; continuing, its anchor is named.
    let last = vec![path.clone()];
    assert!(matches!(
        check(&last, false),
        Verdict::Broken { line: 1, .. }
    ));
    assert!(matches!(
        check(&last, true),
        Verdict::Intact {
            anchor: Some(_),
            ..
        }
    ));

    // A new process after rotation links its start to the end of the log, even when the
    // current file is gone (deleted, or rotated without a write after).
    std::fs::rename(
        &path,
        rotated_name(&path, rotation_time(&path, store::now_ms())),
    )
    .unwrap();
    let audit = open(&dir, &path, rotate).await;
    audit.record(call(100)).await.unwrap();
    audit.close().await.unwrap();
    assert!(matches!(
        check(&all(&path), false),
        Verdict::Intact {
            events: 65,
            chains: 2,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_deletes_the_oldest_files_and_what_is_left_verifies_as_continued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotate = Rotation {
        size: Some(1024),
        every: None,
        keep: Some(2),
    };
    let audit = open(&dir, &path, rotate).await;
    for n in 0..80 {
        audit.record(call(n)).await.unwrap();
    }
    audit.close().await.unwrap();
    assert_eq!(rotated_files(&path).len(), 2);
    let Verdict::Intact {
        events,
        anchor,
        unclosed,
        ..
    } = check(&all(&path), true)
    else {
        panic!("{:?}", check(&all(&path), true));
    };
    assert!(events < 82, "{events}");
    assert!(anchor.is_some());
    assert!(unclosed.is_empty());
    // Strict (the whole history asked for), the missing start is named.
    assert!(matches!(
        check(&all(&path), false),
        Verdict::Broken { line: 1, .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_age_bound_rotates_a_file_that_is_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotate = Rotation {
        every: Some(Duration::from_millis(300)),
        ..Rotation::OFF
    };
    let audit = open(&dir, &path, rotate).await;
    audit.record(call(1)).await.unwrap();
    assert!(rotated_files(&path).is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    audit.record(call(2)).await.unwrap();
    assert_eq!(rotated_files(&path).len(), 1);
    audit.close().await.unwrap();
    assert!(matches!(
        check(&all(&path), false),
        Verdict::Intact { events: 4, .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_starts_a_new_file_after_an_outside_rotator_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = open(&dir, &path, Rotation::OFF).await;
    audit.record(call(1)).await.unwrap();
    // logrotate's way: move the file, then ask for a reopen (SIGHUP).
    let moved = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &moved).unwrap();
    audit.record(call(2)).await.unwrap();
    assert!(!path.exists(), "written on the old handle until asked");
    audit.reopen_files();
    audit.record(call(3)).await.unwrap();
    audit.close().await.unwrap();
    assert!(path.exists());
    assert_eq!(rotated_files(&path), Vec::<PathBuf>::new());
    // The two files, in order, are one intact chain: start, 1, 2 | 3, stop.
    assert!(matches!(
        check(&[moved.clone(), path.clone()], false),
        Verdict::Intact { events: 5, .. }
    ));
    let new = std::fs::read_to_string(&path).unwrap();
    assert_eq!(new.lines().count(), 2);
    assert!(new.contains("\"r3\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reopen_that_fails_keeps_every_event_and_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = open(&dir, &path, Rotation::OFF).await;
    audit.record(call(1)).await.unwrap();
    // Moved away, and nothing can be opened at the path (a directory stands there).
    let moved = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &moved).unwrap();
    std::fs::create_dir(&path).unwrap();
    audit.reopen_files();
    audit.record(call(2)).await.unwrap();
    // The path can be opened again: the next event after the retry delay starts a new file.
    std::fs::remove_dir(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    audit.record(call(3)).await.unwrap();
    audit.close().await.unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(new.contains("\"r3\""), "{new}");
    assert!(std::fs::read_to_string(&moved).unwrap().contains("\"r2\""));
    assert!(matches!(
        check(&[moved, path], false),
        Verdict::Intact { events: 5, .. }
    ));
}

#[test]
fn rotated_names_sort_by_time_and_nothing_else_is_taken_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let first = rotated_name(&path, 1_764_988_200_123);
    assert_eq!(
        first.file_name().unwrap().to_str().unwrap(),
        "audit.jsonl.20251206T023000.123Z"
    );
    std::fs::write(&first, "").unwrap();
    // The same millisecond again: a numbered name after it.
    let second = rotated_name(&path, 1_764_988_200_123);
    assert_eq!(
        second.file_name().unwrap().to_str().unwrap(),
        "audit.jsonl.20251206T023000.123Z-1"
    );
    std::fs::write(&second, "").unwrap();
    let earlier = rotated_name(&path, 1_700_000_000_000);
    std::fs::write(&earlier, "").unwrap();
    for other in [
        "audit.jsonl.1",
        "audit.jsonl.gz",
        "other.jsonl.20251206T023000.123Z",
        "audit.jsonl.20251206T0230001123Z",
    ] {
        std::fs::write(dir.path().join(other), "").unwrap();
    }
    assert_eq!(
        rotated_files(&path),
        vec![earlier, first.clone(), second.clone()]
    );
    assert!(is_rotated(&first));
    assert!(!is_rotated(&path));
    assert!(!is_rotated(&dir.path().join("audit.jsonl.1")));
    assert_eq!(stamp_ms(&first), Some(1_764_988_200_123));
    assert_eq!(stamp_ms(&second), Some(1_764_988_200_123));
    // A clock stepped back names the next file after the newest, never before it.
    assert_eq!(rotation_time(&path, 1_600_000_000_000), 1_764_988_200_124);
    assert_eq!(rotation_time(&path, 1_800_000_000_000), 1_800_000_000_000);
    assert!(is_stamp("20251206T023000.123Z-12"));
    assert!(!is_stamp("20251206T023000.123Z-"));
    assert!(!is_stamp("20251206T023000.123"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_from_a_file_sink_reads_its_rotated_files_first_and_pages_across_them() {
    use crate::export::{Filter, Source, read};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotate = Rotation {
        size: Some(1024),
        ..Rotation::OFF
    };
    let audit = open(&dir, &path, rotate).await;
    for n in 0..20 {
        audit.record(call(n)).await.unwrap();
    }
    audit.close().await.unwrap();
    assert!(rotated_files(&path).len() >= 3);
    let shown = path.display().to_string();
    let source = Source::File(&shown);
    let seqs = |lines: &[String]| -> Vec<i64> {
        lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    let all = read(&source, &Filter::default(), 0, 1000).await.unwrap();
    assert_eq!(seqs(&all.lines), (1..=22).collect::<Vec<_>>());
    assert_eq!(all.next, None);
    let first = read(&source, &Filter::default(), 0, 5).await.unwrap();
    assert_eq!(first.next, Some(5));
    let rest = read(&source, &Filter::default(), 5, 1000).await.unwrap();
    assert_eq!(seqs(&rest.lines), (6..=22).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_is_written_across_files_each_rotated_at_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // The file's thread waits in its first flush while the store, required too, answers the
    // calls: once a rotation is due, their events queue for the file.
    let flush = crate::flush_faults::script(&path.display().to_string());
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = store::Store::open(&url).await.unwrap();
    let file = AuditSink {
        kind: SinkKind::File {
            path: path.display().to_string(),
            fsync: true,
            rotate: Rotation {
                size: Some(2048),
                ..Rotation::OFF
            },
        },
        required: true,
    };
    let settings = AuditSettings {
        sinks: vec![
            file,
            AuditSink {
                kind: SinkKind::Store,
                required: true,
            },
        ],
        redact: Vec::new(),
        redact_key: None,
        retention: None,
    };
    let audit = Audit::open(&settings, &store, "test", "sha256:t")
        .await
        .unwrap();
    for n in 0..60 {
        tokio::time::timeout(Duration::from_secs(5), audit.record(call(n)))
            .await
            .expect("answered by the store while the file waits")
            .unwrap();
    }
    // The file's thread goes on with everything queued at once.
    for _ in 0..10_000 {
        let _ = flush.send(Ok(()));
    }
    audit.close().await.unwrap();
    let rotated = rotated_files(&path);
    assert!(rotated.len() >= 6, "{rotated:?}");
    // Each file stopped at the first batch past the size, backlog or not.
    for f in &rotated {
        let len = std::fs::metadata(f).unwrap().len();
        assert!((2048..2048 + 2048).contains(&len), "{f:?}: {len} bytes");
    }
    let Verdict::Intact { events, chains, .. } = check(&all(&path), false) else {
        panic!("{:?}", check(&all(&path), false));
    };
    assert_eq!((events, chains), (62, 1));
}

/// A write that stops part way counts what reached the file (what a failed write cuts back),
/// across short writes and interruptions.
#[test]
fn a_write_counts_what_reached_the_file() {
    /// Takes at most 3 bytes a call, is interrupted once, and fails after `room` bytes.
    struct Short {
        room: usize,
        taken: Vec<u8>,
        interrupted: bool,
    }
    impl std::io::Write for Short {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3).min(self.room - self.taken.len());
            if n == 0 {
                return Err(std::io::Error::other("no space left"));
            }
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut whole = Short {
        room: 100,
        taken: Vec::new(),
        interrupted: false,
    };
    let mut reached = 0;
    write_counted(&mut whole, b"0123456789", &mut reached).unwrap();
    assert_eq!((reached, whole.taken.as_slice()), (10, &b"0123456789"[..]));
    let mut part = Short {
        room: 7,
        taken: Vec::new(),
        interrupted: false,
    };
    let mut reached = 2;
    assert!(write_counted(&mut part, b"0123456789", &mut reached).is_err());
    assert_eq!((reached, part.taken.len()), (9, 7));
}

/// A failed write is cut back by what reached the file of it, and the size is read again.
#[test]
fn a_failed_write_is_cut_back_by_what_reached_the_file() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let text = path.to_str().unwrap();
    let (mut sink, _) =
        super::FileSink::open(text, false, Rotation::OFF, super::Reopen::default()).unwrap();
    sink.write(b"{\"seq\":1}\n").unwrap();
    assert_eq!(sink.size, 10);
    // Another process appends a whole line; then part of this sink's next line reaches the
    // file before the write fails.
    let mut other = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    other.write_all(b"{\"seq\":9}\n{\"se").unwrap();
    assert!(sink.cut_back(4));
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"seq\":1}\n{\"seq\":9}\n");
    assert_eq!(sink.size, 20);
    // More said to have reached it than the file holds: nothing is cut, the size is the file's.
    assert!(!sink.cut_back(1000));
    assert_eq!(sink.size, 20);
}
