//! The probes: the real code run against injected faults, and the running gateway's state.

use std::time::Duration;

use policy::{ArgumentsDigest, Decision, Target};
use registry::Registry;
use store::{KeyRecord, KeyRole, KeyScope, Store, now_ms};

use crate::auth::{AuthError, Authenticator, Issuers, key_identity};
use crate::authorize::guarded;
use crate::gateway::Gateway;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A process counts as running if it wrote a heartbeat this recently.
pub(crate) const INSTANCE_FRESH_MS: i64 = 15_000;

/// What one probe saw.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// True when it saw what a safe gateway shows.
    pub(crate) ok: bool,
    pub(crate) observed: String,
}

/// Probes of the running gateway (absent offline).
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub(crate) audit_sink: Outcome,
    pub(crate) kill_switch: Outcome,
    /// Per issuer: discovery and key set fetched.
    pub(crate) oidc: Vec<(String, Outcome)>,
    /// Per server: connected and offering its allowlisted tools.
    pub(crate) upstreams: Vec<(String, Outcome)>,
    /// Whether the config file on disk is the config in force (`None`: no file is watched).
    pub(crate) config_file: Option<Outcome>,
    /// Gateway processes on this store seen within [`INSTANCE_FRESH_MS`], described.
    pub(crate) instances: Result<Vec<String>, String>,
    /// The latest OTLP span export in this process (`None`: no exporter configured).
    pub(crate) otlp: Option<Outcome>,
    /// The orgs active keys in the store carry (keys may name orgs the config does not).
    pub(crate) key_orgs: Vec<String>,
    /// The artefact that started this process and its confinement (`None`: none of ours).
    pub(crate) deployment: Option<Outcome>,
}

/// Every probe's result.
#[derive(Clone, Debug)]
pub(crate) struct Probes {
    pub(crate) store_error: Outcome,
    pub(crate) faulted_level: Outcome,
    pub(crate) panic_guard: Outcome,
    pub(crate) live: Option<Live>,
}

pub(crate) async fn run(reg: &Registry, live_target: Option<super::LiveTarget<'_>>) -> Probes {
    Probes {
        store_error: store_error().await,
        faulted_level: faulted_level(reg),
        panic_guard: panic_guard(),
        live: match live_target {
            Some(t) => Some(live(t.gw, t.requested_by).await),
            None => None,
        },
    }
}

/// A well-formed key presented while the store cannot be read must be refused.
async fn store_error() -> Outcome {
    let store = match Store::unreachable() {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                ok: false,
                observed: format!("the probe could not build its unreachable store: {e}"),
            };
        }
    };
    let auth = Authenticator::new(
        store,
        Issuers::new(&[], "http://self-audit.invalid", std::iter::empty()),
    );
    let key = "pcl_0123456789abcdef_selfauditprobeselfauditprobeselfaudit";
    let header = format!("Bearer {key}");
    match tokio::time::timeout(PROBE_TIMEOUT, auth.client_verified(Some(&header), None)).await {
        Err(_) => Outcome {
            ok: true,
            observed: "the credential check against an unreachable store gave no answer within 5 s; nothing was allowed".into(),
        },
        Ok(Ok(_)) => Outcome {
            ok: false,
            observed: "the credential check against an unreachable store ALLOWED the caller".into(),
        },
        Ok(Err(AuthError::Unavailable(why))) => Outcome {
            ok: true,
            observed: format!(
                "the credential check against an unreachable store was refused as unavailable (HTTP 503): {why}"
            ),
        },
        Ok(Err(other)) => Outcome {
            ok: true,
            observed: format!(
                "the credential check against an unreachable store was refused: {other}"
            ),
        },
    }
}

/// A key whose stored grants do not parse must be denied every allowlisted tool.
fn faulted_level(reg: &Registry) -> Outcome {
    let record = KeyRecord {
        id: "0123456789abcdef".into(),
        name: "self-audit-probe".into(),
        role: KeyRole::Client,
        created_at: 0,
        revoked_at: None,
        scope: KeyScope {
            grants: vec!["%%% corrupt %%%".into()],
            ..KeyScope::default()
        },
    };
    let identity = key_identity(&record);
    let policy = &reg.access.policy;
    let now = crate::auth::unix_now();
    let mut decided = 0usize;
    let mut allowed = Vec::new();
    for server in &reg.servers {
        for (name, entry) in &server.tools {
            let request = policy::Request {
                server: &server.name,
                target: Target::Tool(name),
                class: entry.class,
                arguments: ArgumentsDigest([0; 32]),
            };
            let d = guarded(|| policy::decide(policy, &identity, &request, now));
            decided += 1;
            if !matches!(d, Decision::Deny(_)) {
                allowed.push(format!("{}/{name}", server.name));
            }
        }
    }
    match allowed.is_empty() {
        true => Outcome {
            ok: true,
            observed: format!(
                "a key whose stored grants do not parse was denied all {decided} allowlisted tool(s) (key level faulted)"
            ),
        },
        false => Outcome {
            ok: false,
            observed: format!(
                "a key whose stored grants do not parse was NOT denied: {}",
                allowed.join(", ")
            ),
        },
    }
}

