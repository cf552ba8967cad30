//! The algebra of decisions, as properties over generated policies and identities, plus a
//! differential test against a naive reference evaluator written from the rules' definition.

use proptest::prelude::*;

use policy::{
    Approval, ArgumentsDigest, Binding, Decision, GrantTable, Identity, Level, Pattern, Policy,
    Request, Rules, Target, ToolClass, decide,
};

const SERVERS: [&str; 3] = ["a", "b", "c"];
const TOOLS: [&str; 3] = ["x", "y", "z"];
const NAMES: [&str; 3] = ["p0", "p1", "p2"];

/// One pattern, allow or deny.
#[derive(Clone, Debug)]
struct Entry {
    deny: bool,
    pattern: Pattern,
}

/// A config in raw list form: per level, principal (or `*`) → entries.
#[derive(Clone, Debug)]
struct Raw {
    levels: Vec<(Level, String, Vec<Entry>)>,
    required: Vec<Level>,
    approval: Approval,
}

#[derive(Clone, Debug)]
struct RawIdentity {
    bindings: Vec<(Level, Binding)>,
    key_rules: Option<Vec<Pattern>>,
}

#[derive(Clone, Copy, Debug)]
struct Ask {
    server: &'static str,
    tool: Option<&'static str>,
    class: ToolClass,
}

fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        prop::sample::select(&SERVERS[..]).prop_map(|s| Pattern::Server(s.into())),
        (
            prop::sample::select(&SERVERS[..]),
            prop::sample::select(&TOOLS[..])
        )
            .prop_map(|(s, t)| Pattern::Tool(s.into(), t.into())),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (prop::bool::weighted(0.15), pattern()).prop_map(|(deny, pattern)| Entry { deny, pattern })
}

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(&Level::ALL[..])
}

fn class() -> impl Strategy<Value = ToolClass> {
    prop::sample::select(&[ToolClass::Read, ToolClass::Write, ToolClass::Destructive][..])
}

fn raw() -> impl Strategy<Value = Raw> {
    let principal = prop_oneof![4 => prop::sample::select(&NAMES[..]), 1 => Just("*")];
    let approval = prop_oneof![Just(Approval::Never), class().prop_map(Approval::From),];
    (
        prop::collection::vec(
            (level(), principal, prop::collection::vec(entry(), 0..5)),
            0..10,
        ),
        prop::collection::vec(level(), 0..2),
        approval,
    )
        .prop_map(|(levels, required, approval)| Raw {
            levels: levels
                .into_iter()
                .map(|(l, n, e)| (l, n.to_owned(), e))
                .collect(),
            required,
            approval,
        })
}

fn binding() -> impl Strategy<Value = Binding> {
    prop_oneof![
        3 => Just(Binding::Absent),
        6 => prop::collection::vec(prop::sample::select(&NAMES[..]), 1..3)
            .prop_map(|v| Binding::Resolved(v.into_iter().map(str::to_owned).collect())),
        1 => Just(Binding::Fault("injected".into())),
    ]
}

fn raw_identity() -> impl Strategy<Value = RawIdentity> {
    (
        prop::collection::vec((level(), binding()), 0..5),
        prop::option::weighted(0.3, prop::collection::vec(pattern(), 0..4)),
    )
        .prop_map(|(bindings, key_rules)| RawIdentity {
            bindings,
            key_rules,
        })
}

fn ask() -> impl Strategy<Value = Ask> {
    (
        prop::sample::select(&SERVERS[..]),
        prop::option::weighted(0.8, prop::sample::select(&TOOLS[..])),
        class(),
    )
        .prop_map(|(server, tool, class)| Ask {
            server,
            tool,
            class,
        })
}

// === building the engine's inputs ===

fn build(raw: &Raw) -> Policy {
    let mut table = GrantTable::new();
    for (level, name, entries) in &raw.levels {
        let rules = table.rules_mut(*level, name);
        for e in entries {
            match e.deny {
                true => rules.deny(e.pattern.clone()),
                false => rules.allow(e.pattern.clone()),
            }
        }
    }
    Policy::new(table, &raw.required, raw.approval)
}

fn identity(raw: &RawIdentity) -> Identity {
    let mut id = Identity::new();
    for (level, b) in &raw.bindings {
        id = id.with(*level, b.clone());
    }
    if let Some(k) = &raw.key_rules {
        id = id.with_key_rules(Rules::granting(k.iter().cloned()));
    }
    id
}

fn run(policy: &Policy, id: &Identity, ask: Ask) -> Decision {
    let req = Request {
        server: ask.server,
        target: ask.tool.map_or(Target::Server, Target::Tool),
        class: ask.class,
        arguments: ArgumentsDigest([1; 32]),
    };
    decide(policy, id, &req, 0)
}

/// Deny < NeedsApproval < Allow, for "never widens" comparisons.
fn rank(d: &Decision) -> u8 {
    match d {
        Decision::Deny(_) => 0,
        Decision::NeedsApproval { .. } => 1,
        Decision::Allow => 2,
    }
}

// === the reference evaluator: loops over raw lists, no indexes ===

