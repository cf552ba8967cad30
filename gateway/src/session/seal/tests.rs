use proptest::prelude::*;
use serde_json::json;

use super::*;

fn claims(expires_ms: i64) -> Claims {
    Claims {
        subject: "key:0123456789abcdef".into(),
        server: Some("notes".into()),
        protocol_version: "2025-11-25".into(),
        capabilities: json!({"sampling": {}, "roots": {"listChanged": true}}),
        expires_ms,
    }
}

#[test]
fn an_id_opens_on_any_ring_holding_its_key_until_it_expires() {
    let old = [7u8; 32];
    let new = [9u8; 32];
    let a = Sealer::new([old.as_slice()]).unwrap();
    let id = a.seal(&claims(1_000)).unwrap();
    assert!(id.starts_with("ps1.") && id.bytes().all(|b| b.is_ascii_graphic()));
    // Another replica with the same key opens it; after a rotation too.
    let b = Sealer::new([old.as_slice()]).unwrap();
    assert_eq!(b.open(&id, 999), Some(claims(1_000)));
    let rotated = Sealer::new([new.as_slice(), old.as_slice()]).unwrap();
    assert_eq!(rotated.open(&id, 999), Some(claims(1_000)));
    // Sealing uses the first key: the old ring cannot open what the rotated one seals.
    let fresh = rotated.seal(&claims(1_000)).unwrap();
    assert_eq!(a.open(&fresh, 0), None);
    // Expired, or the old key dropped: no session.
    assert_eq!(b.open(&id, 1_000), None);
    assert_eq!(Sealer::new([new.as_slice()]).unwrap().open(&id, 0), None);
}

/// A sealed text names its key: a ring holding it says so, another ring, another purpose's
/// prefix, an altered key id and text that is not sealed at all do not.
#[test]
fn a_sealed_text_names_a_key_only_of_the_ring_that_holds_it() {
    let (a, b) = ([7u8; 32], [9u8; 32]);
    let ring = Sealer::new([a.as_slice()]).unwrap();
    let sealed = ring.seal_bytes("x1.", b"held").unwrap();
    assert!(ring.has_key_of("x1.", &sealed));
    assert!(
        Sealer::new([b.as_slice(), a.as_slice()])
            .unwrap()
            .has_key_of("x1.", &sealed)
    );
    assert!(
        !Sealer::new([b.as_slice()])
            .unwrap()
            .has_key_of("x1.", &sealed)
    );
    assert!(!ring.has_key_of("x2.", &sealed));
    let first = &sealed[3..4];
    let other = if first == "A" { "B" } else { "A" };
    let altered = format!("x1.{other}{}", &sealed[4..]);
    assert!(!ring.has_key_of("x1.", &altered));
    assert!(!ring.has_key_of("x1.", "x1.!!"));
    assert!(!ring.has_key_of("x1.", ""));
}

#[test]
fn an_id_too_long_to_open_is_not_sealed() {
    let ring = Sealer::new([[1u8; 32].as_slice()]).unwrap();
    let mut long = claims(i64::MAX);
    long.subject = "x".repeat(5000);
    assert_eq!(ring.seal(&long), None);
}

#[test]
fn short_keys_are_refused() {
    assert!(Sealer::new([b"short".as_slice()]).is_err());
    assert!(Sealer::new(std::iter::empty()).is_err());
}

#[test]
fn large_capabilities_are_kept_by_name() {
    let big = json!({"sampling": {"x": "y".repeat(4000)}, "roots": {}});
    assert_eq!(
        capabilities_for_id(&big),
        json!({"sampling": {}, "roots": {}})
    );
    let small = json!({"elicitation": {"form": {}}});
    assert_eq!(capabilities_for_id(&small), small);
}

proptest! {
    /// No change to a sealed id opens: every altered character is a forgery.
    #[test]
    fn an_altered_id_never_opens(pos in 0usize..400, by in 1u8..64) {
        let ring = Sealer::new([[3u8; 32].as_slice()]).unwrap();
        let id = ring.seal(&claims(i64::MAX)).unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = id.clone().into_bytes();
        let at = 4 + pos % (bytes.len() - 4);
        let i = alphabet.iter().position(|c| *c == bytes[at]).unwrap();
        bytes[at] = alphabet[(i + usize::from(by)) % 64];
        let altered = String::from_utf8(bytes).unwrap();
        // The last character carries spare bits: an alteration there may decode the same.
        let same = URL_SAFE_NO_PAD.decode(&altered[4..]).ok() == URL_SAFE_NO_PAD.decode(&id[4..]).ok();
        prop_assume!(!same);
        prop_assert_eq!(ring.open(&altered, 0), None);
    }

    /// Arbitrary text is never a session.
    #[test]
    fn arbitrary_text_never_opens(text in ".{0,600}") {
        let ring = Sealer::new([[3u8; 32].as_slice()]).unwrap();
        prop_assert_eq!(ring.open(&text, 0), None);
        prop_assert_eq!(ring.open(&format!("ps1.{text}"), 0), None);
    }
}
