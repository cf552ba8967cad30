//! From findings to the report: the gap matrix (with effort and the roadmap items that close
//! each dimension's gaps), the verdict and its reasoning, the ranked risks, the roadmap (with
//! outcomes and dependencies) and the evidence index's rubric, colour and severity per row.

use std::collections::BTreeMap;

use registry::Registry;

use super::{
    Cause, Checklist, DIMENSIONS, Dimension, Evidence, Finding, Phase, Report, Risk, RoadmapItem,
    SCHEMA, ServerGate, Severity, Status, build, checks,
};

/// The numbers of the dimensions that decide safety: RBAC, fail-close, identity and secrets.
const SAFETY_CRITICAL: [u8; 3] = [1, 2, 6];

pub(super) fn assemble(
    reg: &Registry,
    live: bool,
    findings: Vec<Finding>,
    servers: Vec<ServerGate>,
    index: checks::Index,
) -> Report {
    let roadmap = roadmap(&findings);
    let dimensions: Vec<Dimension> = DIMENSIONS
        .iter()
        .zip(1u8..)
        .map(|(&(key, title, looked_at, why), number)| {
            dimension(number, key, title, looked_at, why, &findings, &roadmap)
        })
        .collect();
    let mut counts = BTreeMap::new();
    for color in ["green", "yellow", "red"] {
        counts.insert(
            color,
            dimensions.iter().filter(|d| d.color == color).count(),
        );
    }
    let red = counts.get("red").copied().unwrap_or(0);
    let yellow = counts.get("yellow").copied().unwrap_or(0);
    let (verdict_key, verdict) = match (red, yellow) {
        (0, 0) => ("production_ready", "Production-ready"),
        (0, _) => (
            "production_ready_with_caveats",
            "Production-ready with caveats",
        ),
        _ => ("not_production_ready", "Not production-ready"),
    };
    let checklist = checks::checklist(&findings);
    let summary = summary(&dimensions, &findings, &checklist, live);
    let mut evidence = index.into_rows();
    grade_evidence(&mut evidence, &findings, &servers);
    Report {
        schema: SCHEMA,
        generated_at: crate::clock::rfc3339_ms(store::now_ms()),
        mode: if live { "live" } else { "static" },
        config_file: reg.source.file().to_owned(),
        config_digest: reg.digest.clone(),
        profile: match reg.settings.profile {
            registry::Profile::Production => "production",
            registry::Profile::Development => "development",
        },
        build: build(),
        verdict: verdict.to_owned(),
        verdict_key,
        verdict_reasoning: verdict_reasoning(&dimensions, live),
        summary,
        counts,
        top_risks: top_risks(&findings),
        roadmap,
        dimensions,
        findings,
        checklist,
        servers,
        evidence,
    }
}

fn dimension(
    number: u8,
    key: &'static str,
    title: &'static str,
    looked_at: &'static str,
    why: &'static str,
    findings: &[Finding],
    roadmap: &[Phase],
) -> Dimension {
    let mine: Vec<&Finding> = findings.iter().filter(|f| f.dimension == number).collect();
    let status = mine
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Absent);
    let mut gaps: Vec<&&Finding> = mine.iter().filter(|f| f.status != Status::Pass).collect();
    gaps.sort_by_key(|f| std::cmp::Reverse((f.status, f.severity)));
    let severity = gaps.first().map_or(Severity::Low, |f| f.severity);
    let finding = match gaps.as_slice() {
        [] => match mine.first() {
            Some(first) if mine.len() > 1 => {
                format!("{} ({} controls verified)", first.title, mine.len())
            }
            Some(first) => first.title.clone(),
            None => "nothing was looked at".to_owned(),
        },
        [one] => one.title.clone(),
        [first, rest @ ..] => format!("{} (and {} more gap(s))", first.title, rest.len()),
    };
    let found = mine
        .iter()
        .map(|f| f.found.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let why_it_matters = match gaps.first() {
        Some(g) => format!("{why} {}", g.why),
        None => why.to_owned(),
    };
    Dimension {
        number,
        key,
        title,
        status,
        color: status.color(),
        finding,
        severity,
        looked_at,
        found,
        why_it_matters,
        findings: mine.iter().map(|f| f.id).collect(),
        effort: gaps.first().and_then(|g| g.fix.as_ref()).map(|f| f.effort),
        roadmap: roadmap
            .iter()
            .flat_map(|p| &p.items)
            .filter(|i| i.dimension == number)
            .map(|i| i.id.clone())
            .collect(),
    }
}

