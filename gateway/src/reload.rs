//! Hot reload: the config file is the only source of servers, tools, pins, grants and limits.
//!
//! On SIGHUP, and when the file's bytes change (checked every [`WATCH_INTERVAL`]), the file is
//! read and validated in full, exactly as at start. A config that fails validation, changes a
//! setting only a restart can apply, or names a secret the gateway cannot read is refused and
//! the running config stays. An accepted one is recorded in the audit log (required) before it
//! takes effect: if no required sink accepts the record, it is refused too. SIGHUP also has the
//! audit file sinks reopen their paths (after an external rotator moved them). Every attempt,
//! applied or refused, is logged with the file's digest and the running one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::gateway::{Gateway, Live};
use audit::{Event, Who};

/// How often the config file is read to see whether it changed.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Signal,
    /// The file's bytes changed.
    FileChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::FileChange => "file_change",
        }
    }
}

/// What a reload attempt ended in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The file is the config already in force.
    Unchanged,
    /// The new config is in force.
    Applied,
    /// The running config stays; the reason is for the operator.
    Refused(String),
}

/// `sha256:<hex>` of a file's bytes, or why it cannot be read.
pub(crate) fn file_digest(path: &Path) -> Result<String, String> {
    std::fs::read(path)
        .map(|b| digest(&b))
        .map_err(|e| e.to_string())
}

/// Reloads one config file into one gateway, one attempt at a time.
pub(crate) struct Reloader {
    gw: Arc<Gateway>,
    path: PathBuf,
    /// Digest of the bytes last tried (or [`UNREADABLE`]), so a file is tried once per change.
    last: tokio::sync::Mutex<String>,
    /// Digest seen by the last poll: a change is tried only once two polls agree, so a file
    /// caught half-written (which may itself be valid, and looser) is not applied.
    pending: std::sync::Mutex<Option<String>>,
}

/// What [`Reloader::last`] holds when the file could not be read.
const UNREADABLE: &str = "unreadable";