/// A policy evaluation that panics must come back as a deny.
fn panic_guard() -> Outcome {
    let d = guarded(|| std::panic::resume_unwind(Box::new("self-audit probe")));
    match d {
        Decision::Deny(denial) => Outcome {
            ok: true,
            observed: format!(
                "a panicking evaluation came back as a deny ({:?})",
                denial.reason
            ),
        },
        other => Outcome {
            ok: false,
            observed: format!("a panicking evaluation came back as {other:?}"),
        },
    }
}

async fn live(gw: &Gateway, requested_by: &str) -> Live {
    Live {
        audit_sink: audit_sink(gw, requested_by).await,
        kill_switch: kill_switch(gw),
        oidc: gw
            .auth
            .issuers()
            .probe()
            .await
            .into_iter()
            .map(|(issuer, r)| {
                let outcome = match r {
                    Ok(n) => Outcome {
                        ok: n > 0,
                        observed: format!("discovery and key set fetched: {n} usable key(s)"),
                    },
                    Err(why) => Outcome {
                        ok: false,
                        observed: format!("key set not fetched: {why}"),
                    },
                };
                (issuer, outcome)
            })
            .collect(),
        upstreams: upstreams(gw),
        config_file: config_file(gw),
        deployment: super::deployment::probe(),
        instances: gw
            .store
            .instances_since(now_ms().saturating_sub(INSTANCE_FRESH_MS))
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        format!(
                            "pid {} on {} (started {}, seen {}, id {})",
                            r.pid,
                            r.host,
                            crate::clock::rfc3339_ms(r.started_ms),
                            crate::clock::rfc3339_ms(r.seen_ms),
                            r.id
                        )
                    })
                    .collect()
            })
            .map_err(|e| e.to_string()),
        key_orgs: gw
            .store
            .list_keys()
            .await
            .map(|keys| {
                let mut orgs: Vec<String> = keys
                    .into_iter()
                    .filter(|k| k.revoked_at.is_none())
                    .filter_map(|k| k.scope.org)
                    .collect();
                orgs.sort();
                orgs.dedup();
                orgs
            })
            .unwrap_or_default(),
        otlp: gw
            .registry()
            .settings
            .telemetry
            .otlp
            .as_ref()
            .map(|_| otlp_delivery()),
    }
}

/// An exporter's error as the report shows it: any URL in it without credentials or query (as
/// the endpoint itself is cited), and not longer than a line.
pub(super) fn for_record(error: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for word in error.split_whitespace() {
        let bare =
            word.trim_matches(|c: char| matches!(c, '(' | ')' | ',' | '"' | '\'' | '<' | '>'));
        out.push(match bare.contains("://") {
            true => word.replace(bare, &crate::redact::uri_for_record(bare)),
            false => word.to_owned(),
        });
    }
    let mut text = out.join(" ");
    crate::redact::shorten(&mut text, 300);
    text
}

/// Whether spans reach the collector: the latest export's outcome in this process.
fn otlp_delivery() -> Outcome {
    match crate::telemetry::last_export() {
        None => Outcome {
            ok: false,
            observed: "no span batch has been exported yet by this process (batches go out every few seconds once requests have made spans), so delivery is not shown".into(),
        },
        Some(e) => match &e.error {
            None => Outcome {
                ok: true,
                observed: format!(
                    "the latest export ({} span(s), at {}) was accepted by the collector",
                    e.spans,
                    crate::clock::rfc3339_ms(e.at_ms)
                ),
            },
            Some(why) => Outcome {
                ok: false,
                observed: format!(
                    "the latest export ({} span(s), at {}) failed: {}",
                    e.spans,
                    crate::clock::rfc3339_ms(e.at_ms),
                    for_record(why)
                ),
            },
        },
    }
}

async fn audit_sink(gw: &Gateway, requested_by: &str) -> Outcome {
    let mut e = audit::Event::new("audit.probe");
    e.identity = Some(audit::Who::named(requested_by));
    e.reason = Some("self-audit: a required sink must accept this event".into());
    match gw.audit.record(e).await {
        Ok(()) => {
            let sinks: Vec<String> = gw
                .audit
                .sinks
                .iter()
                .map(|s| {
                    format!(
                        "{}{} (written {}, failed {}, failed flushes {})",
                        s.name,
                        if s.required { "" } else { ", best-effort" },
                        s.written.load(std::sync::atomic::Ordering::Relaxed),
                        s.failed.load(std::sync::atomic::Ordering::Relaxed),
                        s.flush_failures.load(std::sync::atomic::Ordering::Relaxed)
                    )
                })
                .collect();
            Outcome {
                ok: true,
                observed: format!(
                    "a probe event was accepted by a required sink; sinks: {}",
                    sinks.join("; ")
                ),
            }
        }
        Err(e) => Outcome {
            ok: false,
            observed: format!("a probe event was NOT recorded: {e}; tool calls are being refused"),
        },
    }
}

