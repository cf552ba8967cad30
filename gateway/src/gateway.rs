//! The gateway's shared state: config, credentials, sessions, upstreams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use http::HeaderValue;
use registry::Registry;
use tokio_util::sync::CancellationToken;

use audit::Audit;
use store::Store;

use crate::auth::{Authenticator, Issuers};
use crate::levers::Levers;
use crate::session::Sessions;
use crate::upstream::Upstreams;

/// The config in force and the upstreams it names, replaced together by a reload.
pub(crate) struct Live {
    pub(crate) registry: Arc<Registry>,
    pub(crate) upstreams: Arc<Upstreams>,
}

/// Everything a request handler needs.
pub(crate) struct Gateway {
    /// Read through [`Gateway::live`]; written only by a reload.
    live: RwLock<Arc<Live>>,
    pub(crate) auth: Authenticator,
    pub(crate) sessions: Sessions,
    /// Runtime state: keys, switches, approvals, the operator record.
    pub(crate) store: Store,
    /// The audit log: every decision, written before the action.
    pub(crate) audit: Arc<Audit>,
    /// The kill switch and mode as this process last read them.
    pub(crate) levers: Arc<Levers>,
    /// Woken when an approval is decided or voided here, so held calls look at once.
    pub(crate) approval_decided: tokio::sync::Notify,
    /// In-flight cancellable requests, by (session id, JSON request id).
    pub(crate) inflight: Mutex<HashMap<(String, String), CancellationToken>>,
    /// Requests running on in tasks of their own (streaming, or their client went away): the
    /// process waits for them before it closes the audit log.
    pub(crate) detached: tokio_util::task::TaskTracker,
    /// Per-tool rate limits counted here.
    pub(crate) limits: crate::limits::Limits,
    /// The canonical URL: configured, or derived from the bound address.
    pub(crate) public_url: String,
    /// The config file reloads read, and what the last reload attempt ended in.
    pub(crate) reloads: ReloadStatus,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
}

impl Gateway {
    /// Assemble the gateway for a listener bound at `bound`.
    pub(crate) fn new(
        registry: Arc<Registry>,
        store: Store,
        audit: Arc<Audit>,
        upstreams: Arc<Upstreams>,
        bound: SocketAddr,
        sealer: crate::session::seal::Sealer,
    ) -> Gateway {
        let s = &registry.settings;
        let mut hosts = vec![bound.to_string()];
        let port = bound.port();
        if bound.ip().is_loopback() {
            hosts.extend([
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]);
        }
        let public_url = s
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        if let Some(authority) = public_url.split("://").nth(1) {
            let authority = authority.split('/').next().unwrap_or_default();
            hosts.push(authority.to_string());
            // A default port may be left out of the Host header.
            let default = if public_url.starts_with("https://") {
                ":443"
            } else {
                ":80"
            };
            if let Some(bare) = authority.strip_suffix(default) {
                hosts.push(bare.to_string());
            }
        }
        let hosts: Vec<String> = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        let mut origins: Vec<String> = Vec::new();
        for h in &hosts {
            origins.push(format!("http://{h}"));
            origins.push(format!("https://{h}"));
        }
        origins.extend(
            s.allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase()),
        );
        let servers = registry.servers.iter().map(|s| s.name.as_str());
        let issuers = Issuers::new(&registry.access.oidc, &public_url, servers);
        Gateway {
            sessions: Sessions::new(s.session_idle, s.session_lifetime, sealer),
            levers: Arc::new(Levers::new(store.clone(), s)),
            approval_decided: tokio::sync::Notify::new(),
            auth: Authenticator::new(store.clone(), issuers),
            store,
            audit,
            inflight: Mutex::new(HashMap::new()),
            detached: tokio_util::task::TaskTracker::new(),
            limits: crate::limits::Limits::default(),
            reloads: ReloadStatus::default(),
            public_url,
            allowed_hosts: hosts,
            allowed_origins: origins,
            live: RwLock::new(Arc::new(Live {
                registry,
                upstreams,
            })),
        }
    }

    /// The config in force and its upstreams, as one snapshot: a request that reads both
    /// sees one generation even if a reload lands meanwhile.
    pub(crate) fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The config in force.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.live().registry.clone()
    }

    /// The upstreams the config in force names.
    pub(crate) fn upstreams(&self) -> Arc<Upstreams> {
        self.live().upstreams.clone()
    }

    /// Put a reloaded config and its upstreams in force. Only the reload path calls this,
    /// after the new config has been validated and its reload recorded. Kept upstreams take
    /// their new entries under the same lock, so a request that reads the config before and
    /// after sees that it changed ([`Gateway::live`] is a new `Arc`).
    pub(crate) fn replace(&self, next: Live, done: &crate::upstream::Reconciled) {
        let servers = next.registry.servers.iter().map(|s| s.name.as_str());
        self.auth.set_servers(&self.public_url, servers);
        let mut live = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        done.apply_updates();
        *live = Arc::new(next);
    }

    /// DNS-rebinding guard: the Host header must name this gateway.
    pub(crate) fn host_allowed(&self, host: Option<&HeaderValue>) -> bool {
        let Some(h) = host.and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let h = h.to_ascii_lowercase();
        self.allowed_hosts.contains(&h)
    }

    /// A browser `Origin` must be this gateway's own, or one the operator listed.
    pub(crate) fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(o) = origin.to_str() else { return false };
        let o = o.trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins.contains(&o)
    }
}

/// The config file a gateway reloads, and its last reload attempt (for the self-audit).
#[derive(Default)]
pub(crate) struct ReloadStatus {
    file: std::sync::OnceLock<PathBuf>,
    last: std::sync::Mutex<Option<Attempt>>,
}

/// One reload attempt, as the self-audit shows it.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub(crate) at_ms: i64,
    pub(crate) digest: String,
    pub(crate) outcome: String,
}

impl ReloadStatus {
    /// The file reloads read, if this gateway reloads one.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.get().map(PathBuf::as_path)
    }

    /// The last reload attempt, if any.
    pub(crate) fn last(&self) -> Option<Attempt> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Set once, by the reloader.
    pub(crate) fn set_file(&self, path: &Path) {
        let _ = self.file.set(path.to_path_buf());
    }

    pub(crate) fn note(&self, digest: &str, outcome: String) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Attempt {
                at_ms: store::now_ms(),
                digest: digest.to_owned(),
                outcome,
            });
        }
    }
}