/// The verdict's reasons: the safety-critical dimensions first, then the rest.
fn verdict_reasoning(dimensions: &[Dimension], live: bool) -> String {
    let critical: Vec<&Dimension> = dimensions
        .iter()
        .filter(|d| SAFETY_CRITICAL.contains(&d.number))
        .collect();
    let named = |ds: &[&Dimension]| {
        ds.iter()
            .map(|d| format!("{:02} {}", d.number, d.title))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let red: Vec<&Dimension> = critical
        .iter()
        .copied()
        .filter(|d| d.status == Status::Absent)
        .collect();
    let yellow: Vec<&Dimension> = critical
        .iter()
        .copied()
        .filter(|d| d.status == Status::Partial)
        .collect();
    let listing = critical
        .iter()
        .map(|d| format!("{:02} {} is {} ({})", d.number, d.title, d.color, d.finding))
        .collect::<Vec<_>>()
        .join("; ");
    let mut s = format!("The safety-critical dimensions decide first: {listing}. ");
    s.push_str(&match (red.is_empty(), yellow.is_empty()) {
        (false, _) => format!(
            "{} {} red: a control that keeps the model out of the decision, denies on failure, or roots identity is missing or fails open, and that alone keeps the gateway from production.",
            named(&red),
            if red.len() == 1 { "is" } else { "are" }
        ),
        (true, false) => format!(
            "None of them is red, but {} {} gaps, so any verdict above this one would overstate it.",
            named(&yellow),
            if yellow.len() == 1 { "has" } else { "have" }
        ),
        (true, true) => format!(
            "All three are green: the authorization decision is the gateway's on the caller's identity, {}, and identity and secrets hold.",
            match live {
                true => "each fault injected on the decision path ended in a deny",
                false => "the faults injected offline (a store error, corrupt grants, a panicking evaluation) each ended in a deny, and the live ones are static-only here",
            }
        ),
    });
    let others: Vec<&Dimension> = dimensions
        .iter()
        .filter(|d| !SAFETY_CRITICAL.contains(&d.number) && d.status != Status::Pass)
        .collect();
    if others.is_empty() {
        s.push_str(" The other four dimensions are green.");
    } else {
        s.push_str(&format!(
            " Of the other dimensions, {} {} not green ({}): gaps in operation and configuration rather than in the decision itself.",
            named(&others),
            if others.len() == 1 { "is" } else { "are" },
            others
                .iter()
                .map(|d| d.finding.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    s
}

fn gaps_ranked(findings: &[Finding]) -> Vec<&Finding> {
    let mut gaps: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.status != Status::Pass)
        .collect();
    gaps.sort_by(|a, b| {
        (b.severity, b.status, b.likelihood as u8)
            .cmp(&(a.severity, a.status, a.likelihood as u8))
            .then(a.id.cmp(b.id))
    });
    gaps
}

fn top_risks(findings: &[Finding]) -> Vec<Risk> {
    gaps_ranked(findings)
        .into_iter()
        .take(5)
        .zip(1..)
        .map(|(f, rank)| Risk {
            rank,
            finding: f.id,
            title: f.title.clone(),
            dimension: f.dimension,
            likelihood: f.likelihood,
            impact: f.severity,
        })
        .collect()
}

fn roadmap(findings: &[Finding]) -> Vec<Phase> {
    let mut phases = vec![
        Phase {
            phase: 1,
            weeks: "Weeks 0-2",
            title: "Launch-blocking / highest-leverage",
            items: Vec::new(),
        },
        Phase {
            phase: 2,
            weeks: "Weeks 2-6",
            title: "Default-on the controls",
            items: Vec::new(),
        },
        Phase {
            phase: 3,
            weeks: "Weeks 6-12",
            title: "Operationalize & prove",
            items: Vec::new(),
        },
    ];
    for f in gaps_ranked(findings) {
        let Some(fix) = &f.fix else { continue };
        let at = match (f.severity, f.status) {
            (Severity::Critical | Severity::High, _) | (_, Status::Absent) => 0,
            (Severity::Medium, _) => 1,
            (Severity::Low, _) => 2,
        };
        let dimension = DIMENSIONS
            .get(usize::from(f.dimension).saturating_sub(1))
            .map_or("", |d| d.1);
        if let Some(p) = phases.get_mut(at) {
            p.items.push(RoadmapItem {
                id: String::new(),
                finding: f.id,
                dimension: f.dimension,
                title: fix.title.clone(),
                detail: fix.detail.clone(),
                effort: fix.effort,
                outcome: format!(
                    "`{}` reported as a pass, removing a {} gap from {:02} {dimension}",
                    f.id,
                    f.severity.title().to_lowercase(),
                    f.dimension
                ),
                depends_on: Vec::new(),
            });
        }
    }
    // Ids in roadmap order; an item depends on the earlier items of its dimension.
    let mut seen: Vec<(u8, String)> = Vec::new();
    let mut n = 0;
    for item in phases.iter_mut().flat_map(|p| p.items.iter_mut()) {
        n += 1;
        item.id = format!("R{n}");
        item.depends_on = seen
            .iter()
            .filter(|(d, _)| *d == item.dimension)
            .map(|(_, id)| id.clone())
            .collect();
        seen.push((item.dimension, item.id.clone()));
    }
    phases
}

/// The legend line each status matches, as the gap matrix states it.
fn rubric(status: Status) -> &'static str {
    match status {
        Status::Pass => "Production-grade: the control exists, is enforced and is verifiable",
        Status::Partial => "Partial: the intent exists but has gaps",
        Status::Absent => "Absent/unsafe: no effective control, or the control fails open",
    }
}

/// Each evidence row takes the rubric line, colour and severity of the worst finding citing it;
/// a row only server gates cite takes the lowest dimension score citing it.
fn grade_evidence(rows: &mut [Evidence], findings: &[Finding], servers: &[ServerGate]) {
    for row in rows.iter_mut() {
        let worst = findings
            .iter()
            .filter(|f| f.evidence.contains(&row.id))
            .max_by_key(|f| (f.status, f.severity));
        if let Some(f) = worst {
            row.rubric = format!("{} (`{}`)", rubric(f.status), f.id);
            row.color = f.status.color();
            row.severity = (f.status != Status::Pass).then_some(f.severity);
            continue;
        }
        let gate = servers
            .iter()
            .flat_map(|s| s.dimensions.iter().map(move |d| (s, d)))
            .filter(|(_, d)| d.evidence.contains(&row.id))
            .min_by_key(|(_, d)| d.score);
        if let Some((s, d)) = gate {
            row.rubric = format!("Server gate, {}: {}/3 for `{}`", d.title, d.score, s.server);
            row.color = match d.score {
                3 => "green",
                0 => "red",
                _ => "yellow",
            };
            row.severity = None;
        }
    }
}

fn summary(
    dimensions: &[Dimension],
    findings: &[Finding],
    checklist: &Checklist,
    live: bool,
) -> String {
    let gaps = gaps_ranked(findings);
    let unbuilt = gaps
        .iter()
        .filter(|f| f.cause == Some(Cause::Unbuilt))
        .count();
    let config = gaps
        .iter()
        .filter(|f| f.cause == Some(Cause::Config))
        .count();
    let probe = gaps
        .iter()
        .filter(|f| f.cause == Some(Cause::Probe))
        .count();
    let green: Vec<&str> = dimensions
        .iter()
        .filter(|d| d.status == Status::Pass)
        .map(|d| d.title)
        .collect();
    let mut s = format!(
        "{} of 7 dimensions are green{}. {} gap(s): {config} from this config, {probe} seen by probes, {unbuilt} for controls this build does not have. Security checklist {}/20 ({}).",
        green.len(),
        match green.is_empty() {
            true => String::new(),
            false => format!(" ({})", green.join(", ")),
        },
        gaps.len(),
        checklist.score,
        checklist.band_title,
    );
    if let Some(top) = gaps.first() {
        s.push_str(&format!(" The highest-ranked gap: {}.", top.title));
    }
    if !live {
        s.push_str(" Made offline from the config: checks that need the running gateway are marked static-only.");
    }
    s
}
