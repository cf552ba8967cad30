//! The report as Markdown and as one self-contained HTML page (no external assets, fit to
//! print).

use std::fmt::Write as _;

use super::{Report, Status};
use crate::admin::esc;

/// Markdown table cells: no pipes or line breaks inside a cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "Pass",
        Status::Partial => "Partial",
        Status::Absent => "Absent/unsafe",
    }
}

fn count(r: &Report, color: &str) -> usize {
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
    let _ = writeln!(m, "| # | Dimension | Status | Finding | Severity |");
    let _ = writeln!(m, "|---|---|---|---|---|");
    for d in &r.dimensions {
        let _ = writeln!(
            m,
            "| {:02} | {} | {} {} | {} | {} |",
            d.number,
            d.title,
            match d.status {
                Status::Pass => "🟢",
                Status::Partial => "🟡",
                Status::Absent => "🔴",
            },
            status_word(d.status),
            cell(&d.finding),
            d.severity.title()
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
    let _ = writeln!(m, "**{}.** {}\n", r.verdict, r.summary);
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
                "- **{}** ({}, effort {}): {}",
                i.title, i.finding, i.effort, i.detail
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
    let _ = writeln!(m, "| Id | Kind | Source | Observed |");
    let _ = writeln!(m, "|---|---|---|---|");
    for e in &r.evidence {
        let _ = writeln!(
            m,
            "| {} | {:?} | {} | {}{} |",
            e.id,
            e.kind,
            cell(&e.source),
            cell(&e.observed),
            match e.ok {
                Some(true) => " ✓",
                Some(false) => " ✗",
                None => "",
            }
        );
    }
    m
}

const CSS: &str = "
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:32px 40px;background:#fff}
h1{font-size:28px;margin:0 0 4px}
h2{font-size:20px;margin:36px 0 12px;padding-bottom:6px;border-bottom:2px solid #1b1f24}
h3{font-size:16px;margin:22px 0 8px}
.meta{color:#57606a;font-size:13px}
.verdict{font-size:22px;font-weight:700;margin:16px 0 8px}
.counts span{display:inline-block;margin-right:18px;font-weight:600}
.dot{display:inline-block;width:11px;height:11px;border-radius:50%;margin-right:6px;vertical-align:middle}
.green{background:#1a7f37}.yellow{background:#d4a72c}.red{background:#cf222e}
table{border-collapse:collapse;width:100%;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #d0d7de;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f4;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
td.s-pass{background:#dafbe1;font-weight:600}
td.s-partial{background:#fff8c5;font-weight:600}
td.s-absent{background:#ffebe9;font-weight:600}
.box{border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:10px 0}
.box dt{font-weight:700;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a}
.box dd{margin:0 0 8px}
.phases{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.phase{border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
.phase li{margin-bottom:6px}
.effort{display:inline-block;border:1px solid #57606a;border-radius:3px;padding:0 4px;font-size:11px;margin-left:4px}
.static{color:#8250df;font-size:12px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f2f4;padding:1px 4px;border-radius:3px}
@media print{body{background:#fff}main{padding:0;max-width:none}h2{break-after:avoid}tr,.box,.phase{break-inside:avoid}}
";

/// Escaped text with `backticked` spans set as code.
pub(super) fn text(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split('`').enumerate() {
        match i % 2 {
            1 => {
                let _ = write!(out, "<code>{part}</code>");
            }
            _ => out.push_str(part),
        }
    }
    // An odd number of backticks: the last one was literal.
    if s.matches('`').count() % 2 == 1 {
        return esc(s);
    }
    out
}

fn status_cell(s: Status) -> String {
    let class = match s {
        Status::Pass => "s-pass",
        Status::Partial => "s-partial",
        Status::Absent => "s-absent",
    };
    format!(
        "<td class=\"{class}\"><span class=\"dot {}\"></span>{}</td>",
        s.color(),
        status_word(s)
    )
}

/// The report as one HTML page: inline CSS, no scripts, no external assets.
pub(crate) fn html(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Portcullis self-audit · {}</title><style>{CSS}</style></head><body><main>",
        esc(&r.verdict)
    );
    let _ = write!(
        h,
        "<h1>Portcullis self-audit</h1><p class=\"meta\">Generated {} · {} · config <code>{}</code> ({}) · profile {} · portcullis {} (commit {})</p>",
        esc(&r.generated_at),
        match r.mode {
            "live" => "live, from the running gateway",
            _ => "static, from the config",
        },
        esc(&r.config_file),
        esc(&r.config_digest),
        r.profile,
        esc(r.build.version),
        esc(r.build.commit)
    );
    let _ = write!(
        h,
        "<p class=\"verdict\" id=\"verdict\">{}</p><p class=\"counts\"><span><span class=\"dot green\"></span>{} Green</span><span><span class=\"dot yellow\"></span>{} Yellow</span><span><span class=\"dot red\"></span>{} Red</span><span>Security checklist {}/{} · {}</span></p>",
        esc(&r.verdict),
        count(r, "green"),
        count(r, "yellow"),
        count(r, "red"),
        r.checklist.score,
        r.checklist.max,
        esc(r.checklist.band_title)
    );
    let _ = write!(
        h,
        "<h2>01 Executive summary</h2><p>{}</p>",
        text(&r.summary)
    );
    let moves: Vec<_> = r.roadmap.iter().flat_map(|p| &p.items).take(2).collect();
    if !moves.is_empty() {
        h.push_str("<h3>The highest-leverage moves</h3><ol>");
        for i in moves {
            let _ = write!(
                h,
                "<li><b>{}</b> <code>{}</code><br>{} <i>Effort: {}.</i></li>",
                text(&i.title),
                i.finding,
                text(&i.detail),
                i.effort
            );
        }
        h.push_str("</ol>");
    }
    let _ = write!(
        h,
        "<h2>02 Scope &amp; method</h2><p>Seven dimensions, scored from evidence gathered by this gateway: config keys cited by file and line, probes that run the real code against injected faults and read the running state, and build facts. Every colour traces to evidence-index rows. A control this build does not have is a finding, never a pass. {}</p>",
        match r.mode {
            "live" => "All probes ran against the running gateway.",
            _ =>
                "<span class=\"static\">Made offline: probes that need the running gateway did not run and are marked static-only.</span>",
        }
    );
    h.push_str("<h2>03 Scored gap matrix</h2><table id=\"matrix\"><thead><tr><th>#</th><th>Dimension</th><th>Status</th><th>Finding</th><th>Severity</th></tr></thead><tbody>");
    for d in &r.dimensions {
        let _ = write!(
            h,
            "<tr data-dimension=\"{}\" data-status=\"{}\"><td>{:02}</td><td>{}</td>{}<td>{}</td><td>{}</td></tr>",
            d.key,
            d.color,
            d.number,
            esc(d.title),
            status_cell(d.status),
            text(&d.finding),
            d.severity.title()
        );
    }
    h.push_str("</tbody></table><p class=\"meta\">Pass: the control exists, is enforced and was verified (a finding marked static-only was verified from config and code only, not against the running gateway). Partial: intent exists with gaps. Absent/unsafe: no effective control, or it fails open.</p>");
    h.push_str("<h2>04 Per-dimension findings</h2>");
    for d in &r.dimensions {
        let _ = write!(
            h,
            "<h3>{:02} {} · <span class=\"dot {}\"></span>{}</h3><dl class=\"box\"><dt>What we looked at</dt><dd>{}</dd><dt>What we found</dt><dd>{}</dd><dt>Why it matters</dt><dd>{}</dd></dl>",
            d.number,
            esc(d.title),
            d.color,
            status_word(d.status),
            esc(d.looked_at),
            text(&d.found),
            text(&d.why_it_matters)
        );
        h.push_str("<table><thead><tr><th>Finding</th><th>Status</th><th>Severity</th><th>Evidence</th></tr></thead><tbody>");
        for f in r.findings.iter().filter(|f| f.dimension == d.number) {
            let _ = write!(
                h,
                "<tr><td><code>{}</code> {}{}</td>{}<td>{}</td><td>{}</td></tr>",
                f.id,
                text(&f.title),
                if f.static_only {
                    " <span class=\"static\">(static-only)</span>"
                } else {
                    ""
                },
                status_cell(f.status),
                match f.status {
                    Status::Pass => "-",
                    _ => f.severity.title(),
                },
                f.evidence
                    .iter()
                    .map(|e| format!("<a href=\"#{e}\">{e}</a>"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        h.push_str("</tbody></table>");
    }
    let _ = write!(
        h,
        "<h2>05 Verdict &amp; top risks</h2><p><b>{}.</b> {}</p>",
        esc(&r.verdict),
        text(&r.summary)
    );
    if r.top_risks.is_empty() {
        h.push_str("<p>No gaps found.</p>");
    } else {
        h.push_str("<table><thead><tr><th>#</th><th>Risk</th><th>Dim</th><th>Likelihood</th><th>Impact</th></tr></thead><tbody>");
        for k in &r.top_risks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{} <code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                k.rank,
                text(&k.title),
                k.finding,
                k.dimension,
                k.likelihood.title(),
                k.impact.title()
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>06 Roadmap</h2><div class=\"phases\">");
    for p in &r.roadmap {
        let _ = write!(
            h,
            "<div class=\"phase\"><b>Phase {} · {}</b><br><i>{}</i><ul>",
            p.phase, p.weeks, p.title
        );
        if p.items.is_empty() {
            h.push_str("<li>Nothing in this phase.</li>");
        }
        for i in &p.items {
            let _ = write!(
                h,
                "<li><b>{}</b><span class=\"effort\">{}</span><br>{} <code>{}</code></li>",
                text(&i.title),
                i.effort,
                text(&i.detail),
                i.finding
            );
        }
        h.push_str("</ul></div>");
    }
    h.push_str("</div>");
    let _ = write!(
        h,
        "<h2>07 Security checklist: {}/{} · {}</h2><table id=\"checklist\"><thead><tr><th>Area</th><th>Score</th><th>Why</th><th>Findings</th></tr></thead><tbody>",
        r.checklist.score,
        r.checklist.max,
        esc(r.checklist.band_title)
    );
    for a in &r.checklist.areas {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}/2</td><td>{}</td><td>{}</td></tr>",
            esc(a.title),
            a.score,
            text(&a.why),
            a.findings.join(", ")
        );
    }
    h.push_str("</tbody></table><h2>08 Server production gates</h2>");
    for s in &r.servers {
        let _ = write!(
            h,
            "<h3><code>{}</code>: {}/{} · {}</h3><p>{}</p><table><thead><tr><th>Dimension</th><th>Score</th><th>Why</th><th>Evidence</th></tr></thead><tbody>",
            esc(&s.server),
            s.score,
            s.max,
            esc(s.gate_title),
            text(&s.gate_reason)
        );
        for d in &s.dimensions {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}/3</td><td>{}</td><td>{}</td></tr>",
                esc(d.title),
                d.score,
                text(&d.why),
                d.evidence
                    .iter()
                    .map(|e| format!("<a href=\"#{e}\">{e}</a>"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>09 Evidence index</h2><table id=\"evidence\"><thead><tr><th>Id</th><th>Kind</th><th>Source</th><th>Observed</th></tr></thead><tbody>");
    for e in &r.evidence {
        let _ = write!(
            h,
            "<tr id=\"{}\"><td>{}</td><td>{:?}</td><td><code>{}</code></td><td>{}{}</td></tr>",
            e.id,
            e.id,
            e.kind,
            esc(&e.source),
            text(&e.observed),
            match (e.ok, e.static_only) {
                (Some(true), _) => " ✓",
                (Some(false), _) => " ✗",
                (None, true) => " <span class=\"static\">(static-only)</span>",
                (None, false) => "",
            }
        );
    }
    h.push_str("</tbody></table></main></body></html>");
    h
}
