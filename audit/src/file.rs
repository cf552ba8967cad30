//! The file sink: append-only JSON lines, one `write` and one `fsync` per batch, rotated by size
//! or age (`audit.sinks[N].rotate`) and reopened on request (SIGHUP, for an external rotator).
//!
//! Rotation happens between batches: the current file is renamed to `<path>.<UTC time>` (e.g.
//! `audit.jsonl.20261206T023000.123Z`, so names sort by age) and a new file is opened at `<path>`.
//! The hash chain goes on across files: the new file's first event links to the last one of the
//! file before it, and `portcullis audit verify <path>` follows every rotated file in order.
//! A rotation that cannot be done never loses an event: the sink keeps writing where it was and
//! tries again a minute later.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use registry::Rotation;

/// Writes between two readings of the file's size (see [`FileSink::size`]).
const SIZE_EVERY: u32 = 256;

/// Write all of `bytes`, adding to `reached` what reached the file, also when a later part fails.
fn write_counted(out: &mut impl Write, bytes: &[u8], reached: &mut u64) -> std::io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match out.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *reached += n as u64;
                rest = rest.get(n..).unwrap_or_default();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How long after a failed rotation the sink tries again.
const RETRY: Duration = match cfg!(test) {
    true => Duration::from_millis(100),
    false => Duration::from_secs(60),
};

