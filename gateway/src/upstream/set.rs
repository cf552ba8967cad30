//! Every upstream of the config in force, in config order, and how a reload changes the set.

use super::*;

/// All upstreams, in config order.
pub(crate) struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>>,
    order: Vec<Arc<Upstream>>,
    /// List changes, for sessions to relay (shared by every generation of the set).
    pub(crate) events: broadcast::Sender<UpstreamEvent>,
    setup: UpstreamSetup,
    shutdown: CancellationToken,
}

/// What a reload did to the upstream set, by server name.
#[derive(Default)]
pub(crate) struct Reconciled {
    /// New servers, connecting now.
    pub(crate) added: Vec<String>,
    /// Servers gone from the config: disconnected, their tools gone.
    pub(crate) removed: Vec<String>,
    /// Servers whose source, credentials or address rule changed: reconnecting.
    pub(crate) reconnected: Vec<String>,
    /// Servers whose allowlist, classes, pins, limits, resources, prompts or timeout changed:
    /// the connection is kept and the new entry applies when the new set is put in force.
    pub(crate) updated: Vec<String>,
    /// The updated servers whose lists changed (tools, resources, prompts or pins): announced
    /// to sessions. A weight or timeout is not a change they need to hear of.
    pub(crate) relisted: Vec<String>,
    /// The new entries of the updated servers, applied by [`Reconciled::apply_updates`].
    staged: Vec<(Arc<Upstream>, registry::Server)>,
    /// Upstreams the new set does not carry: stopped by [`Upstreams::finish`].
    retired: Vec<Arc<Upstream>>,
}

impl Reconciled {
    /// Give each kept upstream its new entry (allowlist and pins re-applied to its last
    /// listing). Called while the new config is put in force, under the same lock.
    pub(crate) fn apply_updates(&self) {
        for (up, server) in &self.staged {
            up.reconfigure(server.clone());
        }
    }
}

impl Upstreams {
    /// Build the set and start connecting every upstream in the background.
    pub(crate) fn start(
        servers: &[registry::Server],
        setup: UpstreamSetup,
        shutdown: CancellationToken,
    ) -> Arc<Upstreams> {
        let (events, _) = broadcast::channel(256);
        let set = Upstreams {
            by_name: HashMap::new(),
            order: Vec::new(),
            events,
            setup,
            shutdown,
        };
        let order: Vec<Arc<Upstream>> = servers.iter().map(|s| set.launch(s, None)).collect();
        Arc::new(set.with(order))
    }

