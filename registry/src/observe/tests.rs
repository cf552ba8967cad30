use std::time::Duration;

use crate::testing::problems;
use crate::{DEFAULT_AUDIT_RETENTION, DEFAULT_ROTATION, Rotation, SinkKind, load_str};

const SERVERS: &str = "servers: {}\n";

fn file_rotation(yaml: &str) -> Rotation {
    let r = load_str("t.yaml", &format!("{yaml}{SERVERS}")).unwrap();
    match &r.settings.audit.sinks[0].kind {
        SinkKind::File { rotate, .. } => *rotate,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_sink_rotates_at_100_mib_by_default_and_the_store_keeps_90_days() {
    let r = load_str("t.yaml", SERVERS).unwrap();
    assert_eq!(r.settings.audit.retention, Some(DEFAULT_AUDIT_RETENTION));
    assert_eq!(file_rotation(""), DEFAULT_ROTATION);
    assert_eq!(DEFAULT_ROTATION.size, Some(100 * 1024 * 1024));
    assert_eq!(DEFAULT_ROTATION.keep, None);
    // Written without `rotate`, a sink gets the default too.
    assert_eq!(
        file_rotation("audit: { sinks: [{ type: file, path: a.jsonl }] }\n"),
        DEFAULT_ROTATION
    );
}

#[test]
fn rotation_and_retention_are_read_as_written() {
    let yaml = "audit:\n  retention: 7d\n  sinks:\n    - { type: file, path: a.jsonl, rotate: { size: 1GiB, every: 1d, keep: 30 } }\n    - { type: store }\n";
    assert_eq!(
        file_rotation(yaml),
        Rotation {
            size: Some(1024 * 1024 * 1024),
            every: Some(Duration::from_secs(86_400)),
            keep: Some(30),
        }
    );
    let r = load_str("t.yaml", &format!("{yaml}{SERVERS}")).unwrap();
    assert_eq!(
        r.settings.audit.retention,
        Some(Duration::from_secs(7 * 86_400))
    );
    let off = "audit:\n  retention: off\n  sinks: [{ type: file, path: a.jsonl, rotate: off }, { type: store }]\n";
    assert_eq!(file_rotation(off), Rotation::OFF);
    assert!(!Rotation::OFF.is_on());
    let r = load_str("t.yaml", &format!("{off}{SERVERS}")).unwrap();
    assert_eq!(r.settings.audit.retention, None);
}

#[test]
fn a_bad_rotation_or_retention_is_named_where_it_is_written() {
    let p = problems(
        "audit:\n  retention: forever\n  sinks:\n    - { type: file, path: a.jsonl, rotate: { size: lots, every: 1x, keep: 0, when: full } }\n    - { type: store, rotate: off }\nservers: {}\n",
    );
    let want = [
        "t.yaml:2:14: `audit.retention`: `forever` is not a duration",
        "`audit.sinks[0].rotate.size`: `\"lots\"` is not a size",
        "`audit.sinks[0].rotate.every`: `1x` is not a duration",
        "`audit.sinks[0].rotate.keep`: `0` is not a number of files",
        "`audit.sinks[0].rotate.when`: unknown rotation setting `when`",
        "`audit.sinks[1].rotate`: only a file sink rotates",
    ];
    for w in want {
        assert!(p.iter().any(|l| l.contains(w)), "missing {w}: {p:#?}");
    }
    let p = problems(
        "audit:\n  sinks: [{ type: file, path: a.jsonl, rotate: { keep: 3 } }]\nservers: {}\n",
    );
    assert!(
        p.iter()
            .any(|l| l.contains("`keep` without `size` or `every`: the sink would never rotate")),
        "{p:#?}"
    );
    let p = problems("audit:\n  sinks: [{ type: file, path: a.jsonl, rotate: {} }]\nservers: {}\n");
    assert!(p.iter().any(|l| l.contains("an empty `rotate`")), "{p:#?}");
    let p = problems("audit:\n  sinks: [{ type: file, path: a.jsonl, rotate: 5 }]\nservers: {}\n");
    assert!(
        p.iter().any(|l| l.contains("`5` is not a rotation")),
        "{p:#?}"
    );
}
