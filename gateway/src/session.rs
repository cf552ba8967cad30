//! Stateful MCP sessions (revisions 2025-03-26 … 2025-11-25).
//!
//! A session is bound to the caller (subject) that created it and to the endpoint it was created on. A
//! session id presented by another identity or on another endpoint is unknown (404): ids are
//! never authentication. Idle sessions are reaped.
//!
//! Ids are sealed ([`seal`]): a replica that does not hold a session opens its id, checks the
//! subject, endpoint and expiry it carries and that no client ended it (the store), and takes
//! the session up with the revision and capabilities it carries. What lives only in one process
//! (resource subscriptions, per-session upstream connections, requests waiting for the client)
//! starts afresh on the replica that takes a session up.

pub(crate) mod replay;
pub(crate) mod seal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::Caller;
use crate::upstream::ClientSide;
use seal::{Claims, Sealer};

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
    /// Unix milliseconds after which the id is refused everywhere.
    pub(crate) expires_ms: i64,
    /// Its requests' streamed answers, kept for a client that resumes one (`Last-Event-ID`).
    pub(crate) replay: Arc<replay::Replay>,
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
    lifetime: Duration,
    sealer: Sealer,
}

/// A session id's name in the store (its SHA-256): ended ids are kept short and never whole.
pub(crate) fn stored_name(id: &str) -> String {
    use sha2::Digest as _;
    registry::hex_lower(&sha2::Sha256::digest(id.as_bytes()))
}

impl Sessions {
    pub(crate) fn new(idle: Duration, lifetime: Duration, sealer: Sealer) -> Sessions {
        Sessions {
            map: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
            idle,
            lifetime,
            sealer,
        }
    }

    /// The key ring session ids are sealed with; other state a client carries for the gateway
    /// (a multi-round request's `requestState`) is sealed with it under its own prefix.
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Create a session whose sealed id carries what another replica needs to continue it;
    /// `None` when the id cannot be sealed.
    pub(crate) fn create(
        &self,
        caller: &Caller,
        scope: Scope,
        protocol_version: String,
        client_capabilities: Value,
    ) -> Option<Arc<Session>> {
        let lifetime = i64::try_from(self.lifetime.as_millis()).unwrap_or(i64::MAX);
        let claims = Claims {
            subject: caller.subject.clone(),
            server: match &scope {
                Scope::Federated => None,
                Scope::Server(s) => Some(s.clone()),
            },
            protocol_version,
            capabilities: seal::capabilities_for_id(&client_capabilities),
            expires_ms: store::now_ms().saturating_add(lifetime),
        };
        // Declared capabilities too many to carry even by name ride as none: another replica
        // then treats the client as declaring nothing, which only narrows what it is asked.
        let id = match self.sealer.seal(&claims) {
            Some(id) => id,
            None => {
                let bare = Claims {
                    capabilities: Value::Object(serde_json::Map::new()),
                    ..claims.clone()
                };
                self.sealer.seal(&bare)?
            }
        };
        Some(self.insert(id, claims, client_capabilities))
    }

    fn insert(&self, id: String, claims: Claims, capabilities: Value) -> Arc<Session> {
        let s = Arc::new(Session {
            client: Arc::new(ClientSide::new(&id, capabilities)),
            id: id.clone(),
            scope: claims.scope(),
            subject: claims.subject,
            protocol_version: claims.protocol_version,
            subscriptions: std::sync::Mutex::new(std::collections::HashSet::new()),
            expires_ms: claims.expires_ms,
            replay: Arc::default(),
            last_seen_ms: AtomicU64::new(0),
        });
        s.touch(self.epoch);
        if let Ok(mut map) = self.map.write() {
            // Two requests taking the same session up at once keep the first.
            return map.entry(id).or_insert(s).clone();
        }
        s
    }

    /// The session `id`, if this process holds it and it belongs to `caller` on `scope`.
    pub(crate) fn get(&self, id: &str, caller: &Caller, scope: &Scope) -> Option<Arc<Session>> {
        let map = self.map.read().ok()?;
        let s = map.get(id)?;
        if s.subject != caller.subject || &s.scope != scope || s.expires_ms <= store::now_ms() {
            return None;
        }
        s.touch(self.epoch);
        Some(s.clone())
    }

    /// The session `id` for `caller` on `scope`: held here, or taken up from its sealed id
    /// when it is this caller's, on this endpoint, unexpired, and no client ended it. Any
    /// doubt (an id that does not open, a store that cannot say) is no session.
    pub(crate) async fn find(
        &self,
        store: &store::Store,
        id: &str,
        caller: &Caller,
        scope: &Scope,
    ) -> Option<Arc<Session>> {
        if let Some(s) = self.get(id, caller, scope) {
            return Some(s);
        }
        let claims = self.sealer.open(id, store::now_ms())?;
        if claims.subject != caller.subject || &claims.scope() != scope {
            return None;
        }
        if !matches!(store.session_ended(&stored_name(id)).await, Ok(false)) {
            return None;
        }
        tracing::info!(session = %audit::session_ref(id), subject = %claims.subject, "session taken up from its id");
        let capabilities = claims.capabilities.clone();
        Some(self.insert(id.to_owned(), claims, capabilities))
    }

    /// Let go of sessions ended elsewhere (by their stored names), without recording an end.
    pub(crate) fn forget_ended(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            map.retain(|id, s| {
                let keep = !names.contains(&stored_name(id));
                if !keep {
                    s.client.links.close();
                }
                keep
            });
        }
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

    /// Let every session's resumable answers go that are past their time.
    pub(crate) fn tidy_replays(&self) {
        if let Ok(map) = self.map.read() {
            map.values().for_each(|s| s.replay.tidy());
        }
    }

    /// Drop sessions idle for longer than the configured idle time.
    /// Returns the sessions removed.
    pub(crate) fn reap(&self) -> Vec<Arc<Session>> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let wall = store::now_ms();
        let Ok(mut map) = self.map.write() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        map.retain(|_, s| {
            let keep = now.saturating_sub(s.last_seen_ms.load(Ordering::Relaxed)) < idle
                && s.expires_ms > wall;
            if !keep {
                s.client.links.close();
                gone.push(s.clone());
            }
            keep
        });
        gone
    }
}

#[cfg(test)]
mod tests;
