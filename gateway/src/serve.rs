//! Running the gateway (`serve`, and `quickstart` once it has its config and keys).
//!
//! The config is validated, and the store, every secret and the audit log are read, before any
//! socket is bound. [`start`] assembles a gateway from a validated registry (store, secrets,
//! audit log, upstreams, levers); [`serve`] serves its two routers on two listeners until
//! shutdown, then lets running calls finish and closes the audit log; [`run`] is the command:
//! telemetry, what is read before binding, listeners, the rest of `start`, heartbeat, reload,
//! serve.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::command::{EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE};
use crate::gateway::Gateway;
use crate::upstream::Upstreams;

/// How often a `serve` process writes its heartbeat to the store.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long shutdown waits for calls running without a client (see `Gateway::detached`).
const DETACHED_GRACE: Duration = Duration::from_secs(10);

/// A running gateway's state: what its routers serve.
#[derive(Clone)]
pub struct State {
    pub(crate) gw: Arc<Gateway>,
    /// Where its admin listener is, for the links the admin pages print.
    pub(crate) admin_at: SocketAddr,
}

impl State {
    /// Wait up to `limit` for every upstream to connect and list its tools; false if some did
    /// not (they keep trying in the background).
    pub async fn upstreams_ready(&self, limit: Duration) -> bool {
        self.gw.upstreams().wait_connected(limit).await
    }
}

/// Why a gateway did not start: what to tell the operator, and the exit code.
#[derive(Debug)]
pub struct Unready {
    /// A sysexits code: 64 config, 69 a required service, 70 internal.
    pub code: u8,
    /// What went wrong, and the fix where there is one.
    pub message: String,
}

impl std::fmt::Display for Unready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn unready(code: u8, message: impl Into<String>) -> Unready {
    Unready {
        code,
        message: message.into(),
    }
}

/// Assemble a gateway for a validated `reg` whose MCP listener is at `mcp_at` and admin
/// listener at `admin_at`: open the store, read every secret reference, open the audit log
/// (no writable required sink, no start), start the upstreams, read the kill-switch state once
/// (no state, no start). Background work (kill-switch polling, idle sessions) stops with
/// `shutdown`.
pub async fn start(
    reg: registry::Registry,
    mcp_at: SocketAddr,
    admin_at: SocketAddr,
    shutdown: CancellationToken,
) -> Result<State, Unready> {
    let ready = prepare(&reg).await?;
    assemble(reg, ready, mcp_at, admin_at, shutdown).await
}

/// What is read before any socket is bound: the store, every secret, the audit log, the keys
/// that seal session ids.
pub(crate) struct Prepared {
    store: store::Store,
    secrets: Arc<crate::secrets::Secrets>,
    audit: Arc<audit::Audit>,
    sealer: crate::session::seal::Sealer,
}

/// The ring that seals session ids: the configured keys (by reference), else the key kept in
/// the store, which every process sharing it uses.
async fn sealer(
    reg: &registry::Registry,
    secrets: &crate::secrets::Secrets,
    store: &store::Store,
) -> Result<crate::session::seal::Sealer, Unready> {
    let keys = &reg.settings.session_keys;
    if keys.is_empty() {
        let key = store
            .session_key()
            .await
            .map_err(|e| unready(EX_UNAVAILABLE, format!("cannot read the session key: {e}")))?;
        return crate::session::seal::Sealer::new([key.as_slice()])
            .map_err(|e| unready(EX_SOFTWARE, e));
    }
    let mut material = Vec::new();
    for r in keys {
        let secret = secrets
            .resolve(r)
            .await
            .map_err(|e| unready(EX_CONFIG, e.to_string()))?;
        material.push(secret.expose().as_bytes().to_vec());
    }
    crate::session::seal::Sealer::new(material.iter().map(Vec::as_slice)).map_err(|e| {
        let fix = "make each `http.session_keys` entry at least 32 random bytes, e.g. `openssl rand -base64 48`";
        unready(EX_CONFIG, format!("http.session_keys: {e}\n  fix: {fix}"))
    })
}

