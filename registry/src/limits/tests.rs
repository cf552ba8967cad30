use crate::load_str;

const SERVERS: &str =
    "servers:\n  notes:\n    builtin: notes\n    tools: { search_notes: { class: read } }\n";

fn problems(limits: &str) -> Vec<String> {
    match load_str("t.yaml", &format!("{SERVERS}{limits}")) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{}: {} ({})", p.path, p.message, p.location))
            .collect(),
    }
}

#[test]
fn a_good_entry_loads_with_its_principal_scope_and_bounds() {
    let text = format!(
        "{SERVERS}limits:\n  - {{ match: \"team:research\", rate: 600/min, burst: 20, concurrency: 16 }}\n  - {{ match: \"key:*\", server: notes, tool: search_notes, rate: 10/s }}\n"
    );
    let reg = load_str("t.yaml", &text).unwrap();
    assert_eq!(reg.limits.len(), 2);
    let l = &reg.limits[0];
    assert_eq!(l.principal.to_string(), "team:research");
    assert_eq!(l.rate.map(|r| r.to_string()), Some("600/min".into()));
    assert_eq!((l.burst, l.concurrency), (Some(20), Some(16)));
    assert!(l.covers("notes", "anything"));
    let k = &reg.limits[1];
    assert_eq!(k.principal.to_string(), "key:*");
    assert!(k.covers("notes", "search_notes") && !k.covers("notes", "other"));
}

#[test]
fn every_mistake_names_its_line_and_the_fix() {
    let cases = [
        (
            "  - { match: \"crew:x\", rate: 1/s }\n",
            "limits[0].match",
            "not an identity level",
        ),
        ("  - { rate: 1/s }\n", "limits[0]", "without `match`"),
        (
            "  - { match: \"team:\", rate: 1/s }\n",
            "limits[0].match",
            "names no principal",
        ),
        (
            "  - { match: \"team:a\", rate: lots }\n",
            "limits[0].rate",
            "not a rate",
        ),
        (
            "  - { match: \"team:a\" }\n",
            "limits[0]",
            "neither `rate`, `concurrency` nor `budget`",
        ),
        (
            "  - { match: \"team:a\", concurrency: 0 }\n",
            "limits[0].concurrency",
            "refuse every call",
        ),
        (
            "  - { match: \"team:a\", burst: 5, concurrency: 1 }\n",
            "limits[0].burst",
            "goes with a `rate`",
        ),
        (
            "  - { match: \"team:a\", server: nope, rate: 1/s }\n",
            "limits[0].server",
            "not a configured server",
        ),
        (
            "  - { match: \"team:a\", tool: search_notes, rate: 1/s }\n",
            "limits[0].tool",
            "without a `server`",
        ),
        (
            "  - { match: \"team:a\", server: notes, tool: nope, rate: 1/s }\n",
            "limits[0].tool",
            "not allowlisted",
        ),
        (
            "  - { match: \"team:a\", rate: 1/s, budget: 5 }\n",
            "limits[0]",
            "budget",
        ),
        (
            "  - { match: \"team:a\", budget: { per: day } }\n",
            "limits[0].budget.units",
            "needs `units`",
        ),
        (
            "  - { match: \"team:a\", budget: { units: 0, per: day } }\n",
            "limits[0].budget.units",
            "1 or more",
        ),
        (
            "  - { match: \"team:a\", budget: { units: 5, per: week } }\n",
            "limits[0].budget.per",
            "not a budget period",
        ),
        (
            "  - { match: \"team:a\", budget: { units: 5 } }\n",
            "limits[0].budget",
            "without `per`",
        ),
        (
            "  - { match: \"team:a\", budget: { units: 5, per: day, refund: yes } }\n",
            "limits[0].budget",
            "refund",
        ),
        (
            "  - { match: \"team:a\", budget: { units: 5, per: day, exact: sometimes } }\n",
            "limits[0].budget.exact",
            "boolean",
        ),
    ];
    for (entry, path, says) in cases {
        let found = problems(&format!("limits:\n{entry}"));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(path) && p.contains(says) && p.contains("t.yaml:")),
            "{entry}: {found:?}"
        );
    }
}

#[test]
fn a_budget_loads_with_its_period_and_tools_carry_a_cost() {
    let text = "servers:\n  notes:\n    builtin: notes\n    tools:\n      search_notes: { class: read }\n      create_note: { class: write, cost: 5 }\nlimits:\n  - { match: \"org:*\", budget: { units: 1000, per: month, refund_failed: true } }\n";
    let reg = load_str("t.yaml", text).unwrap();
    let b = reg.limits[0].budget.unwrap();
    assert_eq!(
        (b.units, b.per, b.refund_failed, b.exact),
        (1000, crate::Period::Month, true, false)
    );
    assert_eq!(b.to_string(), "1000 units/month");
    assert_eq!(reg.limits[0].budget_key(), "org:* */* per month");
    let tools = &reg.servers[0].tools;
    assert_eq!(
        (tools["search_notes"].cost, tools["create_note"].cost),
        (1, 5)
    );
    let exact = text.replace("refund_failed: true", "exact: true");
    let b = load_str("t.yaml", &exact).unwrap().limits[0]
        .budget
        .unwrap();
    assert_eq!((b.refund_failed, b.exact), (false, true));
}

#[test]
fn windows_are_calendar_periods_in_utc() {
    use crate::Period;
    // 2026-12-31T23:59:59Z
    let t = 1_798_761_599;
    assert_eq!(Period::Hour.window(t), ("2026-12-31T23".into(), t + 1));
    assert_eq!(Period::Day.window(t), ("2026-12-31".into(), t + 1));
    assert_eq!(Period::Month.window(t), ("2026-12".into(), t + 1));
    // 2027-02-10T00:00:00Z: February ends on 1 March.
    let feb = 1_802_217_600;
    assert_eq!(
        Period::Month.window(feb),
        ("2027-02".into(), feb + 19 * 86_400)
    );
    assert_eq!(Period::Day.window(feb), ("2027-02-10".into(), feb + 86_400));
}

#[test]
fn a_write_tool_passes_the_gate_with_its_own_rate_or_a_rate_or_budget_every_caller_meets() {
    let base = "identity: { require: [team] }\nservers:\n  notes:\n    builtin: notes\n    tools:\n      create_note: { class: write }\ngrants:\n  team:*: [\"notes/*\"]\n";
    let unbounded = |text: &str| {
        crate::check(&load_str("t.yaml", text).unwrap())
            .iter()
            .any(|p| p.message.contains("without a rate limit or budget"))
    };
    assert!(unbounded(base));
    for limits in [
        "limits:\n  - { match: \"team:*\", budget: { units: 5, per: day } }\n",
        "limits:\n  - { match: \"key:*\", server: notes, tool: create_note, rate: 1/s }\n",
    ] {
        assert!(!unbounded(&format!("{base}{limits}")), "{limits}");
    }
    // A concurrency cap alone does not bound how often it runs.
    assert!(unbounded(&format!(
        "{base}limits:\n  - {{ match: \"team:*\", concurrency: 1 }}\n"
    )));
}
