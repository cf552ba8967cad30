//! Stateful MCP sessions (revisions 2025-03-26 … 2025-11-25).
//!
//! A session is bound to the caller (subject) that created it and to the endpoint it was created on. A
//! session id presented by another identity or on another endpoint is unknown (404): ids are
//! never authentication. Idle sessions are reaped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use serde_json::Value;

use crate::auth::Caller;
use crate::upstream::ClientSide;

/// Which catalogue an endpoint serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// `/mcp`: every server, names prefixed `<server>__`.
    Federated,
    /// `/mcp/<server>`: one server under its own names.
    Server(String),
}

/// One client session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    /// The caller's subject (never a secret); another subject cannot use this session.
    pub(crate) subject: String,
    pub(crate) scope: Scope,
    pub(crate) protocol_version: String,
    /// Resource URIs (as the client names them) the client subscribed to.
    pub(crate) subscriptions: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Its client side: the GET stream's messages, the declared capabilities, its own
    /// upstream connections and the requests waiting for the client.
    pub(crate) client: Arc<ClientSide>,
    last_seen_ms: AtomicU64,
}

impl Session {
    fn touch(&self, epoch: Instant) {
        let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }
}

/// All live sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    epoch: Instant,
    idle: Duration,
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Sessions {
        Sessions {
            map: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
            idle,
        }
    }

    /// Create a session; the id is 32 random bytes, hex (visible ASCII).
    pub(crate) fn create(
        &self,
        caller: &Caller,
        scope: Scope,
        protocol_version: String,
        client_capabilities: Value,
    ) -> Arc<Session> {
        let id = hex::encode(rand::rng().random::<[u8; 32]>());
        let s = Arc::new(Session {
            client: Arc::new(ClientSide::new(&id, client_capabilities)),
            id: id.clone(),
            subject: caller.subject.clone(),
            scope,
            protocol_version,
            subscriptions: std::sync::Mutex::new(std::collections::HashSet::new()),
            last_seen_ms: AtomicU64::new(0),
        });
        s.touch(self.epoch);
        if let Ok(mut map) = self.map.write() {
            map.insert(id, s.clone());
        }
        s
    }

    /// The session `id`, if it exists and belongs to `caller` on `scope`.
    pub(crate) fn get(&self, id: &str, caller: &Caller, scope: &Scope) -> Option<Arc<Session>> {
        let map = self.map.read().ok()?;
        let s = map.get(id)?;
        if s.subject != caller.subject || &s.scope != scope {
            return None;
        }
        s.touch(self.epoch);
        Some(s.clone())
    }

    /// End a session; true if it existed for this caller and scope.
    pub(crate) fn remove(&self, id: &str, caller: &Caller, scope: &Scope) -> bool {
        let Ok(mut map) = self.map.write() else {
            return false;
        };
        match map.get(id) {
            Some(s) if s.subject == caller.subject && &s.scope == scope => {
                // Its upstream connections close with it, not when the last request lets go.
                map.remove(id).inspect(|s| s.client.links.close()).is_some()
            }
            _ => false,
        }
    }

    /// True when a live session other than `except` is subscribed to `uri` of `server` (the
    /// upstream's own URI), whichever endpoint it named it on.
    pub(crate) fn subscribed_elsewhere(&self, server: &str, uri: &str, except: &str) -> bool {
        let federated = format!("{server}+{uri}");
        let Ok(map) = self.map.read() else {
            // Unknown: keep the upstream subscription rather than end another's.
            return true;
        };
        map.values().filter(|s| s.id != except).any(|s| {
            let named = match &s.scope {
                Scope::Federated => federated.as_str(),
                Scope::Server(own) if own == server => uri,
                Scope::Server(_) => return false,
            };
            s.subscriptions
                .lock()
                .map_or(true, |subs| subs.contains(named))
        })
    }

    /// How many sessions are open.
    pub(crate) fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    /// Drop sessions idle for longer than the configured idle time.
    /// Returns the sessions removed.
    pub(crate) fn reap(&self) -> Vec<Arc<Session>> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let Ok(mut map) = self.map.write() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        map.retain(|_, s| {
            let keep = now.saturating_sub(s.last_seen_ms.load(Ordering::Relaxed)) < idle;
            if !keep {
                s.client.links.close();
                gone.push(s.clone());
            }
            keep
        });
        gone
    }
}
