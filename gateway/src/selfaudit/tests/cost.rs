//! Dimension 05 reads the limits: every write tool bounded for every caller, and a budget that
//! caps everyone's spend, or a finding that cites the line.

use super::*;

#[tokio::test]
async fn write_tools_without_limits_are_named_by_line() {
    // A rate on every write tool and a budget: nothing to report.
    let f = finding(&audit_of(CLEAN).await, "cost.limits").clone();
    assert_eq!((f.status, f.cause), (Status::Pass, None));
    assert!(
        cited(&audit_of(CLEAN).await, "cost.limits")
            .iter()
            .any(|row| row.contains("`limits[0]`") && row.contains("budget 500 units/day")),
        "{:#?}",
        cited(&audit_of(CLEAN).await, "cost.limits")
    );
    // Rates but no budget: spend is not capped, a config gap.
    let no_budget = CLEAN.replace(
        "concurrency: 8, budget: { units: 500, per: day }",
        "concurrency: 8",
    );
    let f = finding(&audit_of(&no_budget).await, "cost.limits").clone();
    assert_eq!((f.status, f.cause), (Status::Partial, Some(Cause::Config)));
    // A write tool with neither its own rate nor a `limits:` rate or budget covering it.
    let r = audit_of(&no_budget.replace("rate: 10/min, ", "")).await;
    let f = finding(&r, "cost.limits");
    assert_eq!((f.status, f.cause), (Status::Absent, Some(Cause::Config)));
    assert_eq!(f.severity, crate::selfaudit::Severity::High);
    assert_eq!(finding(&r, "onboard.ci_gate").cause, Some(Cause::Config));
    assert!(
        cited(&r, "cost.limits")
            .iter()
            .any(|row| row.contains("t.yaml:14:20 `servers.notes.tools.create_note`")),
        "{:#?}",
        cited(&r, "cost.limits")
    );
    // A budget that covers the tool bounds it as well as a rate does.
    let r = audit_of(&CLEAN.replace("rate: 10/min, ", "")).await;
    assert_eq!(finding(&r, "cost.limits").status, Status::Pass);
    // With read tools only and no budget, the gap is less severe.
    let reads = flip("      create_note:", "      get_note: { class: read }")
        .replace("\"notes/create_note\"", "\"notes/get_note\"")
        .replace(
            "concurrency: 8, budget: { units: 500, per: day }",
            "concurrency: 8",
        );
    let r = audit_of(&reads).await;
    assert_eq!(finding(&r, "cost.limits").status, Status::Partial);
    assert_eq!(
        finding(&r, "cost.limits").severity,
        crate::selfaudit::Severity::Medium
    );
}
