use policy::{Approval, ArgumentsDigest, Decision, Identity, Level, Request, Target, ToolClass};

use crate::load_str;
use crate::testing::problems;

const SERVERS: &str = "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools:\n      search: { class: read }\n      delete: { class: destructive }\n";

#[test]
fn grants_compile_into_the_policy() {
    let text = format!(
        "{SERVERS}identity:\n  require: [org]\ngrants:\n  org:acme: [\"notes/*\"]\n  team:ops:\n    allow: [\"notes/*\"]\n    deny: [\"notes/delete\"]\napprovals: {{ required_from: destructive }}\n"
    );
    let r = load_str("t.yaml", &text).unwrap();
    let policy = &r.access.policy;
    assert!(policy.requires(Level::Org));
    assert_eq!(policy.approval(), Approval::From(ToolClass::Destructive));
    let id = Identity::new()
        .with_name(Level::Org, "acme")
        .with_name(Level::Team, "ops");
    let ask = |tool| Request {
        server: "notes",
        target: Target::Tool(tool),
        class: ToolClass::Read,
        arguments: ArgumentsDigest([0; 32]),
    };
    assert_eq!(
        policy::decide(policy, &id, &ask("search"), 0),
        Decision::Allow
    );
    assert!(!policy::decide(policy, &id, &ask("delete"), 0).is_visible());
}

#[test]
fn grant_problems_name_the_line_and_fix() {
    let text = format!(
        "{SERVERS}grants:\n  org:acme: [\"notes/Search\", \"files/*\", \"notes\"]\n  tenant:x: [\"notes/*\"]\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 4, "{p:#?}");
    assert!(
        p[0].starts_with("t.yaml:8:14: `grants.org:acme[0]`: `notes/Search` names tool `Search`"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains("names server `files`, which is not configured"),
        "{}",
        p[1]
    );
    assert!(
        p[2].contains("is not `server/tool` or `server/*`"),
        "{}",
        p[2]
    );
    assert!(
        p[3].starts_with("t.yaml:9:3: `grants.tenant:x`: `tenant:x` is not a principal"),
        "{}",
        p[3]
    );
}

#[test]
fn oidc_issuers_are_checked() {
    let text = format!(
        "{SERVERS}identity:\n  require: [tenant]\n  oidc:\n    - issuer: http://idp.example.com\n      algorithms: [RS256, none, HS256]\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 5, "{p:#?}");
    assert!(p[0].contains("unknown identity level `tenant`"), "{}", p[0]);
    assert!(p[1].contains("is not an https URL"), "{}", p[1]);
    assert!(
        p[2].contains("`none` refused: unsigned tokens are never accepted"),
        "{}",
        p[2]
    );
    assert!(p[3].contains("`HS256` refused: HMAC"), "{}", p[3]);
    assert!(p[4].contains("has no `claims` mapping"), "{}", p[4]);

    let ok = format!(
        "{SERVERS}identity:\n  oidc:\n    - issuer: http://127.0.0.1:4000/\n      claims: {{ org: org, team: groups }}\n      scopes: [mcp]\n"
    );
    let r = load_str("t.yaml", &ok).unwrap();
    let idp = &r.access.oidc[0];
    assert_eq!(idp.issuer, "http://127.0.0.1:4000");
    assert_eq!(idp.algorithms, ["RS256", "PS256", "ES256", "EdDSA"]);
    assert_eq!(idp.claims.team.as_deref(), Some("groups"));
    assert_eq!(idp.scopes, ["mcp"]);
}

#[test]
fn operator_argument_schemas_must_compile() {
    let text = "servers:\n  notes:\n    url: https://notes.example.com/mcp\n    tools:\n      search:\n        class: read\n        arguments: { type: object, properties: { q: { type: strin } } }\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("t.yaml:7:20: `servers.notes.tools.search.arguments`"),
        "{}",
        p[0]
    );
    let ok = text.replace("strin", "string");
    let r = load_str("t.yaml", &ok).unwrap();
    assert!(r.servers[0].tools["search"].arguments.is_some());
}

#[test]
fn loopback_http_is_the_only_plain_http() {
    use super::secure_url;
    assert!(secure_url("https://idp.example.com"));
    assert!(secure_url("http://127.0.0.1:4000"));
    assert!(secure_url("http://localhost/realms/x"));
    assert!(secure_url("http://[::1]:80"));
    assert!(!secure_url("http://10.0.0.1"));
    assert!(!secure_url("http://127.0.0.1.example.com"));
    assert!(!secure_url("ftp://127.0.0.1"));
}