fn reference(raw: &Raw, id: &RawIdentity, ask: Ask) -> u8 {
    // The last binding of a level wins, as with `Identity::with`.
    let binding = |l: Level| {
        id.bindings
            .iter()
            .rev()
            .find(|(lv, _)| *lv == l)
            .map_or(Binding::Absent, |(_, b)| b.clone())
    };
    let target = ask.tool.map_or(Target::Server, Target::Tool);
    let entries_for = |l: Level, name: &str| -> Vec<Entry> {
        if let (Level::Key, Some(k)) = (l, &id.key_rules) {
            return k
                .iter()
                .map(|p| Entry {
                    deny: false,
                    pattern: p.clone(),
                })
                .collect();
        }
        let named: Vec<Entry> = raw
            .levels
            .iter()
            .filter(|(lv, n, _)| *lv == l && n == name)
            .flat_map(|(_, _, e)| e.clone())
            .collect();
        let has_named = raw.levels.iter().any(|(lv, n, _)| *lv == l && n == name);
        if has_named {
            return named;
        }
        raw.levels
            .iter()
            .filter(|(lv, n, _)| *lv == l && n == "*")
            .flat_map(|(_, _, e)| e.clone())
            .collect()
    };
    let mut resolved = vec![];
    for l in Level::ALL {
        match binding(l) {
            Binding::Absent if raw.required.contains(&l) => return 0,
            Binding::Absent => {}
            Binding::Fault(_) => return 0,
            Binding::Resolved(n) if n.is_empty() => return 0,
            Binding::Resolved(n) => resolved.push((l, n)),
        }
    }
    if resolved.is_empty() {
        return 0;
    }
    let hits = |e: &Entry| Rules::pattern_matches(&e.pattern, ask.server, target);
    for (l, names) in &resolved {
        for n in names {
            if entries_for(*l, n).iter().any(|e| e.deny && hits(e)) {
                return 0;
            }
        }
    }
    for (l, names) in &resolved {
        let granted = names
            .iter()
            .any(|n| entries_for(*l, n).iter().any(|e| !e.deny && hits(e)));
        if !granted {
            return 0;
        }
    }
    match (raw.approval, ask.tool) {
        (Approval::From(min), Some(_)) if ask.class >= min => 1,
        _ => 2,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn agrees_with_reference(raw in raw(), id in raw_identity(), ask in ask()) {
        let got = run(&build(&raw), &identity(&id), ask);
        prop_assert_eq!(rank(&got), reference(&raw, &id, ask), "{:?}", got);
    }

    #[test]
    fn adding_a_level_never_widens(
        raw in raw(), id in raw_identity(), ask in ask(), extra in level(), b in binding(),
    ) {
        let policy = build(&raw);
        let built = identity(&id);
        let before = run(&policy, &built, ask);
        // Only a level that was absent is added; rebinding a level is not "adding" one. From no
        // level at all to one is not narrowing: the empty identity is denied outright (an
        // intersection over nothing would be everything). Resolving a required level lifts the
        // deny its absence forced; that is its purpose.
        let any_resolved = Level::ALL
            .iter()
            .any(|l| matches!(built.binding(*l), Binding::Resolved(_)));
        let applies = *built.binding(extra) == Binding::Absent
            && any_resolved
            && !raw.required.contains(&extra);
        if !applies {
            return Ok(());
        }
        let mut more = id.clone();
        more.bindings.push((extra, b));
        let after = run(&policy, &identity(&more), ask);
        prop_assert!(rank(&after) <= rank(&before), "{:?} widened to {:?}", before, after);
    }

    #[test]
    fn adding_a_deny_never_widens(
        raw in raw(), id in raw_identity(), ask in ask(), at in level(),
        name in prop::sample::select(&NAMES[..]), p in pattern(),
    ) {
        let before = run(&build(&raw), &identity(&id), ask);
        let mut more = raw.clone();
        more.levels.push((at, name.to_owned(), vec![Entry { deny: true, pattern: p }]));
        let after = run(&build(&more), &identity(&id), ask);
        prop_assert!(rank(&after) <= rank(&before), "{:?} widened to {:?}", before, after);
    }

    #[test]
    fn empty_grants_deny(raw in raw(), id in raw_identity(), ask in ask()) {
        let mut empty = raw.clone();
        for (_, _, entries) in &mut empty.levels {
            entries.retain(|e| e.deny);
        }
        let mut id = id;
        id.key_rules = None;
        let got = run(&build(&empty), &identity(&id), ask);
        prop_assert_eq!(rank(&got), 0, "{:?}", got);
    }

    #[test]
    fn order_and_duplicates_do_not_matter(
        raw in raw(), id in raw_identity(), ask in ask(), seed in any::<u64>(),
    ) {
        let before = run(&build(&raw), &identity(&id), ask);
        let mut shuffled = raw.clone();
        // Duplicate every principal's entries, then permute principals and entries.
        for (_, _, entries) in &mut shuffled.levels {
            let copy = entries.clone();
            entries.extend(copy);
            rotate(entries, seed);
        }
        let dup = shuffled.levels.clone();
        shuffled.levels.extend(dup);
        rotate(&mut shuffled.levels, seed / 7);
        let after = run(&build(&shuffled), &identity(&id), ask);
        prop_assert_eq!(before, after);
    }
}

fn rotate<T>(v: &mut [T], seed: u64) {
    if !v.is_empty() {
        let k = (seed % v.len() as u64) as usize;
        v.rotate_left(k);
        v.reverse();
    }
}
