//! The report as Markdown (`html.rs` makes the HTML page), and the helpers both share.

use std::fmt::Write as _;

use super::{Report, Status};

/// Markdown table cells: no pipes or line breaks inside a cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub(super) fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "Pass",
        Status::Partial => "Partial",
        Status::Absent => "Absent/unsafe",
    }
}

pub(super) fn count(r: &Report, color: &str) -> usize {
    r.counts.get(color).copied().unwrap_or(0)
}

/// The report in Markdown.
pub(crate) fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Portcullis self-audit\n");
    let _ = writeln!(
        m,
        "Generated {} · {} · config `{}` ({}) · profile {} · portcullis {} (commit {})\n",
        r.generated_at,
        match r.mode {
            "live" => "live, from the running gateway",
            _ => "static, from the config (live checks marked static-only)",
        },
        r.config_file,
        r.config_digest,
        r.profile,
        r.build.version,
        r.build.commit,
    );
    let _ = writeln!(m, "**Verdict: {}**\n", r.verdict);
    let _ = writeln!(
        m,
        "● {} Green · ● {} Yellow · ● {} Red · Security checklist {}/{} ({}) \n",
        count(r, "green"),
        count(r, "yellow"),
        count(r, "red"),
        r.checklist.score,
        r.checklist.max,
        r.checklist.band_title
    );
    let _ = writeln!(m, "## 01 Executive summary\n\n{}\n", r.summary);
    let moves: Vec<_> = r.roadmap.iter().flat_map(|p| &p.items).take(2).collect();
    if !moves.is_empty() {
        let _ = writeln!(m, "### The highest-leverage moves\n");
        for (i, item) in moves.iter().enumerate() {
            let _ = writeln!(
                m,
                "{}. **{}** ({}). {} *Effort: {}.*",
                i + 1,
                item.title,
                item.finding,
                item.detail,
                item.effort
            );
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## 02 Scope and method\n");
    let _ = writeln!(
        m,
        "Seven dimensions, scored from evidence gathered by this gateway: config keys cited by file and line, probes that run the real code against injected faults and read the running state, and build facts. Every colour traces to evidence-index rows. A control this build does not have is a finding, never a pass. {}\n",
        match r.mode {
            "live" => "All probes ran against the running gateway.",
            _ =>
                "This report was made offline: probes that need the running gateway did not run and are marked static-only.",
        }
    );
    let _ = writeln!(m, "## 03 Scored gap matrix\n");
    let _ = writeln!(
        m,
        "| # | Dimension | Status | Finding | Severity | Effort | Roadmap |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|");
    for d in &r.dimensions {
        let _ = writeln!(
            m,
            "| {:02} | {} | {} {} | {} | {} | {} | {} |",
            d.number,
            d.title,
            match d.status {
                Status::Pass => "🟢",
                Status::Partial => "🟡",
                Status::Absent => "🔴",
            },
            status_word(d.status),
            cell(&d.finding),
            d.severity.title(),
            d.effort.unwrap_or("-"),
            match d.roadmap.is_empty() {
                true => "-".to_owned(),
                false => d.roadmap.join(", "),
            }
        );
    }
    let _ = writeln!(
        m,
        "\n*Pass: the control exists, is enforced and was verified (a finding marked static-only was verified from config and code only, not against the running gateway). Partial: intent exists with gaps. Absent/unsafe: no effective control, or it fails open.*\n"
    );
    let _ = writeln!(m, "## 04 Per-dimension findings\n");
    for d in &r.dimensions {
        let _ = writeln!(
            m,
            "### {:02} {} · {}\n",
            d.number,
            d.title,
            status_word(d.status)
        );
        let _ = writeln!(m, "- **What we looked at:** {}", d.looked_at);
        let _ = writeln!(m, "- **What we found:** {}", d.found);
        let _ = writeln!(m, "- **Why it matters:** {}\n", d.why_it_matters);
        let _ = writeln!(m, "| Finding | Status | Severity | Evidence |");
        let _ = writeln!(m, "|---|---|---|---|");
        for f in r.findings.iter().filter(|f| f.dimension == d.number) {
            let _ = writeln!(
                m,
                "| `{}` {}{} | {} | {} | {} |",
                f.id,
                cell(&f.title),
                if f.static_only {
                    " *(static-only)*"
                } else {
                    ""
                },
                status_word(f.status),
                match f.status {
                    Status::Pass => "-",
                    _ => f.severity.title(),
                },
                f.evidence.join(", ")
            );
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## 05 Verdict and top risks\n");
    let _ = writeln!(m, "**{}.** {}\n", r.verdict, r.verdict_reasoning);
    if r.top_risks.is_empty() {
        let _ = writeln!(m, "No gaps found.\n");
    } else {
        let _ = writeln!(m, "| # | Risk | Dim | Likelihood | Impact |");
        let _ = writeln!(m, "|---|---|---|---|---|");
        for k in &r.top_risks {
            let _ = writeln!(
                m,
                "| {} | {} (`{}`) | {} | {} | {} |",
                k.rank,
                cell(&k.title),
                k.finding,
                k.dimension,
                k.likelihood.title(),
                k.impact.title()
            );
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## 06 Roadmap\n");
    for p in &r.roadmap {
        let _ = writeln!(m, "### Phase {} · {} · {}\n", p.phase, p.weeks, p.title);
        if p.items.is_empty() {
            let _ = writeln!(m, "Nothing in this phase.\n");
            continue;
        }
        for i in &p.items {
            let _ = writeln!(
                m,
                "- **{} {}** (`{}`, effort {}): {} *Outcome:* {}.{}",
                i.id,
                i.title,
                i.finding,
                i.effort,
                i.detail,
                i.outcome,
                match i.depends_on.is_empty() {
                    true => String::new(),
                    false => format!(" *After:* {}.", i.depends_on.join(", ")),
                }
            );
        }
        m.push('\n');
    }
    let _ = writeln!(
        m,
        "## 07 Security checklist: {}/{} · {}\n",
        r.checklist.score, r.checklist.max, r.checklist.band_title
    );
    let _ = writeln!(m, "| Area | Score | Why | Findings |");
    let _ = writeln!(m, "|---|---|---|---|");
    for a in &r.checklist.areas {
        let _ = writeln!(
            m,
            "| {} | {}/2 | {} | {} |",
            a.title,
            a.score,
            cell(&a.why),
            a.findings.join(", ")
        );
    }
    let _ = writeln!(m, "\n## 08 Server production gates\n");
    for s in &r.servers {
        let _ = writeln!(
            m,
            "### `{}`: {}/{} · {}\n\n{}\n",
            s.server, s.score, s.max, s.gate_title, s.gate_reason
        );
        let _ = writeln!(m, "| Dimension | Score | Why | Evidence |");
        let _ = writeln!(m, "|---|---|---|---|");
        for d in &s.dimensions {
            let _ = writeln!(
                m,
                "| {} | {}/3 | {} | {} |",
                d.title,
                d.score,
                cell(&d.why),
                d.evidence.join(", ")
            );
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## 09 Evidence index\n");
    let _ = writeln!(
        m,
        "| Id | Kind | Source | Observed | Rubric | Colour | Severity |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|");
    for e in &r.evidence {
        let _ = writeln!(
            m,
            "| {} | {:?} | {} | {}{} | {} | {} | {} |",
            e.id,
            e.kind,
            cell(&e.source),
            cell(&e.observed),
            match e.ok {
                Some(true) => " ✓",
                Some(false) => " ✗",
                None => "",
            },
            cell(&e.rubric),
            e.color,
            e.severity.map_or("-", |s| s.title())
        );
    }
    m
}
