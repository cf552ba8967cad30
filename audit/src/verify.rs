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
    let mut v = Verifier::default();
    Ok(match v.file(input)? {
        Some(broken) => broken,
        None => v.finish(),
    })
}

/// A check that goes on across files: the files a sink rotated away, oldest first, then its
/// current one. Each file's lines are numbered from 1.
#[derive(Default)]
pub struct Verifier {
    chains: HashMap<String, (i64, String)>,
    /// Every event's hash so far, as 32 bytes (a long archive is held in a third of the memory
    /// its hex would take).
    seen: HashSet<[u8; 32]>,
    events: u64,
    last: Option<String>,
    anchor: Option<String>,
    closed: HashSet<String>,
    continued: bool,
    /// In continuing mode, the hashes chains were accepted as linking to though not seen: one
    /// that turns up later was linked to before it was written (a reordering).
    assumed: HashSet<[u8; 32]>,
}

impl Verifier {
    /// A check whose chains may begin before the input: the oldest rotated file left after
    /// older ones were deleted (`keep`) or archived, or a store export after the retention
    /// period removed older events (one chain per process that wrote to the store). Each chain's
    /// first event here may continue it, or link to an event no longer in the input; the first
    /// such link is reported as the anchor. Inside the input, every link is checked as strictly.
    pub fn continuing() -> Verifier {
        Verifier {
            continued: true,
            ..Verifier::default()
        }
    }

    /// Check the next file's events; the first problem, if any.
    pub fn file(&mut self, input: impl BufRead) -> std::io::Result<Option<Verdict>> {
        for (n, line) in input.split(b'\n').enumerate() {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err((id, why)) = self.event(&line) {
                return Ok(Some(Verdict::Broken {
                    line: n as u64 + 1,
                    id,
                    why,
                }));
            }
        }
        Ok(None)
    }

    /// What the whole input was, once every file passed.
    pub fn finish(self) -> Verdict {
        let mut unclosed: Vec<String> = self
            .chains
            .keys()
            .filter(|c| !self.closed.contains(*c))
            .cloned()
            .collect();
        unclosed.sort();
        Verdict::Intact {
            events: self.events,
            chains: self.chains.len(),
            last: self.last,
            anchor: self.anchor,
            unclosed,
        }
    }

    fn event(&mut self, line: &[u8]) -> Result<(), (Option<String>, String)> {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) else {
            return Err((None, "not a JSON object: the line was cut or edited".into()));
        };
        let id = map.get("id").and_then(Value::as_str).map(str::to_string);
        let (Some(hash), Some(prev), Some(chain), Some(seq)) = (
            map.get("hash").and_then(Value::as_str),
            map.get("prev").and_then(Value::as_str),
            map.get("chain").and_then(Value::as_str),
            map.get("seq").and_then(Value::as_i64),
        ) else {
            return Err((id, "missing `hash`, `prev`, `chain` or `seq`".into()));
        };
        if event_hash(&map) != hash {
            return Err((
                id,
                "the event's contents do not match its hash: it was edited".into(),
            ));
        }
        let first = self.events == 0;
        match self.chains.get(chain) {
            Some((last_seq, last_hash)) => {
                if Some(seq) != last_seq.checked_add(1) {
                    return Err((
                        id,
                        format!(
                            "seq {seq} follows seq {last_seq} of chain {chain}: events were removed or reordered"
                        ),
                    ));
                }
                if prev != last_hash {
                    return Err((
                        id,
                        format!("`prev` is not the hash of seq {last_seq} of chain {chain}"),
                    ));
                }
            }
            None if self.continued
                && seq >= 1
                && (seq > 1 || (prev != GENESIS && !self.saw(prev))) =>
            {
                // A chain whose start (or the event it linked to) is no longer in the input.
                if self.anchor.is_none() {
                    self.anchor = Some(prev.to_string());
                }
                if let Some(h) = raw(prev) {
                    self.assumed.insert(h);
                }
            }
            None => {
                if seq != 1 {
                    return Err((
                        id,
                        format!(
                            "chain {chain} starts at seq {seq}: its earlier events are missing"
                        ),
                    ));
                }
                if first && prev != GENESIS {
                    // A file that starts after rotation links to the previous file's end.
                    self.anchor = Some(prev.to_string());
                } else if !first && prev == GENESIS {
                    return Err((
                        id,
                        format!(
                            "chain {chain} starts a new log in the middle of this one: events before it were replaced"
                        ),
                    ));
                } else if prev != GENESIS && !self.saw(prev) {
                    return Err((
                        id,
                        format!(
                            "chain {chain} links to an event that is not before it in this file: earlier events were removed"
                        ),
                    ));
                }
            }
        }
        if map.get("kind").and_then(Value::as_str) == Some("audit.stop") {
            self.closed.insert(chain.to_string());
        }
        self.chains
            .insert(chain.to_string(), (seq, hash.to_string()));
        if let Some(h) = raw(hash) {
            if self.assumed.contains(&h) {
                return Err((
                    id,
                    "an event earlier in this log links to this one, written after it: events were reordered".into(),
                ));
            }
            self.seen.insert(h);
        }
        self.last = Some(hash.to_string());
        self.events += 1;
        Ok(())
    }
}

impl Verifier {
    fn saw(&self, hash: &str) -> bool {
        raw(hash).is_some_and(|h| self.seen.contains(&h))
    }
}

/// A hex SHA-256 as its 32 bytes; `None` for anything else (never a hash this check has seen).
fn raw(hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash, &mut out).ok()?;
    Some(out)
}
