//! Decision cases, one table: who asks, for what, and the outcome with its reason.

use super::*;
use crate::grants::Pattern;

const DIGEST: ArgumentsDigest = ArgumentsDigest([7; 32]);

fn policy(required: &[Level], approval: Approval) -> Policy {
    let mut g = GrantTable::new();
    let mut add = |level, name: &str, allow: &[&str], deny: &[&str]| {
        let rules = g.rules_mut(level, name);
        for p in allow {
            rules.allow(p.parse::<Pattern>().unwrap());
        }
        for p in deny {
            rules.deny(p.parse::<Pattern>().unwrap());
        }
    };
    add(Level::Org, "acme", &["notes/*", "files/*"], &["files/wipe"]);
    add(
        Level::Team,
        "research",
        &["notes/search", "notes/create", "files/read"],
        &[],
    );
    add(Level::Team, "ops", &["notes/*"], &[]);
    add(Level::Team, "quiet", &[], &[]);
    add(Level::Agent, "ci-bot", &["notes/search"], &[]);
    add(Level::User, "*", &["notes/*", "files/*"], &[]);
    add(Level::User, "mallory", &["notes/*"], &["notes/*"]);
    Policy::new(g, required, approval)
}

fn ask<'a>(server: &'a str, tool: Option<&'a str>, class: ToolClass) -> Request<'a> {
    Request {
        server,
        target: tool.map_or(Target::Server, Target::Tool),
        class,
        arguments: DIGEST,
    }
}

/// `expected`: `allow`, `approval`, or `deny <level|-> <reason>`.
#[track_caller]
fn check(policy: &Policy, identity: &Identity, request: Request<'_>, expected: &str) {
    let got = match decide(policy, identity, &request, 1_000) {
        Decision::Allow => "allow".to_owned(),
        Decision::NeedsApproval { arguments, .. } => {
            assert_eq!(arguments, DIGEST);
            "approval".to_owned()
        }
        Decision::Deny(d) => {
            let reason = match d.reason {
                DenyReason::NoIdentity => "no-identity",
                DenyReason::Expired => "expired",
                DenyReason::Unresolved => "unresolved",
                DenyReason::Fault(_) => "fault",
                DenyReason::Internal(_) => "internal",
                DenyReason::ExplicitDeny => "explicit",
                DenyReason::NotGranted => "not-granted",
            };
            let level = d.level.map_or("-", Level::as_str);
            format!("deny {level} {reason}")
        }
    };
    assert_eq!(got, expected);
}

fn acme_research() -> Identity {
    Identity::new()
        .with_name(Level::Org, "acme")
        .with_name(Level::Team, "research")
}

#[test]
fn intersection_of_levels() {
    let p = policy(&[], Approval::From(ToolClass::Write));
    let id = acme_research();
    check(
        &p,
        &id,
        ask("notes", Some("search"), ToolClass::Read),
        "allow",
    );
    check(
        &p,
        &id,
        ask("notes", Some("create"), ToolClass::Write),
        "approval",
    );
    check(
        &p,
        &id,
        ask("notes", Some("delete"), ToolClass::Destructive),
        "deny team not-granted",
    );
    check(
        &p,
        &id,
        ask("files", Some("read"), ToolClass::Read),
        "allow",
    );
    check(
        &p,
        &id,
        ask("files", Some("wipe"), ToolClass::Read),
        "deny org explicit",
    );
    check(
        &p,
        &id,
        ask("other", Some("read"), ToolClass::Read),
        "deny org not-granted",
    );
    // Resources and prompts need `server/*` at every level; research has only single tools.
    check(
        &p,
        &id,
        ask("notes", None, ToolClass::Read),
        "deny team not-granted",
    );
    // More identity narrows: the agent level only grants search.
    let bot = acme_research().with_name(Level::Agent, "ci-bot");
    check(
        &p,
        &bot,
        ask("notes", Some("search"), ToolClass::Read),
        "allow",
    );
    check(
        &p,
        &bot,
        ask("notes", Some("create"), ToolClass::Write),
        "deny agent not-granted",
    );
    // A resolved level with no grants contributes nothing.
    let unknown = acme_research().with_name(Level::Agent, "stranger");
    check(
        &p,
        &unknown,
        ask("notes", Some("search"), ToolClass::Read),
        "deny agent not-granted",
    );
    let quiet = Identity::new().with_name(Level::Team, "quiet");
    check(
        &p,
        &quiet,
        ask("notes", Some("search"), ToolClass::Read),
        "deny team not-granted",
    );
}

