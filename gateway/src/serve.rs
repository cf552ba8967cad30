//! Running the gateway (`serve`, and `quickstart` once it has its config and keys).
//!
//! The server is a function of a validated registry and a listener: config is validated before
//! any socket is bound, the listener is bound, then upstreams connect in the background.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::command::{EX_CONFIG, EX_SOFTWARE, open_store};
use crate::gateway::Gateway;
use crate::upstream::Upstreams;

/// How often a `serve` process writes its heartbeat to the store.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Run until SIGINT or SIGTERM, reloading `config` on SIGHUP and when it changes. `banner` is
/// printed once the listener is bound. `bound` holds the MCP and admin listeners when the caller
/// bound them already (the quickstart binds before it writes anything).
pub(crate) async fn run(
    reg: registry::Registry,
    config: &Path,
    banner: Option<String>,
    bound: Option<(std::net::TcpListener, std::net::TcpListener)>,
) -> ExitCode {
    let store = match open_store(&reg).await {
        Ok(s) => s,
        Err(c) => return c,
    };
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
    // Every secret reference is read once before anything binds: a missing secret stops the start.
    let secrets = match crate::secrets::Secrets::new(reg.settings.vault.as_ref()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(e) = secrets.check_all(crate::secrets::references(&reg)).await {
        eprintln!("portcullis: {e}");
        eprintln!("  fix: make the referenced secret readable by the gateway (env, file or Vault)");
        return ExitCode::from(EX_CONFIG);
    }
    let audit = match audit::Audit::open(&reg.settings.audit, &store, "serve", &reg.digest).await {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("portcullis: {e}");
            eprintln!(
                "  fix: make a required audit sink writable (audit.sinks); no call runs unrecorded"
            );
            return ExitCode::from(crate::command::EX_UNAVAILABLE);
        }
    };
    let (listener, admin_listener) = match bind(&reg, bound).await {
        Ok(pair) => pair,
        Err(why) => {
            eprintln!("portcullis: {why}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let bound = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("portcullis: listener has no address: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let admin_bound = match admin_listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("portcullis: admin listener has no address: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let shutdown = CancellationToken::new();
    let reg = Arc::new(reg);
    let upstreams = Upstreams::start(
        &reg.servers,
        crate::upstream::UpstreamSetup {
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
        upstreams.clone(),
        bound,
    ));
    // Read the kill switch and mode before serving; until a read succeeds every call is refused.
    if let Err(e) = gw.levers.refresh().await {
        eprintln!("portcullis: cannot read the kill-switch state: {e}");
        return ExitCode::from(crate::command::EX_UNAVAILABLE);
    }
    tokio::spawn(
        gw.levers
            .clone()
            .run(reg.settings.kill_switch.poll, shutdown.clone()),
    );
    {
        let gw = gw.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for s in gw.sessions.reap() {
                            let mut e = audit::Event::new("session.end");
                            e.session = Some(s.id.clone());
                            e.identity = Some(audit::Who::named(s.subject.clone()));
                            e.reason = Some("idle".into());
                            gw.audit.note(e);
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
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
    {
        // A heartbeat in the store, so the self-audit can see processes sharing it.
        let store = gw.store.clone();
        let stop = shutdown.clone();
        let mut row = instance.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        row.seen_ms = store::now_ms();
                        if let Err(e) = store.heartbeat(&row).await {
                            tracing::warn!(error = %e, "heartbeat not written");
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    crate::reload::start(gw.clone(), config, shutdown.clone());
    let gw_store = gw.store.clone();
    let admin = Arc::new(crate::admin::Admin::new(gw.clone(), admin_bound));
    // Tests and scripts read these lines to find the ports.
    say(&format!("portcullis: admin listening on {}/ui/", admin.url));
    say(&format!("portcullis: mcp listening on http://{bound}/mcp"));
    if let Some(b) = banner {
        // Give the built-in upstream a moment so the first tools/list is complete.
        upstreams.wait_connected(Duration::from_secs(5)).await;
        say(&b.replace("{admin_url}", &format!("{}/ui/", admin.url)));
    }
    let admin_app = crate::admin::router(admin);
    let admin_stop = shutdown.clone();
    let admin_bounds = crate::listen::Bounds::admin(&gw.registry().settings);
    let mcp_bounds = crate::listen::Bounds::mcp(&gw.registry().settings);
    tracing::info!(
        max_connections = mcp_bounds.max_connections,
        per_peer = mcp_bounds.per_peer,
        "MCP listener connection caps"
    );
    let admin_task = tokio::spawn(async move {
        crate::listen::serve(
            admin_listener,
            admin_app,
            admin_bounds,
            "admin",
            async move {
                admin_stop.cancelled().await;
            },
        )
        .await;
    });
    let gw_audit = gw.audit.clone();
    let detached = gw.detached.clone();
    let app = crate::front::router(gw);
    let stop = shutdown.clone();
    // The accept loop runs on the runtime's workers, not on this thread (which `block_on` parks
    // between polls): a connection accepted here would wake a worker for every request.
    let served = tokio::spawn(async move {
        crate::listen::serve(listener, app, mcp_bounds, "mcp", async move {
            wait_for_signal().await;
            stop.cancel();
        })
        .await;
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "the MCP listener stopped unexpectedly");
        e
    });
    shutdown.cancel();
    if let Err(e) = admin_task.await {
        eprintln!("portcullis: admin listener error: {e}");
    }
    shutdown.cancel();
    if let Err(e) = gw_store.forget_instance(&instance.id).await {
        tracing::warn!(error = %e, "heartbeat not removed");
    }
    // Calls whose client went away run to their end, and their results go before `audit.stop`.
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
    // Everything queued for the audit log is written before the process ends: the writer takes
    // events in order, so once the stop event is on a sink, so is everything before it.
    if let Err(e) = gw_audit.close().await {
        eprintln!("portcullis: the audit log could not be closed cleanly: {e}");
    }
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

/// The MCP and admin listeners: the ones already bound, or bound now from the config.
async fn bind(
    reg: &registry::Registry,
    bound: Option<(std::net::TcpListener, std::net::TcpListener)>,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), String> {
    if let Some((mcp, admin)) = bound {
        let adopt = |l: std::net::TcpListener| {
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
                .map_err(|e| format!("cannot use the bound listener: {e}"))
        };
        return Ok((adopt(mcp)?, adopt(admin)?));
    }
    let mcp = tokio::net::TcpListener::bind(reg.settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", reg.settings.listen))?;
    let admin = tokio::net::TcpListener::bind(reg.settings.admin_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (admin_listen): {e}",
                reg.settings.admin_listen
            )
        })?;
    Ok((mcp, admin))
}

/// How long shutdown waits for calls running without a client (see `Gateway::detached`).
const DETACHED_GRACE: Duration = Duration::from_secs(10);

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
