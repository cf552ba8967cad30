use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::seal::Sealer;
use super::*;

fn caller(subject: &str) -> Caller {
    Caller {
        subject: subject.into(),
        identity: Arc::new(policy::Identity::new()),
        endpoint: None,
        token: None,
    }
}

async fn store(dir: &tempfile::TempDir) -> store::Store {
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    store::Store::open(&url).await.unwrap()
}

fn sessions(key: &[u8]) -> Sessions {
    Sessions::new(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Sealer::new([key]).unwrap(),
    )
}

#[tokio::test]
async fn another_process_takes_a_session_up_only_for_its_caller_and_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let key = [5u8; 32];
    let (a, b) = (sessions(&key), sessions(&key));
    let alice = caller("key:alice");
    let made = a
        .create(
            &alice,
            Scope::Federated,
            "2025-11-25".into(),
            json!({"roots": {}}),
        )
        .unwrap();
    assert!(
        b.get(&made.id, &alice, &Scope::Federated).is_none(),
        "not held by b yet"
    );
    let taken = b
        .find(&store, &made.id, &alice, &Scope::Federated)
        .await
        .unwrap();
    assert_eq!(
        (taken.protocol_version.as_str(), taken.expires_ms),
        ("2025-11-25", made.expires_ms)
    );
    assert_eq!(taken.client.client_capabilities, json!({"roots": {}}));
    // Another subject, another endpoint, another key ring: no session.
    assert!(
        b.find(&store, &made.id, &caller("key:mallory"), &Scope::Federated)
            .await
            .is_none()
    );
    let c = sessions(&key);
    assert!(
        c.find(&store, &made.id, &alice, &Scope::Server("notes".into()))
            .await
            .is_none()
    );
    assert!(
        sessions(&[6u8; 32])
            .find(&store, &made.id, &alice, &Scope::Federated)
            .await
            .is_none()
    );
    // Ended by its client through one process: no process takes it up again, and one that
    // holds it lets go.
    store
        .end_session(&stored_name(&made.id), made.expires_ms)
        .await
        .unwrap();
    assert!(
        c.find(&store, &made.id, &alice, &Scope::Federated)
            .await
            .is_none()
    );
    b.forget_ended(&[stored_name(&made.id)]);
    assert!(b.get(&made.id, &alice, &Scope::Federated).is_none());
}

#[tokio::test]
async fn a_store_that_cannot_say_whether_a_session_ended_takes_nothing_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let key = [5u8; 32];
    let alice = caller("key:alice");
    let made = sessions(&key)
        .create(&alice, Scope::Federated, "2025-11-25".into(), json!({}))
        .unwrap();
    store.close().await;
    let other = sessions(&key);
    assert!(
        other
            .find(&store, &made.id, &alice, &Scope::Federated)
            .await
            .is_none()
    );
    assert_eq!(other.len(), 0);
}