#[test]
fn teams_pool_within_their_level() {
    let p = policy(&[], Approval::Never);
    let both = Identity::new().with_name(Level::Org, "acme").with(
        Level::Team,
        Binding::Resolved(vec!["research".into(), "ops".into()]),
    );
    check(
        &p,
        &both,
        ask("notes", Some("delete"), ToolClass::Destructive),
        "allow",
    );
    check(
        &p,
        &both,
        ask("files", Some("read"), ToolClass::Read),
        "allow",
    );
}

#[test]
fn user_default_and_explicit_deny() {
    let p = policy(&[], Approval::Never);
    let alice = acme_research().with_name(Level::User, "alice");
    check(
        &p,
        &alice,
        ask("notes", Some("search"), ToolClass::Read),
        "allow",
    );
    let mallory = acme_research().with_name(Level::User, "mallory");
    check(
        &p,
        &mallory,
        ask("notes", Some("search"), ToolClass::Read),
        "deny user explicit",
    );
}

#[test]
fn required_levels_faults_and_empties_deny() {
    let p = policy(&[Level::Org, Level::Team], Approval::Never);
    let no_team = Identity::new().with_name(Level::Org, "acme");
    check(
        &p,
        &no_team,
        ask("notes", Some("search"), ToolClass::Read),
        "deny team unresolved",
    );
    let faulty = acme_research().with(Level::Agent, Binding::Fault("claim `azp` is 42".into()));
    check(
        &p,
        &faulty,
        ask("notes", Some("search"), ToolClass::Read),
        "deny agent fault",
    );
    let empty = acme_research().with(Level::User, Binding::Resolved(vec![]));
    check(
        &p,
        &empty,
        ask("notes", Some("search"), ToolClass::Read),
        "deny user internal",
    );
    let p = policy(&[], Approval::Never);
    check(
        &p,
        &Identity::new(),
        ask("notes", Some("search"), ToolClass::Read),
        "deny - no-identity",
    );
}

#[test]
fn expiry_is_checked_against_the_given_time() {
    let p = policy(&[], Approval::Never);
    let id = acme_research().expiring_at(1_000);
    check(
        &p,
        &id,
        ask("notes", Some("search"), ToolClass::Read),
        "deny - expired",
    );
    let id = acme_research().expiring_at(1_001);
    check(
        &p,
        &id,
        ask("notes", Some("search"), ToolClass::Read),
        "allow",
    );
}

#[test]
fn key_rules_replace_the_key_level_entry() {
    let p = policy(&[], Approval::Never);
    let key = acme_research()
        .with_name(Level::Key, "k1")
        .with_key_rules(Rules::granting(["notes/search".parse().unwrap()]));
    check(
        &p,
        &key,
        ask("notes", Some("search"), ToolClass::Read),
        "allow",
    );
    check(
        &p,
        &key,
        ask("notes", Some("create"), ToolClass::Write),
        "deny key not-granted",
    );
    // A key without its own rules and without a config entry grants nothing.
    let bare = acme_research().with_name(Level::Key, "k2");
    check(
        &p,
        &bare,
        ask("notes", Some("search"), ToolClass::Read),
        "deny key not-granted",
    );
}

#[test]
fn names_compare_byte_for_byte() {
    let p = policy(&[], Approval::Never);
    let id = acme_research();
    for name in [
        "Search",
        "search\u{200b}",
        "ѕearch",
        "search ",
        "notes/search",
    ] {
        check(
            &p,
            &id,
            ask("notes", Some(name), ToolClass::Read),
            "deny team not-granted",
        );
    }
}

#[test]
fn denial_messages_name_the_level() {
    let p = policy(&[], Approval::Never);
    let Decision::Deny(d) = decide(
        &p,
        &acme_research(),
        &ask("files", Some("wipe"), ToolClass::Read),
        0,
    ) else {
        panic!("allowed");
    };
    assert_eq!(d.to_string(), "org:acme explicitly denies it");
}
