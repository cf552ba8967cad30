use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::session::seal::Sealer;

fn caps(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn only_what_the_client_declared_is_asked_of_it() {
    let declared = caps(json!({ "sampling": {}, "roots": {} }));
    let elicit = json!({ "method": "elicitation/create", "params": { "message": "name?" } });
    assert_eq!(
        askable(&declared, &elicit),
        Err(Some(("elicitation", json!({}))))
    );
    let roots = json!({ "method": "roots/list", "params": {} });
    assert_eq!(askable(&declared, &roots), Ok(roots));
    let sample = json!({ "method": "sampling/createMessage", "params": { "messages": [], "maxTokens": 5, "includeContext": "allServers" } });
    let asked = askable(&declared, &sample).unwrap();
    assert_eq!(asked["params"]["includeContext"], "none");
    assert_eq!(askable(&declared, &json!({ "method": "ping" })), Err(None));
    assert_eq!(askable(&declared, &json!({ "params": {} })), Err(None));
}

#[test]
fn url_elicitation_needs_its_own_declaration() {
    let url = json!({ "method": "elicitation/create", "params": { "mode": "url", "url": "https://x", "message": "m", "elicitationId": "e" } });
    assert_eq!(
        askable(&caps(json!({ "elicitation": {} })), &url),
        Err(Some(("elicitation", json!({ "url": {} }))))
    );
    assert!(askable(&caps(json!({ "elicitation": { "url": {} } })), &url).is_ok());
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
        asked: vec!["confirm".into()],
        expires_ms: 1,
    };
    let sealed = sealer
        .seal_bytes(PREFIX, &serde_json::to_vec(&bound).unwrap())
        .unwrap();
    let opened: Bound =
        serde_json::from_slice(&sealer.open_bytes(PREFIX, &sealed).unwrap()).unwrap();
    assert_eq!(opened, bound);
    // Altered anywhere, or under another purpose's prefix: nothing opens.
    for at in [PREFIX.len() + 2, PREFIX.len() + 20, sealed.len() / 2] {
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

fn sealed_state(ring: &Sealer) -> String {
    let bound = Bound {
        subject: "key:ci".into(),
        endpoint: None,
        method: "prompts/get".into(),
        server: "fx".into(),
        target: "greet".into(),
        digest: "ab".repeat(32),
        upstream: Some("opaque".into()),
        asked: Vec::new(),
        expires_ms: i64::MAX,
    };
    ring.seal_bytes(PREFIX, &serde_json::to_vec(&bound).unwrap())
        .unwrap()
}

proptest! {
    /// No change to a sealed state opens: every altered character is a forgery.
    #[test]
    fn an_altered_state_never_opens(pos in 0usize..600, by in 1u8..64) {
        let ring = Sealer::new([[7u8; 32].as_slice()]).unwrap();
        let state = sealed_state(&ring);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = state.clone().into_bytes();
        let at = PREFIX.len() + pos % (bytes.len() - PREFIX.len());
        let i = alphabet.iter().position(|c| *c == bytes[at]).unwrap();
        bytes[at] = alphabet[(i + usize::from(by)) % 64];
        let altered = String::from_utf8(bytes).unwrap();
        // The last character carries spare bits: an alteration there may decode the same.
        let body = |s: &str| URL_SAFE_NO_PAD.decode(&s[PREFIX.len()..]).ok();
        prop_assume!(body(&altered) != body(&state));
        prop_assert_eq!(ring.open_bytes(PREFIX, &altered), None);
    }

    /// Arbitrary text is never a state, and never a session id's claims either way round.
    #[test]
    fn arbitrary_text_never_opens(text in ".{0,600}") {
        let ring = Sealer::new([[7u8; 32].as_slice()]).unwrap();
        prop_assert_eq!(ring.open_bytes(PREFIX, &text), None);
        prop_assert_eq!(ring.open_bytes(PREFIX, &format!("{PREFIX}{text}")), None);
        prop_assert_eq!(ring.open(&sealed_state(&ring).replacen(PREFIX, "ps1.", 1), 0), None);
    }
}

#[test]
fn finer_declarations_are_respected() {
    // A client that names only URL mode is not asked a form.
    let form = json!({ "method": "elicitation/create", "params": { "message": "name?" } });
    assert_eq!(
        askable(&caps(json!({ "elicitation": { "url": {} } })), &form),
        Err(Some(("elicitation", json!({ "form": {} }))))
    );
    assert!(askable(&caps(json!({ "elicitation": { "form": {} } })), &form).is_ok());
    // Sampling with tools needs `sampling.tools`.
    let tooled = json!({ "method": "sampling/createMessage", "params": { "messages": [], "maxTokens": 5, "tools": [] } });
    assert_eq!(
        askable(&caps(json!({ "sampling": {} })), &tooled),
        Err(Some(("sampling", json!({ "tools": {} }))))
    );
    assert!(askable(&caps(json!({ "sampling": { "tools": {} } })), &tooled).is_ok());
}