    /// A new upstream for `server`, its supervisor started. A replacement keeps what its
    /// predecessor saw first, so reconnecting does not reset trust-on-first-use.
    fn launch(&self, server: &registry::Server, replaces: Option<&Upstream>) -> Arc<Upstream> {
        let up = Upstream::new(
            server,
            &self.setup,
            self.events.clone(),
            self.shutdown.child_token(),
        );
        if let Some(old) = replaces {
            let seen = match old.first_seen.lock() {
                Ok(m) => m.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            if let Ok(mut m) = up.first_seen.lock() {
                *m = seen;
            }
        }
        let up = Arc::new(up);
        for index in 0..up.endpoints.len() {
            tokio::spawn(supervise::supervise(up.clone(), index, up.stop.clone()));
        }
        up
    }

    /// This set's shared parts around a new list of upstreams.
    fn with(&self, order: Vec<Arc<Upstream>>) -> Upstreams {
        Upstreams {
            by_name: order.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            order,
            events: self.events.clone(),
            setup: self.setup.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// The set for a reloaded config. An unchanged server keeps its upstream; one whose
    /// connection is the same keeps it, its new entry staged for [`Reconciled::apply_updates`];
    /// any other is started afresh. Call only once the reload is recorded, then put the set in
    /// force (applying the staged entries) and call [`Upstreams::finish`].
    pub(crate) fn reconcile(&self, servers: &[registry::Server]) -> (Upstreams, Reconciled) {
        let mut done = Reconciled::default();
        let mut order = Vec::with_capacity(servers.len());
        for s in servers {
            let up = match self.by_name.get(&s.name) {
                Some(old) if *old.config() == *s => old.clone(),
                Some(old) if old.config().same_connection(s) => {
                    done.staged.push((old.clone(), s.clone()));
                    done.updated.push(s.name.clone());
                    if !old.config().same_listing(s) {
                        done.relisted.push(s.name.clone());
                    }
                    old.clone()
                }
                Some(old) => {
                    done.reconnected.push(s.name.clone());
                    self.launch(s, Some(old))
                }
                None => {
                    done.added.push(s.name.clone());
                    self.launch(s, None)
                }
            };
            order.push(up);
        }
        let next = self.with(order);
        for old in &self.order {
            let kept = next
                .by_name
                .get(&old.name)
                .is_some_and(|u| Arc::ptr_eq(u, old));
            if !kept {
                if !next.by_name.contains_key(&old.name) {
                    done.removed.push(old.name.clone());
                }
                done.retired.push(old.clone());
            }
        }
        (next, done)
    }

    /// After a reconciled set is in force: stop the upstreams it dropped (a call already
    /// running on one keeps its connection until it ends) and tell sessions the lists changed.
    pub(crate) fn finish(&self, done: &Reconciled) {
        for old in &done.retired {
            old.stop.cancel();
        }
        let names = done
            .added
            .iter()
            .chain(&done.removed)
            .chain(&done.reconnected)
            .chain(&done.relisted);
        self.announce(names);
    }

    /// Tell sessions every server's lists may have changed (a reload changed the grants).
    pub(crate) fn announce_all(&self) {
        self.announce(self.order.iter().map(|u| &u.name));
    }

    fn announce<'a>(&self, names: impl Iterator<Item = &'a String>) {
        for name in names {
            // The allowlisted resources and prompts may have changed as well as the tools.
            let _ = self.events.send(UpstreamEvent::Tools(name.clone()));
            let _ = self.events.send(UpstreamEvent::Resources(name.clone()));
            let _ = self.events.send(UpstreamEvent::Prompts(name.clone()));
        }
    }

    /// The minter of upstream tokens every connection and call uses.
    pub(crate) fn minter(&self) -> &Arc<crate::credentials::Minter> {
        &self.setup.minter
    }

    /// The secret resolver every upstream connection uses.
    pub(crate) fn secrets(&self) -> &Arc<crate::secrets::Secrets> {
        &self.setup.secrets
    }

    /// One upstream, not connected and not supervised (for `portcullis pin`).
    pub(crate) fn standalone(server: &registry::Server, setup: &UpstreamSetup) -> Upstream {
        let (events, _) = broadcast::channel(16);
        let setup = UpstreamSetup {
            audit: None,
            ..setup.clone()
        };
        Upstream::new(server, &setup, events, CancellationToken::new())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    pub(crate) fn all(&self) -> &[Arc<Upstream>] {
        &self.order
    }

    /// Wait until every upstream has connected once, or `limit` passes. True if all are up.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.order.iter().all(|u| u.is_connected()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What every upstream connection shares.
#[derive(Clone)]
pub(crate) struct UpstreamSetup {
    pub(crate) secrets: Arc<crate::secrets::Secrets>,
    /// Mints the tokens of servers with `token_exchange` or `client_credentials`.
    pub(crate) minter: Arc<crate::credentials::Minter>,
    pub(crate) cache: std::path::PathBuf,
    pub(crate) profile: registry::Profile,
    pub(crate) audit: Option<Arc<audit::Audit>>,
}

/// Host and port of an HTTP upstream.
pub(super) fn address(server: &registry::Server) -> Option<(String, u16)> {
    let registry::ServerSource::Http { url, .. } = &server.source else {
        return None;
    };
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once("]:") {
            Some((h, p)) => (h, Some(p)),
            None => (v6.trim_end_matches(']'), None),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    Some((
        host.to_string(),
        port.and_then(|p| p.parse().ok()).unwrap_or(default),
    ))
}
