//! Entry points for the fuzz targets in `policy/fuzz/`, built only under `cfg(fuzzing)` or in
//! tests, where the seed corpora run as ordinary unit tests.
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts the properties that
//! must hold for any input.

use crate::grants::{GrantTable, Pattern, Rules, Target};
use crate::identity::{Binding, Identity, Level};
use crate::token::{ClaimMap, Expectations, check_registered, map_claims, parse_compact};
use crate::{Approval, ArgumentsDigest, Decision, Policy, Request, ToolClass, decide};
use crate::{is_wire_tool_name, split_federated};

/// Token and claims parsing: split, decode, check registered claims, map claims to levels.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jws) = parse_compact(text) else {
        return;
    };
    assert!(jws.signing_input.len() < text.len());
    assert!(!jws.header.alg.is_empty());
    let expect = Expectations {
        issuer: "https://idp.example",
        audience: "http://127.0.0.1:8080",
        leeway: 600,
    };
    if let Ok(exp) = check_registered(&jws.claims, &expect, 1_800_000_000) {
        assert!(exp + 60 > 1_800_000_000, "leeway was not capped");
    }
    let map = ClaimMap {
        org: Some("org".into()),
        team: Some("groups".into()),
        user: Some("sub".into()),
        agent: Some("azp".into()),
    };
    let levels = map_claims(&jws.claims, &map);
    assert_eq!(levels.key, Binding::Absent);
    for level in Level::ALL {
        if let Binding::Resolved(names) = levels.get(level) {
            assert!(!names.is_empty());
            assert!(level == Level::Team || names.len() == 1);
        }
    }
}

/// Tool-name matching: a grant pattern and a name, separated by a zero byte. A grant reaches a
/// tool only when both parts are byte-for-byte equal, whatever the bytes.
pub fn tool_name(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(p), Some(n)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(pattern), Ok(name)) = (std::str::from_utf8(p), std::str::from_utf8(n)) else {
        return;
    };
    if let Some(f) = split_federated(name) {
        assert_eq!(format!("{}__{}", f.server, f.name), name);
        assert!(!f.server.is_empty() && !f.name.is_empty());
    }
    if is_wire_tool_name(name) {
        assert!(name.bytes().all(|b| b.is_ascii()));
    }
    let Ok(parsed) = pattern.parse::<Pattern>() else {
        return;
    };
    assert_eq!(
        parsed.to_string().parse::<Pattern>().ok(),
        Some(parsed.clone())
    );
    let Some(f) = split_federated(name) else {
        return;
    };
    let expected = match &parsed {
        Pattern::Server(s) => s == f.server,
        Pattern::Tool(s, t) => s == f.server && t == f.name,
    };
    let mut grants = GrantTable::new();
    grants.rules_mut(Level::Key, "k").allow(parsed.clone());
    let policy = Policy::new(grants, &[], Approval::Never);
    let identity = Identity::new().with(Level::Key, Binding::Resolved(vec!["k".into()]));
    let request = Request {
        server: f.server,
        target: Target::Tool(f.name),
        class: ToolClass::Read,
        arguments: ArgumentsDigest([0; 32]),
    };
    let decision = decide(&policy, &identity, &request, 0);
    assert_eq!(decision == Decision::Allow, expected, "{parsed} vs {name}");
    assert_eq!(
        Rules::pattern_matches(&parsed, f.server, request.target),
        expected
    );
}

#[cfg(test)]
mod tests;
