//! `decide()` with 10,000 grants: latency percentiles per decision.
//!
//! Run with `cargo bench -p policy --bench decide`. Each sample times a batch of decisions and
//! divides, so the clock's own cost is spread out; p50 and p99 are over batches.

#![expect(
    clippy::indexing_slicing,
    reason = "a benchmark harness, not the request path"
)]

use std::hint::black_box;
use std::time::Instant;

use policy::{
    Approval, ArgumentsDigest, Binding, GrantTable, Identity, Level, Pattern, Policy, Request,
    Rules, Target, ToolClass, decide,
};

const SERVERS: usize = 50;
const TOOLS: usize = 40;
const BATCH: usize = 64;
const SAMPLES: usize = 20_000;

fn tool_pattern(i: usize) -> Pattern {
    Pattern::Tool(
        format!("s{}", i % SERVERS),
        format!("t{}", (i / SERVERS) % TOOLS),
    )
}

fn main() {
    // 10,000 patterns in all: 20 orgs × 250, 200 teams × 20, 100 agents × 10.
    let mut grants = GrantTable::new();
    let mut n = 0usize;
    for org in 0..20 {
        let rules = grants.rules_mut(Level::Org, &format!("org{org}"));
        for s in 0..SERVERS {
            rules.allow(Pattern::Server(format!("s{s}")));
        }
        for k in 0..200 {
            rules.allow(tool_pattern(org * 97 + k));
        }
        n += SERVERS + 200;
    }
    let team_tools = |team: usize, i: usize| tool_pattern(team * 7 + i * 13);
    for team in 0..200 {
        let rules = grants.rules_mut(Level::Team, &format!("team{team}"));
        for i in 0..20 {
            rules.allow(team_tools(team, i));
            n += 1;
        }
        rules.deny(tool_pattern(team * 7 + 1));
    }
    for agent in 0..100 {
        let rules = grants.rules_mut(Level::Agent, &format!("agent{agent}"));
        for i in 0..10 {
            rules.allow(tool_pattern(agent * 3 + i));
            n += 1;
        }
    }
    let policy = Policy::new(
        grants,
        &[Level::Org, Level::Team],
        Approval::From(ToolClass::Write),
    );
    let identities: Vec<(Identity, usize)> = (0..64)
        .map(|i| {
            let team = i * 3 % 200;
            let mut id = Identity::new()
                .with_name(Level::Org, format!("org{}", i % 20))
                .with(Level::Team, Binding::Resolved(vec![format!("team{team}")]))
                .with_name(Level::Key, format!("key{i}"))
                .with_key_rules(Rules::granting(
                    (0..SERVERS).map(|s| Pattern::Server(format!("s{s}"))),
                ));
            if i % 2 == 0 {
                id = id.with_name(Level::Agent, format!("agent{}", i % 100));
            }
            (id, team)
        })
        .collect();
    let split = |p: Pattern| match p {
        Pattern::Tool(s, t) => (s, t),
        Pattern::Server(s) => (s, "t0".to_owned()),
    };
    // Per identity: half the requests are for its team's tools, half for arbitrary ones.
    let asks: Vec<Vec<(String, String)>> = identities
        .iter()
        .map(|(_, team)| {
            (0..32)
                .map(|j| match j % 2 {
                    0 => split(team_tools(*team, j / 2)),
                    _ => split(tool_pattern(j * 31 + team)),
                })
                .collect()
        })
        .collect();

    let mut per_call = Vec::with_capacity(SAMPLES);
    let mut allowed = 0usize;
    for sample in 0..SAMPLES {
        let start = Instant::now();
        for j in 0..BATCH {
            let k = (sample + j) % identities.len();
            let (id, _) = &identities[k];
            let (s, t) = &asks[k][(sample * 7 + j) % 32];
            let req = Request {
                server: s,
                target: Target::Tool(t),
                class: ToolClass::Read,
                arguments: ArgumentsDigest([0; 32]),
            };
            if black_box(decide(&policy, black_box(id), &req, 1_000)).is_allow() {
                allowed += 1;
            }
        }
        per_call.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    per_call.sort_by(f64::total_cmp);
    let pct = |q: f64| per_call[((per_call.len() as f64 - 1.0) * q) as usize];
    println!(
        "decide(): {n} grants, {} decisions ({allowed} allowed): p50 {:.0} ns, p99 {:.0} ns, max {:.0} ns (target p99 <= 2000 ns)",
        SAMPLES * BATCH,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}
