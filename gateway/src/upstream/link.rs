//! A session's own connection to a `connection: per_session` upstream, opened on first use.

use super::*;

impl Upstream {
    /// True if the session has a live connection of its own to this upstream.
    pub(crate) fn linked(&self, session: &ClientSide) -> bool {
        session.links.has(&self.name, self.serial)
    }

    /// The session's own connection to this upstream, opened now if it has none (or its last
    /// one closed, or was opened for an upstream a reload replaced).
    pub(super) async fn link(
        &self,
        on: &On<'_>,
        config: &registry::Server,
    ) -> Result<(Connection, Option<Arc<Relay>>), UpstreamError> {
        let slot = on
            .session
            .links
            .slot(&self.name)
            .ok_or_else(|| UpstreamError::Down(self.name.clone()))?;
        let mut held = slot.lock().await;
        if let Some(link) = held.link.as_ref()
            && link.serial == self.serial
            && !link.conn.peer.is_transport_closed()
        {
            return Ok((link.conn.clone(), Some(link.relay.clone())));
        }
        // A stale link (closed, or for a replaced upstream) is dropped, which closes it.
        held.link = None;
        if held.backing_off() {
            return Err(UpstreamError::Down(self.name.clone()));
        }
        let stop = self.stop.child_token();
        let (relay, handler) = self.link_handler(on, config, &stop);
        // The whole open (secrets, address checks, handshake) within the server's timeout.
        let opened = tokio::select! {
            // Boxed: opening is rare, and its future would otherwise be carried by every call's.
            r = tokio::time::timeout(config.timeout, Box::pin(connect::open_link(self, handler))) => {
                r.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {:?}", config.timeout)))
            }
            () = stop.cancelled() => Err(anyhow::anyhow!("the upstream was stopped")),
            () = on.session.links.closed.cancelled() => Err(anyhow::anyhow!("the session ended")),
        };
        let conn = match opened {
            Ok(c) if !on.session.links.closed.is_cancelled() => c,
            Ok(_) => return Err(UpstreamError::Down(self.name.clone())),
            Err(e) => {
                held.failed = Some(std::time::Instant::now());
                tracing::warn!(server = %self.name, session = %audit::session_ref(&on.session.id), error = %e, "opening the session's upstream connection failed");
                return Err(UpstreamError::Transport(self.name.clone()));
            }
        };
        tracing::info!(server = %self.name, session = %audit::session_ref(&on.session.id), protocol = %conn.protocol.as_str(), "session's upstream connection opened");
        // The connection closes when the link is dropped or the upstream stops.
        let service = conn._service.cancellation_token();
        let watched = stop.clone();
        tokio::spawn(async move {
            watched.cancelled().await;
            service.cancel();
        });
        // The level the client asked for before this connection existed.
        let level = on.session.log_level.lock().ok().and_then(|l| l.clone());
        if let Some(level) = level
            && conn.protocol.has_initialize()
        {
            Box::pin(self.set_level_on(&conn, &level, config.timeout)).await;
        }
        held.failed = None;
        held.link = Some(Link {
            serial: self.serial,
            conn: conn.clone(),
            relay: relay.clone(),
            _close: stop.drop_guard(),
        });
        Ok((conn, Some(relay)))
    }

    /// Send `logging/setLevel` on a connection just opened, within `timeout`.
    async fn set_level_on(&self, conn: &Connection, level: &str, timeout: Duration) {
        let request: Result<ClientRequest, _> = serde_json::from_value(
            json!({ "method": "logging/setLevel", "params": { "level": level } }),
        );
        let options = PeerRequestOptions::with_timeout(timeout);
        let sent = match request {
            Ok(request) => match conn.peer.send_request_with_option(request, options).await {
                Ok(handle) => handle.await_response().await.map(drop),
                Err(e) => Err(e),
            },
            Err(e) => Err(ServiceError::McpError(rmcp::ErrorData::internal_error(
                e.to_string(),
                None,
            ))),
        };
        if let Err(e) = sent {
            tracing::warn!(server = %self.name, error = %e, "logging/setLevel not relayed");
        }
    }

    /// The handler of a new link: its relay to the session's client, no list-change events (the
    /// shared connection announces them), no pinning.
    fn link_handler(
        &self,
        on: &On<'_>,
        config: &registry::Server,
        stop: &CancellationToken,
    ) -> (Arc<Relay>, UpstreamHandler) {
        let relay = Arc::new(Relay::new(
            &self.name,
            on.session,
            relay::Owner {
                who: crate::auth::who(on.caller),
                identity: on.caller.identity.clone(),
                levers: on.levers.clone(),
            },
            self.audit.clone(),
            config.timeout,
            stop.clone(),
        ));
        let (refresh, _) = mpsc::unbounded_channel();
        let handler = UpstreamHandler {
            server: self.name.clone(),
            progress: Arc::new(ProgressRoutes::default()),
            // The shared connection announces list changes; a link's would repeat them.
            events: broadcast::channel(1).0,
            refresh,
            relay: Some(relay.clone()),
            secrets: self.sent_secrets.clone(),
            pinning: false,
        };
        (relay, handler)
    }
}
