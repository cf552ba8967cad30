//! Operator levers on the request path: the kill switch and the mode.
//!
//! The state lives in the store, shared by every process on it. Each process reads it every
//! `kill_switch.poll` into a snapshot that calls check without I/O. A snapshot is trusted for
//! `kill_switch.lease`: when no read has succeeded for that long (or none ever has), every call
//! is refused as if the global switch were engaged. An engaged switch also cancels the matching
//! calls in flight in this process.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use policy::{Binding, Identity, Level};
use registry::Mode;
use tokio_util::sync::CancellationToken;

use store::{ModeRow, Store, StoreError, SwitchRow};

/// What a kill switch covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KillScope {
    /// Every call.
    Global,
    /// Every tool of one server (target: the server name).
    Server,
    /// One tool (target: `server/tool`).
    Tool,
    /// One API key (target: its id).
    Key,
    /// A team.
    Team,
    /// An org.
    Org,
    /// An end user.
    User,
    /// An agent.
    Agent,
}

/// Every scope's spelling, for error messages.
pub(crate) const SCOPES: &str = "global, server, tool, key, team, org, user, agent";

impl KillScope {
    pub(crate) const ALL: [KillScope; 8] = [
        KillScope::Global,
        KillScope::Server,
        KillScope::Tool,
        KillScope::Key,
        KillScope::Team,
        KillScope::Org,
        KillScope::User,
        KillScope::Agent,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KillScope::Global => "global",
            KillScope::Server => "server",
            KillScope::Tool => "tool",
            KillScope::Key => "key",
            KillScope::Team => "team",
            KillScope::Org => "org",
            KillScope::User => "user",
            KillScope::Agent => "agent",
        }
    }

    fn level(self) -> Option<Level> {
        match self {
            KillScope::Key => Some(Level::Key),
            KillScope::Team => Some(Level::Team),
            KillScope::Org => Some(Level::Org),
            KillScope::User => Some(Level::User),
            KillScope::Agent => Some(Level::Agent),
            KillScope::Global | KillScope::Server | KillScope::Tool => None,
        }
    }
}

impl FromStr for KillScope {
    type Err = ();
    fn from_str(s: &str) -> Result<KillScope, ()> {
        KillScope::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for KillScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engaged switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Switch {
    pub(crate) scope: KillScope,
    /// Empty for `global`.
    pub(crate) target: String,
    pub(crate) reason: String,
}

impl Switch {
    /// True when a call by `identity` to `server`/`tool` is in this switch's scope.
    pub(crate) fn covers(&self, identity: &Identity, server: &str, tool: &str) -> bool {
        match self.scope {
            KillScope::Global => true,
            KillScope::Server => self.target == server,
            KillScope::Tool => self
                .target
                .split_once('/')
                .is_some_and(|(s, t)| s == server && t == tool),
            // A switch on a key covers the keys it minted, and theirs.
            KillScope::Key if identity.key_lineage().contains(&self.target) => true,
            scope => scope.level().is_some_and(|level| {
                matches!(identity.binding(level), Binding::Resolved(names) if names.contains(&self.target))
            }),
        }
    }

    /// The same test over stored principals (`level:name`), for approval requests.
    pub(crate) fn covers_principals(
        &self,
        principals: &[String],
        server: &str,
        tool: &str,
    ) -> bool {
        match self.scope.level() {
            None => self.covers(&Identity::new(), server, tool),
            Some(level) => {
                let want = format!("{level}:{}", self.target);
                principals.contains(&want)
            }
        }
    }
}

/// Why the levers refuse a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Killed {
    /// A switch covers it.
    Engaged(Switch),
    /// The state could not be read within the lease.
    StateUnknown,
}

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Killed::Engaged(s) if s.scope == KillScope::Global => {
                write!(f, "the gateway's kill switch is engaged: {}", s.reason)
            }
            Killed::Engaged(s) => write!(
                f,
                "the kill switch for {} `{}` is engaged: {}",
                s.scope, s.target, s.reason
            ),
            Killed::StateUnknown => f.write_str(
                "the kill-switch state could not be read within its lease, so every call is refused",
            ),
        }
    }
}

