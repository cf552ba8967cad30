//! The request path to an upstream: the endpoint each attempt goes to and its breaker's
//! count, a read tried again elsewhere within the retry budget, the connection (shared, or the
//! session's own), the deadlines and bounds, and the leg the request is sent on.

use super::*;

/// The methods spread over a server's endpoints: each call stands alone.
const SPREAD: [&str; 4] = [
    "tools/call",
    "resources/read",
    "prompts/get",
    "completion/complete",
];

/// How a request's endpoint is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    /// By the server's `balance`.
    Balanced,
    /// The first endpoint, in config order, that takes calls.
    First,
    /// The session's own connection (`connection: per_session`, one endpoint): the shared
    /// connection need not be up.
    Link,
}

/// What a request carries beside its params, for each attempt.
struct Sending<'a> {
    method: &'a str,
    progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    cancel: Option<CancellationToken>,
    on: Option<On<'a>>,
    terms: Terms,
}

impl Upstream {
    /// Send one request and wait for its result, with the server's timeout.
    ///
    /// `progress` forwards upstream progress to the downstream caller's token; `cancel` aborts
    /// the request and tells the upstream; `on` names the client session, whose own connection
    /// carries the request if the server is `connection: per_session`.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
        cancel: Option<CancellationToken>,
        on: Option<On<'_>>,
    ) -> Result<Value, UpstreamError> {
        self.request_as(method, params, progress, cancel, on, Terms::default())
            .await
    }

    /// [`Upstream::request`] on `terms`: with a token minted for this call, within the
    /// caller's deadline. Refused at once while every endpoint's circuit is open.
    pub(crate) async fn request_as(
        &self,
        method: &str,
        params: Option<Value>,
        progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
        cancel: Option<CancellationToken>,
        on: Option<On<'_>>,
        terms: Terms,
    ) -> Result<Value, UpstreamError> {
        let name = &self.name;
        let config = self.config();
        let mut params = params;
        let span = crate::telemetry::client_span(
            name,
            self.address.as_ref().map(|(h, p)| (h.as_str(), *p)),
            method,
            &mut params,
        );
        let started = std::time::Instant::now();
        let sending = Sending {
            method,
            progress,
            cancel,
            on,
            terms,
        };
        let outcome = self.route(&config, params, &sending).await;
        crate::metrics::get().upstream(name, outcome.is_ok(), started.elapsed());
        crate::telemetry::finish(
            &span,
            outcome.as_ref().map_err(|e| (e.code(), Some(e.kind()))),
        );
        outcome
    }

    /// Each attempt on the endpoint the balancer picks, its outcome counted by that
    /// endpoint's breaker; a request that could not reach its endpoint at all, and a read whose
    /// connection failed or met 502/503/504, is tried on another while the retry budget allows
    /// (a write that may have reached the upstream never is: it may have run).
    async fn route(
        &self,
        config: &registry::Server,
        params: Option<Value>,
        s: &Sending<'_>,
    ) -> Result<Value, UpstreamError> {
        let budget = config.resilience.retry_budget;
        // One endpoint has nowhere else to go: nothing to bank.
        if self.endpoints.len() > 1 {
            self.budget.deposit(budget);
        }
        let link = s.on.is_some() && config.connection == registry::Connection::PerSession;
        let way = match (link, SPREAD.contains(&s.method)) {
            (true, _) => Way::Link,
            (false, true) => Way::Balanced,
            // Listings with cursors, subscriptions and levels stay on one endpoint (the first
            // that takes calls), which keeps what they leave there.
            (false, false) => Way::First,
        };
        let may_retry = self.endpoints.len() > 1 && budget > 0 && way == Way::Balanced;
        let read = may_retry && read_only(self, config, s.method, params.as_ref());
        // Kept for another attempt only where there may be one.
        let spare = may_retry.then(|| params.clone());
        let mut params = params;
        let mut tried = 0u64;
        let mut chosen = self.pick(config, tried, way)?;
        loop {
            let ep = chosen.endpoint;
            tried |= 1 << ep.index.min(63);
            let outcome = self.send(ep, config, params, s).await;
            // A call that ran out of the caller's own time says nothing of the upstream.
            let callers_time = matches!(outcome, Err(UpstreamError::Timeout(..)))
                && s.terms
                    .deadline
                    .is_some_and(|d| d <= tokio::time::Instant::now() + Duration::from_millis(5));
            let health = match callers_time {
                true => circuit::Outcome::Neutral,
                false => UpstreamError::outcome(&outcome),
            };
            chosen.report(health, &self.name);
            drop(chosen);
            let (e, again) = match (outcome, &spare) {
                (Err(e), Some(again)) if e.retryable(read) => (e, again),
                (outcome, _) => return outcome,
            };
            // Another endpoint first, then the budget: a retry is charged, and recorded, only
            // where one is made.
            let Ok(next) = self.pick(config, tried, way) else {
                return Err(e);
            };
            if !self.budget.withdraw(budget) {
                return Err(e);
            }
            self.attempt_failed(s.method, again.as_ref(), ep, &e);
            params = again.clone();
            chosen = next;
        }
    }

    /// A failed attempt that is tried again elsewhere: on the operator's record.
    fn attempt_failed(
        &self,
        method: &str,
        params: Option<&Value>,
        ep: &Endpoint,
        e: &UpstreamError,
    ) {
        tracing::warn!(server = %self.name, endpoint = %ep.label(), error = %e, "upstream attempt failed; trying another endpoint");
        if let Some(audit) = &self.audit {
            let mut event = audit::Event::new("upstream.retry");
            event.server = Some(self.name.clone());
            event.tool = match method {
                "tools/call" => params
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => None,
            };
            event.outcome = Some("retried");
            event.reason = Some(e.to_string());
            event.detail = Some(json!({ "method": method, "endpoint": ep.label() }));
            audit.note(event);
        }
    }

    /// The connection a request goes on: the session's own for a `per_session` server (opened
    /// now if need be; a cancellation meanwhile stops the request before anything is sent),
    /// otherwise the endpoint's.
    async fn connection_for(
        &self,
        ep: &Endpoint,
        on: Option<&On<'_>>,
        config: &registry::Server,
        cancel: Option<&CancellationToken>,
    ) -> Result<(Connection, Option<Arc<Relay>>), UpstreamError> {
        let cancelled = || UpstreamError::Cancelled(self.name.clone());
        let Some(on) = on.filter(|_| config.connection == registry::Connection::PerSession) else {
            let conn = ep
                .connection()
                .ok_or_else(|| UpstreamError::Down(self.name.clone()))?;
            return Ok((conn, None));
        };
        let opened = match cancel {
            Some(c) => tokio::select! {
                r = self.link(on, config) => r,
                () = c.cancelled() => Err(cancelled()),
            },
            None => self.link(on, config).await,
        }?;
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(cancelled());
        }
        Ok(opened)
    }

    /// One attempt on `ep`.
    async fn send(
        &self,
        ep: &Endpoint,
        config: &registry::Server,
        params: Option<Value>,
        s: &Sending<'_>,
    ) -> Result<Value, UpstreamError> {
        let name = &self.name;
        let (method, on) = (s.method, s.on);
        let cancel = s.cancel.clone();
        if cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return Err(UpstreamError::Cancelled(name.clone()));
        }
        let Terms {
            credential,
            deadline,
        } = s.terms.clone();
        let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        let bounds = Bounds::of(config, method, params.as_ref(), left);
        if left.is_some_and(|l| l.is_zero()) {
            // The caller's deadline passed before the request could be sent.
            return Err(UpstreamError::Expired(name.clone()));
        }
        let (conn, relay) = self
            .connection_for(ep, on.as_ref(), config, cancel.as_ref())
            .await?;
        let mut params = params;
        let declared = own_capabilities(&mut params, &conn);
        let started = std::time::Instant::now();
        let token = credential.clone();
        if let Some(token) = &credential {
            // Never relayed back to a caller if the upstream echoes it.
            self.sent([token.to_string()]);
        }
        let cancel = cancel.unwrap_or_default();
        let r = Outgoing {
            method,
            params,
            declared,
            credential,
            progress: s.progress.clone(),
        };
        let mut value = match &conn.direct {
            Some(direct) if relay.is_none() && direct::METHODS.contains(&method) => {
                self.send_direct(direct, &conn, r, &cancel, &bounds).await?
            }
            // Boxed: the larger of the two legs, and not the one HTTP calls take.
            _ => Box::pin(self.send_rmcp(&conn, relay, on, r, &cancel, &bounds)).await?,
        };
        if task::is_task(&value) && method != "tools/call" {
            // Only a call may become a task: anything else answered so is not understood.
            return Err(UpstreamError::Unreadable(name.clone()));
        }
        if task::is_task(&value) {
            let deadline = started + bounds.max_timeout;
            // Boxed: rare, and large enough to double every call's future otherwise.
            value = Box::pin(self.follow_task(
                &conn,
                &value,
                &cancel,
                token,
                deadline,
                bounds.max_timeout,
            ))
            .await?;
            // A task's result was read whole by rmcp; its nesting is checked here.
            if registry::nesting(&value) > bounds.max_depth {
                return Err(UpstreamError::Exceeded(
                    name.clone(),
                    format!("an answer nested deeper than {}", bounds.max_depth),
                ));
            }
        }
        scrub::scrub(&mut value, name, &self.sent_secrets());
        Ok(value)
    }
}

/// True when `method` with `params` only reads: a tool call of a `read` tool (as configured,
/// and not raised by the upstream's annotations), a resource read, a prompt or a completion.
fn read_only(
    up: &Upstream,
    config: &registry::Server,
    method: &str,
    params: Option<&Value>,
) -> bool {
    match method {
        "resources/read" | "prompts/get" | "completion/complete" => true,
        "tools/call" => {
            let Some(tool) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
                return false;
            };
            let configured = config
                .tools
                .get(tool)
                .is_some_and(|e| e.class == policy::ToolClass::Read);
            configured
                && up
                    .tools()
                    .named(tool)
                    .is_some_and(|o| o.class == policy::ToolClass::Read)
        }
        _ => false,
    }
}