async fn prepare(reg: &registry::Registry) -> Result<Prepared, Unready> {
    // Every secret reference is read once before anything binds: a missing secret stops the start.
    let secrets = crate::secrets::Secrets::new(reg.settings.vault.as_ref())
        .map(Arc::new)
        .map_err(|e| unready(EX_CONFIG, e.to_string()))?;
    if let Err(e) = secrets.check_all(crate::secrets::references(reg)).await {
        let fix = "make the referenced secret readable by the gateway (env, file or Vault)";
        return Err(unready(EX_CONFIG, format!("{e}\n  fix: {fix}")));
    }
    let store = crate::secrets::open_store(reg, &secrets)
        .await
        .map_err(|e| unready(EX_UNAVAILABLE, e))?;
    let audit = audit::Audit::open(&reg.settings.audit, &store, "serve", &reg.digest)
        .await
        .map(Arc::new)
        .map_err(|e| {
            let fix = "make a required audit sink writable (audit.sinks); no call runs unrecorded";
            unready(EX_UNAVAILABLE, format!("{e}\n  fix: {fix}"))
        })?;
    if let Some(reserve) = crate::reserve::get() {
        audit.keep_reserve(reserve);
    }
    let sealer = sealer(reg, &secrets, &store).await?;
    Ok(Prepared {
        store,
        secrets,
        audit,
        sealer,
    })
}

/// The gateway on what `prepare` read: upstreams started, the kill-switch state read.
async fn assemble(
    reg: registry::Registry,
    ready: Prepared,
    mcp_at: SocketAddr,
    admin_at: SocketAddr,
    shutdown: CancellationToken,
) -> Result<State, Unready> {
    let Prepared {
        store,
        secrets,
        audit,
        sealer,
    } = ready;
    let reg = Arc::new(reg);
    let upstreams = Upstreams::start(
        &reg.servers,
        crate::upstream::UpstreamSetup {
            minter: Arc::new(crate::credentials::Minter::new(secrets.clone())),
            secrets,
            cache: crate::pin::absolute(&reg.settings.cache_dir),
            profile: reg.settings.profile,
            audit: Some(audit.clone()),
        },
        shutdown.clone(),
    );
    let gw = Arc::new(Gateway::new(
        reg.clone(),
        store,
        audit,
        upstreams,
        mcp_at,
        sealer,
    ));
    // Until a read of the kill switch and mode succeeds every call is refused: none, no start.
    gw.levers.refresh().await.map_err(|e| {
        unready(
            EX_UNAVAILABLE,
            format!("cannot read the kill-switch state: {e}"),
        )
    })?;
    let poll = reg.settings.kill_switch.poll;
    tokio::spawn(gw.levers.clone().run(poll, shutdown.clone()));
    tokio::spawn(keep_audit_retention(gw.clone(), shutdown.clone()));
    tokio::spawn(return_idle_budget(gw.clone(), shutdown.clone()));
    tokio::spawn(reap_sessions(gw.clone(), shutdown));
    Ok(State { gw, admin_at })
}

/// Every [`FRESH`](crate::limits::budgets::leases::FRESH), give budget units held ahead and
/// no longer spent back to the store (at shutdown `serve` gives back the rest).
async fn return_idle_budget(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::limits::budgets::leases::FRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let idle = gw.limits.leases.release(Some(std::time::Instant::now()));
                crate::limits::budgets::refund(&gw.store, &idle).await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// The MCP listener's router: `/mcp`, `/mcp/<server>`, health and metadata.
pub fn app(state: &State) -> axum::Router {
    crate::front::router(state.gw.clone())
}

/// The admin listener's router: the operator API, pages, metrics and the self-audit.
pub fn admin_app(state: &State) -> axum::Router {
    crate::admin::router(Arc::new(crate::admin::Admin::new(
        state.gw.clone(),
        state.admin_at,
    )))
}

/// Serve `app` on `mcp` and `admin_app` on `admin` until `shutdown` is cancelled; then let
/// calls whose client went away run to their end (up to 10 s) and close the audit log, so
/// everything queued is written. An error is the MCP listener's task failing.
pub async fn serve(
    state: &State,
    mcp: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let settings = state.gw.registry().settings.clone();
    let admin_bounds = crate::listen::Bounds::admin(&settings);
    let mcp_bounds = crate::listen::Bounds::mcp(&settings);
    tracing::info!(
        max_connections = mcp_bounds.max_connections,
        per_peer = mcp_bounds.per_peer,
        "MCP listener connection caps"
    );
    let (admin_app, admin_stop) = (admin_app(state), shutdown.clone());
    let admin_task = tokio::spawn(async move {
        let stopped = async move { admin_stop.cancelled().await };
        crate::listen::serve(admin, admin_app, admin_bounds, "admin", stopped).await;
    });
    let (app, stop) = (app(state), shutdown.clone());
    // The accept loop runs on the runtime's workers, not on this thread (which `block_on` parks
    // between polls): a connection accepted here would wake a worker for every request.
    let served = tokio::spawn(async move {
        let stopped = async move { stop.cancelled().await };
        crate::listen::serve(mcp, app, mcp_bounds, "mcp", stopped).await;
    })
    .await
    .map_err(|e| format!("the MCP listener stopped unexpectedly: {e}"));
    shutdown.cancel();
    if let Err(e) = admin_task.await {
        tracing::error!(error = %e, "the admin listener stopped unexpectedly");
    }
    // Calls whose client went away run to their end, and their results go before `audit.stop`.
    let detached = state.gw.detached.clone();
    detached.close();
    if tokio::time::timeout(DETACHED_GRACE, detached.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = detached.len(),
            "calls still running at shutdown are abandoned; their results are not recorded"
        );
    }
    // Budget units held ahead and not spent go back, for the other processes on the store.
    let leases = &state.gw.limits.leases;
    crate::limits::budgets::refund(&state.gw.store, &leases.release(None)).await;
    leases.settled(std::time::Duration::from_secs(10)).await;
    // Everything queued for the audit log is written before the process ends: the writer takes
    // events in order, so once the stop event is on a sink, so is everything before it.
    if let Err(e) = state.gw.audit.close().await {
        eprintln!("portcullis: the audit log could not be closed cleanly: {e}");
    }
    served
}