fn kill_switch(gw: &Gateway) -> Outcome {
    let (fresh, engaged, mode) = gw.levers.state();
    let age = gw
        .levers
        .state_age()
        .map_or("never".to_owned(), |a| format!("{} ms ago", a.as_millis()));
    let engaged: Vec<&str> = engaged.iter().map(|s| s.as_str()).collect();
    Outcome {
        ok: fresh,
        observed: format!(
            "state {} (read {age}, lease {} s); engaged switches: {}; mode in force: {}",
            if fresh {
                "readable"
            } else {
                "STALE: every call is refused"
            },
            gw.levers.lease().as_secs(),
            match engaged.is_empty() {
                true => "none".to_owned(),
                false => engaged.join(", "),
            },
            mode.as_str()
        ),
    }
}

/// Read the config file and compare it with the config in force.
fn config_file(gw: &Gateway) -> Option<Outcome> {
    let file = gw.reloads.file()?;
    let running = gw.registry().digest.clone();
    let last = match gw.reloads.last() {
        Some(a) => format!(
            "; last reload {} (file digest {}): {}",
            crate::clock::rfc3339_ms(a.at_ms),
            a.digest,
            a.outcome
        ),
        None => "; not reloaded since start".to_owned(),
    };
    Some(match crate::reload::file_digest(file) {
        Ok(d) if d == running => Outcome {
            ok: true,
            observed: format!(
                "`{}` is the config in force ({running}){last}",
                file.display()
            ),
        },
        Ok(d) => Outcome {
            ok: false,
            observed: format!(
                "`{}` is {d}, the config in force is {running}{last}",
                file.display()
            ),
        },
        Err(e) => Outcome {
            ok: false,
            observed: format!(
                "`{}` cannot be read ({e}); the config in force is {running}{last}",
                file.display()
            ),
        },
    })
}

fn upstreams(gw: &Gateway) -> Vec<(String, Outcome)> {
    let live = gw.live();
    live.registry
        .servers
        .iter()
        .map(|server| {
            let Some(up) = live.upstreams.get(&server.name) else {
                return (
                    server.name.clone(),
                    Outcome {
                        ok: false,
                        observed: "not started".into(),
                    },
                );
            };
            if !up.is_connected() {
                return (
                    server.name.clone(),
                    Outcome {
                        ok: false,
                        observed: "not connected: its tools are unavailable".into(),
                    },
                );
            }
            let offered = up.tools();
            let missing: Vec<&str> = server
                .tools
                .keys()
                .filter(|t| offered.named(t).is_none())
                .map(String::as_str)
                .collect();
            let held = up.quarantine();
            let outcome = match (missing.is_empty(), held.is_empty()) {
                (_, false) => Outcome {
                    ok: false,
                    observed: format!(
                        "connected; quarantined tool(s): {}",
                        held.iter()
                            .map(|(t, q)| format!("{t} ({})", q.why))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                },
                (true, true) => Outcome {
                    ok: true,
                    observed: format!(
                        "connected; offers all {} allowlisted tool(s)",
                        server.tools.len()
                    ),
                },
                (false, true) => Outcome {
                    ok: false,
                    observed: format!(
                        "connected; does not offer allowlisted tool(s): {}",
                        missing.join(", ")
                    ),
                },
            };
            // Tools served although their text addresses the model: an operator confirmed
            // them at pin time, and a reviewer should know.
            let instructed: Vec<String> = offered
                .iter()
                .filter_map(|o| {
                    let def = serde_json::to_value(&o.tool).ok()?;
                    let (at, what) = registry::instructions_in_definition(&def)?;
                    Some(format!("{} (`{what}` at `{at}`)", o.tool.name))
                })
                .collect();
            // Tools the upstream's own annotations raise above their configured class.
            let raised: Vec<String> = offered
                .iter()
                .filter_map(|o| {
                    let entry = server.tools.get(o.tool.name.as_ref())?;
                    let def = serde_json::to_value(&o.tool).ok()?;
                    let (to, said) = registry::raised_class(entry.class, &def)?;
                    Some(format!("{} ({} -> {to}, `{said}`)", o.tool.name, entry.class))
                })
                .collect();
            let outcome = match raised.is_empty() {
                true => outcome,
                false => Outcome {
                    ok: outcome.ok,
                    observed: format!(
                        "{}; class raised by the upstream's annotations: {}",
                        outcome.observed,
                        raised.join("; ")
                    ),
                },
            };
            let outcome = match instructed.is_empty() {
                true => outcome,
                false => Outcome {
                    ok: outcome.ok,
                    observed: format!(
                        "{}; instruction-like text in served tool(s), pinned on an operator's confirmation: {}",
                        outcome.observed,
                        instructed.join("; ")
                    ),
                },
            };
            (server.name.clone(), outcome)
        })
        .collect()
}