/// The last state read from the store.
#[derive(Debug)]
struct Snapshot {
    switches: Vec<Switch>,
    /// The operator's runtime mode, if any.
    mode: Option<ModeRow>,
    /// The mode in force, worked out once per read rather than per call.
    in_force: Mode,
    /// When the read that produced this snapshot began.
    read_at: Option<Instant>,
}

/// A tool call in flight, so a kill switch can cancel it.
struct Running {
    identity: Arc<Identity>,
    server: String,
    tool: String,
    cancel: CancellationToken,
}

/// The levers as this process sees them.
pub(crate) struct Levers {
    store: Store,
    lease: Duration,
    config_mode: Mode,
    snapshot: RwLock<Arc<Snapshot>>,
    running: Mutex<HashMap<u64, Running>>,
    next: AtomicU64,
}

/// Removes a running call from the registry when the call ends.
pub(crate) struct RunningGuard<'a> {
    levers: &'a Levers,
    id: u64,
    /// Cancelled when a kill switch covering the call is engaged.
    pub(crate) cancel: CancellationToken,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.levers.running.lock() {
            map.remove(&self.id);
        }
    }
}

// === impl Levers ===

impl Levers {
    pub(crate) fn new(store: Store, settings: &registry::Settings) -> Levers {
        Levers {
            store,
            lease: settings.kill_switch.lease,
            config_mode: settings.mode,
            snapshot: RwLock::new(Arc::new(Snapshot {
                switches: Vec::new(),
                mode: None,
                in_force: settings.mode,
                read_at: None,
            })),
            running: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().ok().map(|s| Arc::clone(&s))
    }

    /// The snapshot if it was read within the lease; otherwise the state is unknown.
    fn fresh(&self) -> Result<Arc<Snapshot>, Killed> {
        let snap = self.snapshot().ok_or(Killed::StateUnknown)?;
        match snap.read_at {
            Some(at) if at.elapsed() <= self.lease => Ok(snap),
            _ => Err(Killed::StateUnknown),
        }
    }

    /// Whether a call is refused by a switch, or because the state is not known.
    pub(crate) fn killed(&self, identity: &Identity, server: &str, tool: &str) -> Option<Killed> {
        let snap = match self.fresh() {
            Ok(s) => s,
            Err(k) => return Some(k),
        };
        snap.switches
            .iter()
            .find(|s| s.covers(identity, server, tool))
            .map(|s| Killed::Engaged(s.clone()))
    }

    /// The mode in force, and who set it (`None`: the config's). A stored mode this build does
    /// not know counts as `read_only`: an operator's restriction is never ignored.
    pub(crate) fn mode(&self) -> (Mode, Option<ModeRow>) {
        match self.snapshot() {
            Some(snap) => (snap.in_force, snap.mode.clone()),
            // A poisoned snapshot lock: the most restrictive mode that still answers reads.
            None => (Mode::ReadOnly, None),
        }
    }

    /// For `/metrics`: whether the state is within its lease, the scopes of engaged switches,
    /// and the mode in force.
    pub(crate) fn state(&self) -> (bool, Vec<KillScope>, Mode) {
        match self.fresh() {
            Ok(s) => (
                true,
                s.switches.iter().map(|w| w.scope).collect(),
                s.in_force,
            ),
            Err(_) => (false, Vec::new(), self.mode_now()),
        }
    }

    /// The mode in force, for the request path (no copying).
    pub(crate) fn mode_now(&self) -> Mode {
        self.snapshot().map_or(Mode::ReadOnly, |snap| snap.in_force)
    }

    /// The switch covering an approval request (by its stored principals), if any; an unknown
    /// state counts as covering.
    pub(crate) fn covering(
        &self,
        principals: &[String],
        server: &str,
        tool: &str,
    ) -> Option<Killed> {
        let snap = match self.fresh() {
            Ok(s) => s,
            Err(k) => return Some(k),
        };
        snap.switches
            .iter()
            .find(|s| s.covers_principals(principals, server, tool))
            .map(|s| Killed::Engaged(s.clone()))
    }

    /// The config's mode.
    pub(crate) fn config_mode(&self) -> Mode {
        self.config_mode
    }

    /// How long ago the state was last read, if ever.
    pub(crate) fn state_age(&self) -> Option<Duration> {
        self.snapshot()?.read_at.map(|at| at.elapsed())
    }

    /// The lease.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// Read the state from the store; on success, replace the snapshot and cancel calls in
    /// flight that a switch now covers.
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let rows = self.store.switches().await?;
        let mode = self.store.mode().await?;
        let in_force = match &mode {
            Some(r) => r.mode.parse::<Mode>().unwrap_or(Mode::ReadOnly),
            None => self.config_mode,
        };
        let switches: Vec<Switch> = rows.iter().filter_map(engaged).collect();
        self.cancel_covered(&switches);
        self.install(Snapshot {
            switches,
            mode,
            in_force,
            read_at: Some(started),
        });
        Ok(())
    }

