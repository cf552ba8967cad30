use serde_json::json;

use super::*;

fn caps(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn only_what_the_client_declared_is_asked_of_it() {
    let declared = caps(json!({ "sampling": {}, "roots": {} }));
    let elicit = json!({ "method": "elicitation/create", "params": { "message": "name?" } });
    assert!(askable(&declared, &elicit).is_none());
    let roots = json!({ "method": "roots/list", "params": {} });
    assert_eq!(askable(&declared, &roots), Some(roots));
    let sample = json!({ "method": "sampling/createMessage", "params": { "messages": [], "maxTokens": 5, "includeContext": "allServers" } });
    let asked = askable(&declared, &sample).unwrap();
    assert_eq!(asked["params"]["includeContext"], "none");
    assert!(askable(&declared, &json!({ "method": "ping" })).is_none());
    assert!(askable(&declared, &json!({ "params": {} })).is_none());
}

#[test]
fn url_elicitation_needs_its_own_declaration() {
    let url = json!({ "method": "elicitation/create", "params": { "mode": "url", "url": "https://x", "message": "m", "elicitationId": "e" } });
    assert!(askable(&caps(json!({ "elicitation": {} })), &url).is_none());
    assert!(askable(&caps(json!({ "elicitation": { "url": {} } })), &url).is_some());
}

#[test]
fn a_sealed_state_round_trips_and_any_other_bytes_do_not_open() {
    let sealer = crate::session::seal::Sealer::ephemeral().unwrap();
    let bound = Bound {
        subject: "key:ci".into(),
        endpoint: Some("fx".into()),
        method: "tools/call".into(),
        server: "fx".into(),
        target: "echo".into(),
        digest: "00".into(),
        upstream: Some("up-state".into()),
        expires_ms: 1,
    };
    let sealed = sealer
        .seal_bytes(PREFIX, &serde_json::to_vec(&bound).unwrap())
        .unwrap();
    let opened: Bound =
        serde_json::from_slice(&sealer.open_bytes(PREFIX, &sealed).unwrap()).unwrap();
    assert_eq!(opened, bound);
    // Altered anywhere, or under another purpose's prefix: nothing opens.
    for at in [PREFIX.len() + 2, PREFIX.len() + 20, sealed.len() - 1] {
        let mut altered = sealed.clone().into_bytes();
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(sealer.open_bytes(PREFIX, &altered).is_none(), "{at}");
    }
    assert!(
        sealer
            .open_bytes(PREFIX, &format!("{sealed}-TAMPERED"))
            .is_none()
    );
    let as_session = sealed.replacen(PREFIX, "ps1.", 1);
    assert!(sealer.open_bytes("ps1.", &as_session).is_none());
    // Another ring (another deployment, a dropped key) opens nothing.
    let other = crate::session::seal::Sealer::ephemeral().unwrap();
    assert!(other.open_bytes(PREFIX, &sealed).is_none());
}
