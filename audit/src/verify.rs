//! `portcullis audit verify`: check an audit file's hash chains and name the first broken link.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use serde_json::Value;

use super::{GENESIS, event_hash};

/// What a check of a whole file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every event is intact and linked.
    Intact {
        events: u64,
        chains: usize,
        /// The newest event's hash: keep it to notice a later truncation.
        last: Option<String>,
        /// What the file's first event links to when that is not the genesis: the last hash of
        /// the file before it (after rotation) or of another sink.
        anchor: Option<String>,
        /// Chains without an `audit.stop`: still running, crashed, or cut at the tail.
        unclosed: Vec<String>,
    },
    /// The first problem, at a 1-based line.
    Broken {
        line: u64,
        id: Option<String>,
        why: String,
    },
}

/// Check every event read from `input`, in order. Blank lines are ignored.
pub fn verify(input: impl BufRead) -> std::io::Result<Verdict> {
    let mut chains: HashMap<String, (i64, String)> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut events = 0u64;
    let mut last = None;
    let mut anchor = None;
    let mut closed: HashSet<String> = HashSet::new();
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let at = n as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let broken = |id: Option<String>, why: String| Ok(Verdict::Broken { line: at, id, why });
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&line) else {
            return broken(None, "not a JSON object: the line was cut or edited".into());
        };
        let id = map.get("id").and_then(Value::as_str).map(str::to_string);
        let (Some(hash), Some(prev), Some(chain), Some(seq)) = (
            map.get("hash").and_then(Value::as_str),
            map.get("prev").and_then(Value::as_str),
            map.get("chain").and_then(Value::as_str),
            map.get("seq").and_then(Value::as_i64),
        ) else {
            return broken(id, "missing `hash`, `prev`, `chain` or `seq`".into());
        };
        if event_hash(&map) != hash {
            return broken(
                id,
                "the event's contents do not match its hash: it was edited".into(),
            );
        }
        match chains.get(chain) {
            Some((last_seq, last_hash)) => {
                if Some(seq) != last_seq.checked_add(1) {
                    return broken(
                        id,
                        format!(
                            "seq {seq} follows seq {last_seq} of chain {chain}: events were removed or reordered"
                        ),
                    );
                }
                if prev != last_hash {
                    return broken(
                        id,
                        format!("`prev` is not the hash of seq {last_seq} of chain {chain}"),
                    );
                }
            }
            None => {
                if seq != 1 {
                    return broken(
                        id,
                        format!(
                            "chain {chain} starts at seq {seq}: its earlier events are missing"
                        ),
                    );
                }
                if events == 0 && prev != GENESIS {
                    // A file that starts after rotation links to the previous file's end.
                    anchor = Some(prev.to_string());
                } else if events > 0 && prev == GENESIS {
                    return broken(
                        id,
                        format!(
                            "chain {chain} starts a new log in the middle of this one: events before it were replaced"
                        ),
                    );
                } else if prev != GENESIS && !seen.contains(prev) {
                    return broken(
                        id,
                        format!(
                            "chain {chain} links to an event that is not before it in this file: earlier events were removed"
                        ),
                    );
                }
            }
        }
        if map.get("kind").and_then(Value::as_str) == Some("audit.stop") {
            closed.insert(chain.to_string());
        }
        chains.insert(chain.to_string(), (seq, hash.to_string()));
        seen.insert(hash.to_string());
        last = Some(hash.to_string());
        events += 1;
    }
    let mut unclosed: Vec<String> = chains
        .keys()
        .filter(|c| !closed.contains(*c))
        .cloned()
        .collect();
    unclosed.sort();
    Ok(Verdict::Intact {
        events,
        chains: chains.len(),
        last,
        anchor,
        unclosed,
    })
}