    /// Put `next` in force unless the snapshot in force comes from a read that began later. Two
    /// reads can overlap (the poller's, and the one an operator's change makes before it
    /// answers); the older, finishing last, must not bring back the state before the change (a
    /// switch just engaged, lifted again until the next poll).
    fn install(&self, next: Snapshot) {
        if let Ok(mut slot) = self.snapshot.write()
            && slot
                .read_at
                .is_none_or(|now| next.read_at.is_some_and(|at| at >= now))
        {
            *slot = Arc::new(next);
        }
    }

    /// Register a call in flight; `None` when the registry is unusable (the call must not run,
    /// since no switch could cancel it).
    pub(crate) fn start(
        &self,
        identity: Arc<Identity>,
        server: &str,
        tool: &str,
    ) -> Option<RunningGuard<'_>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let mut map = self.running.lock().ok()?;
        map.insert(
            id,
            Running {
                identity,
                server: server.to_owned(),
                tool: tool.to_owned(),
                cancel: cancel.clone(),
            },
        );
        Some(RunningGuard {
            levers: self,
            id,
            cancel,
        })
    }

    fn cancel_covered(&self, switches: &[Switch]) {
        if switches.is_empty() {
            return;
        }
        if let Ok(map) = self.running.lock() {
            for r in map.values() {
                if switches
                    .iter()
                    .any(|s| s.covers(&r.identity, &r.server, &r.tool))
                {
                    r.cancel.cancel();
                }
            }
        }
    }

    /// Keep the snapshot current until `stop`: read every `poll`, and at once when another
    /// process announces a change (PostgreSQL's `NOTIFY`).
    pub(crate) async fn run(self: Arc<Levers>, poll: Duration, stop: CancellationToken) {
        let changed = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(watch(self.store.clone(), changed.clone(), stop.clone()));
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = changed.notified() => {}
                () = stop.cancelled() => return,
            }
            match self.refresh().await {
                Ok(()) if failing => {
                    tracing::warn!("kill-switch state readable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::error!(error = %e, lease_ms = self.lease.as_millis() as u64, "cannot read the kill-switch state; calls are refused once the lease runs out");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// Wake the reader whenever any process announces a lever change, until `stop`. Polling goes
/// on beside it, so a lost connection only delays a change to the next poll.
async fn watch(store: Store, changed: Arc<tokio::sync::Notify>, stop: CancellationToken) {
    loop {
        let watching = tokio::select! {
            w = store.watch_levers() => w,
            () = stop.cancelled() => return,
        };
        match watching {
            Ok(None) => return,
            Ok(Some(mut w)) => loop {
                tokio::select! {
                    r = w.changed() => match r {
                        Ok(()) => changed.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the kill-switch announcements; polling");
                            break;
                        }
                    },
                    () = stop.cancelled() => return,
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for kill-switch announcements; polling")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn engaged(row: &SwitchRow) -> Option<Switch> {
    if !row.engaged {
        return None;
    }
    // A scope this build does not know (a newer process wrote it) is treated as global: an
    // engaged switch is never ignored.
    let scope = row.scope.parse().unwrap_or(KillScope::Global);
    Some(Switch {
        scope,
        target: row.target.clone(),
        reason: row.reason.clone(),
    })
}

#[cfg(test)]
mod tests;