/// `sha256:<hex>` of the file's bytes, as [`registry::Registry::digest`] is computed.
fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Reloader {
    pub(crate) fn new(gw: Arc<Gateway>, path: PathBuf) -> Reloader {
        let running = gw.registry().digest.clone();
        Reloader {
            gw,
            path,
            last: tokio::sync::Mutex::new(running),
            pending: std::sync::Mutex::new(None),
        }
    }

    /// Reload on SIGHUP (`hup`, set up before the gateway announced itself, so an early SIGHUP
    /// is not fatal) and on file change, until `stop`.
    pub(crate) async fn run(self: Arc<Self>, hup: Hangup, stop: CancellationToken) {
        #[cfg(unix)]
        let mut hup = hup;
        #[cfg(not(unix))]
        let _ = hup;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                Some(()) = hangup => {
                    // The usual meaning of SIGHUP to a daemon that writes files: a rotator moved
                    // them away; start new ones at the configured paths.
                    self.gw.audit.reopen_files();
                    self.reload(Trigger::Signal).await;
                }
                _ = tick.tick() => { self.poll().await; }
                () = stop.cancelled() => return,
            }
        }
    }

    /// Reload if the file's bytes (or its readability) changed, and two polls in a row agree.
    async fn poll(&self) {
        let now = match tokio::fs::read(&self.path).await {
            Ok(bytes) => digest(&bytes),
            Err(_) => UNREADABLE.to_owned(),
        };
        if *self.last.lock().await == now {
            return;
        }
        let settled = match self.pending.lock() {
            Ok(mut p) => {
                let same = p.as_deref() == Some(now.as_str());
                *p = Some(now);
                same
            }
            Err(_) => true,
        };
        if settled {
            self.reload(Trigger::FileChange).await;
        }
    }

    /// Read, validate and, if acceptable, apply the file. Logged and audited either way.
    pub(crate) async fn reload(&self, trigger: Trigger) -> Outcome {
        let mut last = self.last.lock().await;
        let running = self.gw.registry();
        let (seen, outcome) = match self.attempt(&running, trigger).await {
            Ok((seen, None)) => (seen, Outcome::Unchanged),
            Ok((seen, Some(()))) => (seen, Outcome::Applied),
            Err((seen, why)) => (seen, Outcome::Refused(why)),
        };
        last.clone_from(seen.as_ref().unwrap_or(&UNREADABLE.to_owned()));
        let shown = seen.as_deref().unwrap_or(UNREADABLE);
        self.gw.reloads.note(
            shown,
            match &outcome {
                Outcome::Unchanged => "unchanged".to_owned(),
                Outcome::Applied => "applied".to_owned(),
                Outcome::Refused(why) => format!("refused: {why}"),
            },
        );
        match &outcome {
            Outcome::Applied => {
                tracing::info!(trigger = trigger.as_str(), digest = %shown, previous = %running.digest, "config reloaded");
            }
            Outcome::Unchanged => {
                tracing::info!(trigger = trigger.as_str(), digest = %shown, "config reload: file unchanged");
                let mut e = event(trigger, "unchanged", shown, &running.digest);
                e.reason = Some("the file is the config in force".into());
                self.gw.audit.note(e);
            }
            Outcome::Refused(why) => {
                tracing::error!(trigger = trigger.as_str(), digest = %shown, running = %running.digest, reason = %why, "config reload refused; the running config stays");
                let mut e = event(trigger, "refused", shown, &running.digest);
                e.reason = Some(why.clone());
                self.gw.audit.note(e);
            }
        }
        outcome
    }

    /// The file's digest (when readable), and `Some(())` if the new config is now in force,
    /// `None` if it already was.
    async fn attempt(
        &self,
        running: &registry::Registry,
        trigger: Trigger,
    ) -> Result<(Option<String>, Option<()>), (Option<String>, String)> {
        let file = self.path.display().to_string();
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| (None, format!("cannot read config `{file}`: {e}")))?;
        let seen = digest(&bytes);
        let fail = |why: String| (Some(seen.clone()), why);
        if seen == running.digest {
            return Ok((Some(seen), None));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| fail(format!("config `{file}` is not UTF-8 text")))?;
        let next = registry::load_str(&file, &text).map_err(|e| fail(e.to_string()))?;
        let fixed = running.restart_only_changes(&next);
        if !fixed.is_empty() {
            return Err(fail(format!(
                "changes to {} take effect only at a restart; restart the gateway to apply this file",
                fixed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let live = self.gw.live();
        live.upstreams
            .secrets()
            .check_all(crate::secrets::references(&next))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut e = event(trigger, "applied", &seen, &running.digest);
        e.detail = Some(json!({
            "digest": seen,
            "previous": running.digest,
            "trigger": trigger.as_str(),
            "changes": changes(running, &next),
        }));
        // Recorded before it takes effect: a reload nobody can see does not happen.
        self.gw
            .audit
            .record(e)
            .await
            .map_err(|e| fail(format!("the reload could not be recorded: {e}")))?;
        let (set, done) = live.upstreams.reconcile(&next.servers);
        let set = Arc::new(set);
        let grants_changed = running.access.policy != next.access.policy;
        self.gw.replace(
            Live {
                registry: Arc::new(next),
                upstreams: set.clone(),
            },
            &done,
        );
        set.finish(&done);
        if grants_changed {
            // Lists are filtered per caller by the grants: every server's may look different.
            set.announce_all();
        }
        tracing::info!(
            added = ?done.added,
            removed = ?done.removed,
            reconnected = ?done.reconnected,
            updated = ?done.updated,
            "upstreams reconciled"
        );
        Ok((Some(seen), Some(())))
    }
}

/// A `config.reload` event.
fn event(trigger: Trigger, outcome: &'static str, digest: &str, running: &str) -> Event {
    let mut e = Event::new("config.reload");
    e.identity = Some(Who::named(format!("process:{}", std::process::id())));
    e.outcome = Some(outcome);
    e.detail = Some(json!({
        "digest": digest,
        "previous": running,
        "trigger": trigger.as_str(),
    }));
    e
}

/// Which servers a reload adds, removes or changes, and whether grants or approvals change.
fn changes(old: &registry::Registry, new: &registry::Registry) -> serde_json::Value {
    let names = |r: &registry::Registry| {
        r.servers
            .iter()
            .map(|s| s.name.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (before, after) = (names(old), names(new));
    let changed: Vec<&String> = new
        .servers
        .iter()
        .filter(|s| old.servers.iter().any(|o| o.name == s.name && o != *s))
        .map(|s| &s.name)
        .collect();
    json!({
        "servers_added": after.difference(&before).collect::<Vec<_>>(),
        "servers_removed": before.difference(&after).collect::<Vec<_>>(),
        "servers_changed": changed,
        "grants_changed": old.access.policy != new.access.policy,
        "approvals_changed": old.access.approvals != new.access.approvals,
    })
}

/// The SIGHUP stream, if the platform has one.
#[cfg(unix)]
pub(crate) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(crate) type Hangup = ();

/// Start reloading `path` into `gw`. SIGHUP is handled from this call on.
pub(crate) fn start(gw: Arc<Gateway>, path: &Path, stop: CancellationToken) {
    #[cfg(unix)]
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be handled; the config reloads on file change only");
            None
        }
    };
    #[cfg(not(unix))]
    let hup = ();
    gw.reloads.set_file(path);
    let reloader = Arc::new(Reloader::new(gw, path.to_path_buf()));
    tokio::spawn(reloader.run(hup, stop));
}