pub(crate) struct FileSink {
    pub(crate) path: String,
    file: File,
    fsync: bool,
    /// A regular file (not a pipe or a device).
    regular: bool,
    /// The last write may have stopped mid-line: start the next one on a new line.
    torn: bool,
    rotate: Rotation,
    /// Bytes in the current file: counted as this sink writes, and read from the file every
    /// [`SIZE_EVERY`] writes (another process may append to it too).
    size: u64,
    /// Writes since `size` was read from the file.
    unsized_writes: u32,
    /// When the current file was started.
    born: SystemTime,
    /// The reopen generation this sink has acted on; [`Reopen`] holds the one asked for.
    seen: u64,
    reopen: Reopen,
    /// The handle is on a file already renamed away, and `path` still has to be opened.
    detached: bool,
    /// No rotation is tried before this (one failed).
    not_before: Option<Instant>,
    /// What each flush returns instead of syncing, for tests (see [`super::flush_faults`]).
    #[cfg(test)]
    pub(crate) script: Option<std::sync::mpsc::Receiver<Result<(), String>>>,
    /// Every write fails while set, for tests (see [`super::write_faults`]).
    #[cfg(test)]
    failing: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Asks every file sink to reopen its path before its next write (after an external rotator
/// moved the file away). Shared by the [`super::Audit`] handle and its file sinks.
#[derive(Clone, Default)]
pub(crate) struct Reopen(Arc<AtomicU64>);

impl Reopen {
    pub(crate) fn ask(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn asked(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Open `path` for appending, created `0600`.
fn open_append(path: &str) -> std::io::Result<File> {
    // Append only: opened for reading too, a FIFO would count this process as its reader.
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

impl FileSink {
    /// Open for appending and find the last event's hash: in the file, or, when it has none
    /// yet, in the newest rotated file before it.
    pub(crate) fn open(
        path: &str,
        fsync: bool,
        rotate: Rotation,
        reopen: Reopen,
    ) -> Result<(FileSink, Option<String>), String> {
        let file =
            open_append(path).map_err(|e| format!("cannot open audit file `{path}`: {e}"))?;
        let (mut last, torn) = match File::open(path) {
            Ok(mut f) => last_line(&mut f).unwrap_or((None, false)),
            Err(_) => (None, false),
        };
        if last.is_none()
            && let Some(newest) = rotated_files(Path::new(path)).pop()
        {
            last = File::open(&newest)
                .and_then(|mut f| last_line(&mut f))
                .ok()
                .and_then(|(l, _)| l);
        }
        // Pipes and devices cannot be synced (EINVAL); only a regular file has a disk to reach.
        let meta = file.metadata().ok();
        let regular = meta.as_ref().is_some_and(std::fs::Metadata::is_file);
        let seen = reopen.asked();
        Ok((
            FileSink {
                path: path.to_string(),
                file,
                fsync: fsync && regular,
                regular,
                torn,
                // Only a regular file can be renamed away and started again.
                rotate: if regular { rotate } else { Rotation::OFF },
                size: meta.as_ref().map_or(0, std::fs::Metadata::len),
                unsized_writes: 0,
                born: meta
                    .and_then(|m| m.created().ok())
                    .unwrap_or_else(SystemTime::now),
                seen,
                reopen,
                detached: false,
                not_before: None,
                #[cfg(test)]
                script: super::flush_faults::take(path),
                #[cfg(test)]
                failing: super::write_faults::take(path),
            },
            last,
        ))
    }

    /// Before a batch: reopen the path if asked to, or start a new file if the current one is
    /// due. Never fails: what cannot be done now is logged and tried again later.
    pub(crate) fn turn(&mut self) {
        let asked = self.reopen.asked();
        if asked != self.seen {
            self.seen = asked;
            // Until it succeeds, the path is tried again like one rotated away.
            self.detached = true;
            self.reopen_path("reopened on request");
            return;
        }
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if self.detached {
            self.reopen_path("opened after rotation");
            if !self.detached {
                self.prune();
            }
            return;
        }
        if self.rotation_due() {
            self.rotate_now();
        }
    }

    fn rotate_now(&mut self) {
        let to = rotated_name(
            Path::new(&self.path),
            rotation_time(Path::new(&self.path), super::now_ms()),
        );
        match std::fs::rename(&self.path, &to) {
            Ok(()) => {
                tracing::info!(file = %self.path, rotated = %to.display(), "audit file rotated");
            }
            // Moved or removed by someone else: what is open is no longer at the path.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %self.path, "audit file gone from its path before rotation; starting a new one");
            }
            Err(e) => {
                self.not_before = Some(Instant::now() + RETRY);
                tracing::error!(file = %self.path, error = %e, "audit file not rotated: it stays in use; retrying in a minute");
                return;
            }
        }
        self.detached = true;
        self.reopen_path("opened after rotation");
        if !self.detached {
            self.prune();
        }
    }

    /// Sync the directory, so the rename and the new file reach the disk before events that
    /// are acknowledged in it (a synced sink only).
    fn sync_dir(&self) {
        if !self.fsync {
            return;
        }
        let dir = match Path::new(&self.path).parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(file = %self.path, error = %e, "directory not synced after rotation");
        }
    }

    /// Switch to a fresh handle on `path`; keep the current one if it cannot be opened.
    fn reopen_path(&mut self, what: &str) {
        match open_append(&self.path) {
            Ok(file) => {
                let meta = file.metadata().ok();
                let (_, torn) = File::open(&self.path)
                    .and_then(|mut f| last_line(&mut f))
                    .unwrap_or((None, false));
                let same = same_file(self.file.metadata().ok().as_ref(), meta.as_ref());
                self.size = meta.as_ref().map_or(0, std::fs::Metadata::len);
                self.unsized_writes = 0;
                // The same file reopened keeps its age (where the filesystem keeps no birth
                // time, a reload would otherwise start the clock again).
                if !same {
                    self.born = meta
                        .and_then(|m| m.created().ok())
                        .unwrap_or_else(SystemTime::now);
                }
                self.file = file;
                self.sync_dir();
                self.torn = torn;
                self.detached = false;
                self.not_before = None;
                tracing::info!(file = %self.path, "audit file {what}");
            }
            Err(e) => {
                self.not_before = Some(Instant::now() + RETRY);
                tracing::error!(file = %self.path, error = %e, "audit file could not be {what}: events go on to the file open before; retrying in a minute");
            }
        }
    }

    /// Delete the oldest rotated files beyond `keep`.
    fn prune(&self) {
        let Some(keep) = self.rotate.keep else {
            return;
        };
        let files = rotated_files(Path::new(&self.path));
        let excess = files.len().saturating_sub(keep as usize);
        for old in files.iter().take(excess) {
            match std::fs::remove_file(old) {
                Ok(()) => {
                    tracing::info!(file = %old.display(), keep, "old audit file deleted");
                }
                Err(e) => {
                    tracing::warn!(file = %old.display(), error = %e, "old audit file not deleted");
                }
            }
        }
    }

    /// Append `text` whole. A regular file that takes only part of it is cut back to where it
    /// was, so a batch the writer takes back leaves no lines behind whose `seq` it will reuse.
    pub(crate) fn write(&mut self, text: &[u8]) -> Result<(), String> {
        let was_torn = self.torn;
        // Bytes of this write that reached the file: what a failed write cuts back. Counted
        // rather than read from the file before each write (a system call per event).
        let mut reached = 0u64;
        let mut attempt = || -> std::io::Result<()> {
            #[cfg(test)]
            if self
                .failing
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                return Err(std::io::Error::other("injected: the disk is gone"));
            }
            if self.torn {
                write_counted(&mut self.file, b"\n", &mut reached)?;
                self.torn = false;
            }
            write_counted(&mut self.file, text, &mut reached)
        };
        match attempt() {
            Ok(()) => {
                if self.regular {
                    self.size += reached;
                    self.unsized_writes += 1;
                    if self.unsized_writes >= SIZE_EVERY {
                        self.unsized_writes = 0;
                        if let Ok(m) = self.file.metadata() {
                            self.size = m.len();
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                let cut = self.regular && self.cut_back(reached);
                // Cut back: as it was. Not cut back: the next write starts on a new line.
                self.torn = !cut || was_torn;
                Err(format!("audit file `{}`: {e}", self.path))
            }
        }
    }

    /// After a failed write: cut the file back by the `reached` bytes of it that reached the
    /// file, as it was before; whether it was. The size is read from the file either way.
    fn cut_back(&mut self, reached: u64) -> bool {
        let Ok(end) = self.file.metadata().map(|m| m.len()) else {
            return false;
        };
        let before = end.checked_sub(reached);
        let cut = before.is_some_and(|len| self.file.set_len(len).is_ok());
        self.size = if cut { before.unwrap_or(end) } else { end };
        self.unsized_writes = 0;
        cut
    }

    /// A handle to `fsync` what was written through, when configured to, and the path for
    /// messages. A duplicate: the flush runs without holding up the sink's writers.
    pub(crate) fn flush_handle(&self) -> Result<Option<(File, String)>, String> {
        if !self.fsync {
            return Ok(None);
        }
        self.file
            .try_clone()
            .map(|h| Some((h, self.path.clone())))
            .map_err(|e| format!("audit file `{}`: fsync: {e}", self.path))
    }

    /// Whether the sink is a regular file: only then does a caller write to it itself (a pipe
    /// or a device may block, or take part of a line).
    pub(crate) fn regular(&self) -> bool {
        self.regular
    }

    /// Whether [`FileSink::turn`] would act before the next write (a reopen asked for, a file
    /// to open again, a rotation due): such a write is left to the sink's thread.
    pub(crate) fn due(&self) -> bool {
        if self.reopen.asked() != self.seen {
            return true;
        }
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.detached || self.rotation_due()
    }

    /// Bytes the current file takes before its size bound rotates it (none without one).
    pub(crate) fn room(&self) -> Option<u64> {
        self.rotate.size.map(|s| s.saturating_sub(self.size))
    }

    fn rotation_due(&self) -> bool {
        let by_size = self.rotate.size.is_some_and(|s| self.size >= s);
        let by_age = self
            .rotate
            .every
            .is_some_and(|e| self.born.elapsed().is_ok_and(|age| age >= e));
        self.size > 0 && (by_size || by_age)
    }
}

/// Whether two handles' metadata are of one file (same device and inode).
fn same_file(a: Option<&std::fs::Metadata>, b: Option<&std::fs::Metadata>) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        matches!((a, b), (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// The time a rotation at `now` is named for: never before the newest rotated file's, so a
/// clock stepped back cannot name a newer file older (names are the files' order).
fn rotation_time(path: &Path, now: i64) -> i64 {
    let newest = rotated_files(path).last().and_then(|f| stamp_ms(f));
    newest.map_or(now, |n| now.max(n.saturating_add(1)))
}

/// The time in a rotated file's name (`…YYYYMMDDTHHMMSS.mmmZ[-N]`), in unix milliseconds.
fn stamp_ms(file: &Path) -> Option<i64> {
    let name = file.file_name()?.to_str()?;
    let mut parts = name.rsplitn(3, '.');
    let (millis, seconds) = (parts.next()?, parts.next()?);
    let millis = millis.split('-').next()?;
    let (date, time) = seconds.split_once('T')?;
    let text = format!(
        "{}-{}-{}T{}:{}:{}.{millis}",
        date.get(..4)?,
        date.get(4..6)?,
        date.get(6..8)?,
        time.get(..2)?,
        time.get(2..4)?,
        time.get(4..6)?,
    );
    super::clock::parse_time(&text)
}

/// `<path>.<YYYYMMDDTHHMMSS.mmmZ>` for a file rotated at `ms`, with `-N` added if taken.
fn rotated_name(path: &Path, ms: i64) -> PathBuf {
    let stamp: String = super::clock::rfc3339_ms(ms)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let base = format!("{}.{stamp}", path.display());
    let mut name = PathBuf::from(&base);
    let mut n = 1;
    while name.exists() {
        name = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    name
}

/// Whether `suffix` (what follows `<file name>.`) is a rotation stamp.
fn is_stamp(suffix: &str) -> bool {
    let (stamp, extra) = match suffix.split_once('-') {
        Some((stamp, n)) => (stamp, Some(n)),
        None => (suffix, None),
    };
    let b = stamp.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b'T',
            15 => *c == b'.',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && extra.is_none_or(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// The files rotated away from `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{name}.");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let suffix = n.strip_prefix(&prefix)?;
            is_stamp(suffix).then(|| (suffix.to_string(), path.with_file_name(&n)))
        })
        .collect();
    // Stamps sort by time; `-N` (a second file in the same millisecond) by N.
    found.sort_by(|(a, _), (b, _)| {
        let key = |s: &str| {
            let (stamp, n) = s.split_once('-').unwrap_or((s, "0"));
            (stamp.to_string(), n.parse::<u64>().unwrap_or(0))
        };
        key(a).cmp(&key(b))
    });
    found.into_iter().map(|(_, p)| p).collect()
}

/// Whether `path` names a file rotated away (its name ends in a rotation stamp).
pub fn is_rotated(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // `<name>.<YYYYMMDDTHHMMSS>.<mmmZ[-N]>`: the stamp holds the last two dots.
    let mut parts = name.rsplitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(millis), Some(seconds), Some(_)) => is_stamp(&format!("{seconds}.{millis}")),
        _ => false,
    }
}

/// The last complete line of `file` (within its final 1 MiB), and whether it ends mid-line.
/// Only regular files are read back (a device such as `/dev/full` has no end).
pub(crate) fn last_line(file: &mut File) -> std::io::Result<(Option<String>, bool)> {
    if !file.metadata()?.is_file() {
        return Ok((None, false));
    }
    let len = file.seek(SeekFrom::End(0))?;
    let from = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.take(1 << 20).read_to_end(&mut tail)?;
    let torn = !tail.is_empty() && !tail.ends_with(b"\n");
    let text = String::from_utf8_lossy(&tail);
    let complete = if torn {
        text.rsplit_once('\n').map_or("", |(head, _)| head)
    } else {
        &text
    };
    let last = complete
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string);
    Ok((last, torn))
}

#[cfg(test)]
mod tests;
