//! Fault injection on the operator and approval paths: a store that stops answering must refuse
//! the held call and the operator action, never let either through.

use std::sync::Arc;

use policy::{ArgumentsDigest, Identity, Level, ToolClass};
use serde_json::json;
use store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::approvals::HeldCall;
use crate::auth::Caller;
use crate::upstream::Upstreams;

const CONFIG: &str = "audit: { sinks: [{ type: file, path: AUDIT }] }\napprovals: { hold: 0s }\nservers:\n  notes:\n    builtin: notes\n    tools: { create_note: { class: write } }\n";

async fn gateway() -> (tempfile::TempDir, Store, Arc<Gateway>, CancellationToken) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("g.db").display()))
        .await
        .unwrap();
    let config = CONFIG.replace("AUDIT", &dir.path().join("a.jsonl").display().to_string());
    let reg = Arc::new(registry::load_str("t.yaml", &config).unwrap());
    let stop = CancellationToken::new();
    let ups = Upstreams::start(
        &reg.servers,
        crate::upstream::UpstreamSetup {
            secrets: Arc::new(crate::secrets::Secrets::new(None).unwrap()),
            minter: Arc::new(crate::credentials::Minter::new(Arc::new(
                crate::secrets::Secrets::new(None).unwrap(),
            ))),
            cache: std::env::temp_dir(),
            profile: reg.settings.profile,
            audit: None,
        },
        stop.clone(),
    );
    let audit = audit::Audit::open(&reg.settings.audit, &store, "test", &reg.digest)
        .await
        .unwrap();
    let gw = Gateway::new(
        reg,
        store.clone(),
        Arc::new(audit),
        ups,
        "127.0.0.1:1".parse().unwrap(),
        crate::session::seal::Sealer::ephemeral().unwrap(),
    );
    gw.levers.refresh().await.unwrap();
    (dir, store, Arc::new(gw), stop)
}

fn admin() -> Operator {
    Operator {
        subject: "key:op".into(),
        name: "op".into(),
        user: Some("bob".into()),
        roles: Roles::of(KeyRole::Admin),
    }
}

#[tokio::test]
async fn a_held_call_is_refused_when_the_approval_state_cannot_be_read() {
    let (_d, store, gw, stop) = gateway().await;
    let caller = Caller {
        subject: "key:alice".into(),
        identity: Arc::new(Identity::new().with_name(Level::Key, "alice")),
        endpoint: None,
        token: None,
    };
    let arguments = json!({ "title": "t" });
    let held = HeldCall {
        caller: &caller,
        server: "notes",
        tool: "create_note",
        name: "notes__create_note",
        class: ToolClass::Write,
        fingerprint: "f",
        arguments: &arguments,
        digest: &ArgumentsDigest([7; 32]),
    };
    let (client, _rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    // Healthy store: held, with a request id.
    let e = crate::approvals::hold(&gw, &held, None, &cancel, &client)
        .await
        .unwrap_err()
        .answer()
        .unwrap_err();
    assert_eq!(e.data.as_ref().unwrap()["reason"], "approval_pending");
    // Fault: the store stops answering. The call is refused, not let through.
    store.close().await;
    let e = crate::approvals::hold(&gw, &held, None, &cancel, &client)
        .await
        .unwrap_err()
        .answer()
        .unwrap_err();
    assert_eq!(
        e.data.as_ref().unwrap()["reason"],
        "approval_unavailable",
        "{e:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn an_operator_action_that_cannot_be_recorded_is_not_taken() {
    let (_d, store, gw, stop) = gateway().await;
    store.close().await;
    let r = set_kill(&gw, &admin(), "global", None, false, "drill").await;
    assert!(matches!(r, Err(OpError::Unavailable(_))), "{r:?}");
    let r = set_mode(&gw, &admin(), "shadow", "drill").await;
    assert!(matches!(r, Err(OpError::Unavailable(_))), "{r:?}");
    // Nothing changed in this process either.
    assert_eq!(gw.levers.mode_now(), registry::Mode::Enforce);
    let r = decide_approval(&gw, &admin(), "apr_x", true, "ok").await;
    assert!(matches!(r, Err(OpError::Unavailable(_))), "{r:?}");
    stop.cancel();
}

#[tokio::test]
async fn nobody_decides_their_own_request() {
    let (_d, store, gw, stop) = gateway().await;
    let principals = ["key:alice".to_owned(), "user:bob".to_owned()];
    let rec = store
        .create_approval(&store::NewApproval {
            key: store::ApprovalKey {
                requester: "key:alice",
                server: "notes",
                tool: "create_note",
                arguments: "d",
                fingerprint: "f",
            },
            principals: &principals,
            class: "write",
            preview: "{}",
            target: None,
            ttl_ms: 60_000,
        })
        .await
        .unwrap();
    // Bob (as the end user behind alice's key) may not approve it, nor deny it.
    for approve in [true, false] {
        let r = decide_approval(&gw, &admin(), &rec.id, approve, "mine").await;
        assert!(matches!(r, Err(OpError::Forbidden(_))), "{r:?}");
    }
    let carol = Operator {
        user: Some("carol".into()),
        ..admin()
    };
    assert!(
        decide_approval(&gw, &carol, &rec.id, true, "ok")
            .await
            .is_ok()
    );
    stop.cancel();
}