/// Run until SIGINT or SIGTERM, reloading `config` on SIGHUP and when it changes. `banner` is
/// printed once the listener is bound. `bound` holds the MCP and admin listeners when the caller
/// bound them already (the quickstart binds before it writes anything).
pub(crate) async fn run(
    reg: registry::Registry,
    config: &Path,
    banner: Option<String>,
    bound: Option<(std::net::TcpListener, std::net::TcpListener)>,
) -> ExitCode {
    let telemetry = reg.settings.telemetry.clone();
    match tokio::task::spawn_blocking(move || crate::telemetry::init(&telemetry)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        Err(e) => {
            eprintln!("portcullis: telemetry setup failed: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    }
    let ready = match prepare(&reg).await {
        Ok(r) => r,
        Err(u) => {
            eprintln!("portcullis: {u}");
            return ExitCode::from(u.code);
        }
    };
    let (listener, admin_listener) = match bind(&reg, bound).await {
        Ok(pair) => pair,
        Err(why) => {
            eprintln!("portcullis: {why}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let addresses = listener
        .local_addr()
        .and_then(|m| Ok((m, admin_listener.local_addr()?)));
    let (mcp_at, admin_at) = match addresses {
        Ok(a) => a,
        Err(e) => {
            eprintln!("portcullis: a listener has no address: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let shutdown = CancellationToken::new();
    let state = match assemble(reg, ready, mcp_at, admin_at, shutdown.clone()).await {
        Ok(s) => s,
        Err(u) => {
            eprintln!("portcullis: {u}");
            return ExitCode::from(u.code);
        }
    };
    heartbeat(&state.gw, shutdown.clone());
    crate::reload::start(state.gw.clone(), config, shutdown.clone());
    let admin_url = crate::admin::Admin::url_for(admin_at);
    // Tests and scripts read these lines to find the ports.
    say(&format!("portcullis: admin listening on {admin_url}/ui/"));
    say(&format!("portcullis: mcp listening on http://{mcp_at}/mcp"));
    if let Some(b) = banner {
        // Give the built-in upstream a moment so the first tools/list is complete.
        let upstreams = state.gw.upstreams();
        upstreams.wait_connected(Duration::from_secs(5)).await;
        say(&b.replace("{admin_url}", &format!("{admin_url}/ui/")));
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    let served = serve(&state, listener, admin_listener, shutdown).await;
    // Spans still buffered are sent before the process ends.
    let _ = tokio::task::spawn_blocking(crate::telemetry::shutdown).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: server error: {e}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}

/// Delete the store's audit events older than `audit.retention`, as the running config says:
/// a tenth of the period after start and then every tenth of it (at least a second apart, at
/// most an hour), so the table holds the period and a tenth more at most.
async fn keep_audit_retention(gw: Arc<Gateway>, stop: CancellationToken) {
    loop {
        let retention = gw.registry().settings.audit.retention;
        let every = retention
            .map_or(Duration::from_secs(3600), |r| r / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let Some(keep) = gw.registry().settings.audit.retention else {
            continue;
        };
        let before =
            store::now_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        match gw.store.prune_audit_events(before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(events = n, retention = ?keep, "audit events past their retention deleted from the store")
            }
            Err(e) => tracing::warn!(error = %e, "audit events past their retention not deleted"),
        }
    }
}

/// End idle and expired sessions every 30 s, recording each, and delete expired tasks; every
/// 5 s, let go of sessions a client ended through another process.
async fn reap_sessions(gw: Arc<Gateway>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut rounds = 0u64;
    let mut since = store::now_ms();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = store::now_ms();
        // Overlapping windows (a minute): an end recorded while the last query ran, or by a
        // replica whose clock is behind, is not missed; letting go twice is harmless.
        if let Ok(ended) = gw
            .store
            .sessions_ended_since(since.saturating_sub(60_000))
            .await
        {
            gw.sessions.forget_ended(&ended);
            since = now;
        }
        rounds += 1;
        if !rounds.is_multiple_of(6) {
            continue;
        }
        if let Err(e) = gw.store.prune_session_records().await {
            tracing::warn!(error = %e, "cannot prune expired session records");
        }
        gw.sessions.tidy_replays();
        // Expired tasks go with the calls they still held.
        if let Err(e) = gw.store.prune_tasks().await {
            tracing::warn!(error = %e, "cannot prune expired tasks");
        }
        for s in gw.sessions.reap() {
            let mut e = audit::Event::new("session.end");
            e.session = Some(s.id.clone());
            e.identity = Some(audit::Who::named(s.subject.clone()));
            e.reason = Some("idle or expired".into());
            gw.audit.note(e);
        }
    }
}

/// How long budget usage rows are kept after their last change: two of the longest period.
const BUDGET_ROWS_KEPT_MS: i64 = 62 * 86_400_000;

/// A heartbeat in the store every few seconds, so the self-audit can see processes sharing
/// it; removed as soon as shutdown begins. Hourly, it also prunes budget usage long over.
fn heartbeat(gw: &Gateway, stop: CancellationToken) {
    let instance = store::InstanceRow {
        id: hex::encode(rand::random::<[u8; 8]>()),
        host: std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned()),
        pid: i64::from(std::process::id()),
        started_ms: store::now_ms(),
        seen_ms: store::now_ms(),
    };
    let store = gw.store.clone();
    let mut row = instance;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        let mut beats: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    row.seen_ms = store::now_ms();
                    if let Err(e) = store.heartbeat(&row).await {
                        tracing::warn!(error = %e, "heartbeat not written");
                    }
                    // Hourly: budget usage of windows long over (the longest period is a month).
                    if beats.is_multiple_of(3600 / HEARTBEAT.as_secs().max(1))
                        && let Err(e) = store.prune_budgets(row.seen_ms.saturating_sub(BUDGET_ROWS_KEPT_MS)).await
                    {
                        tracing::warn!(error = %e, "old budget usage not pruned");
                    }
                    beats = beats.wrapping_add(1);
                }
                () = stop.cancelled() => {
                    if let Err(e) = store.forget_instance(&row.id).await {
                        tracing::warn!(error = %e, "heartbeat not removed");
                    }
                    return;
                }
            }
        }
    });
}

/// The MCP and admin listeners: the ones already bound, or bound now from the config.
async fn bind(
    reg: &registry::Registry,
    bound: Option<(std::net::TcpListener, std::net::TcpListener)>,
) -> Result<(TcpListener, TcpListener), String> {
    if let Some((mcp, admin)) = bound {
        let adopt = |l: std::net::TcpListener| {
            l.set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(l))
                .map_err(|e| format!("cannot use the bound listener: {e}"))
        };
        return Ok((adopt(mcp)?, adopt(admin)?));
    }
    let mcp = TcpListener::bind(reg.settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", reg.settings.listen))?;
    let admin = TcpListener::bind(reg.settings.admin_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (admin_listen): {e}",
                reg.settings.admin_listen
            )
        })?;
    Ok((mcp, admin))
}

/// Print a line to stdout. A closed stdout (the reader went away) must not stop the gateway,
/// so write errors are ignored rather than panicking as `println!` would.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
