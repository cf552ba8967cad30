//! The report as one self-contained HTML page: inline CSS, no scripts, no external assets, fit
//! to print. Status cells never wrap; long digests wrap inside their cell instead of widening
//! the page.

use std::fmt::Write as _;

use super::render::{count, status_word};
use super::{Report, Status};

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
td.s-pass{background:#dafbe1;font-weight:600;white-space:nowrap}
td.s-partial{background:#fff8c5;font-weight:600;white-space:nowrap}
td.s-absent{background:#ffebe9;font-weight:600;white-space:nowrap}
td.c-green{color:#1a7f37;font-weight:600}td.c-yellow{color:#9a6700;font-weight:600}td.c-red{color:#cf222e;font-weight:600}
.box{border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:10px 0}
.box dt{font-weight:700;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a}
.box dd{margin:0 0 8px}
.phases{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.phase{border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
.phase li{margin-bottom:6px}
.effort{display:inline-block;border:1px solid #57606a;border-radius:3px;padding:0 4px;font-size:11px;margin-left:4px}
.static{color:#8250df;font-size:12px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f2f4;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
.meta{overflow-wrap:anywhere}
#matrix td:first-child,#evidence td:first-child{white-space:nowrap}
#evidence td:nth-child(3){min-width:14em}#evidence td:nth-child(5){min-width:11em}
#evidence td:nth-child(4),.box dd,td{overflow-wrap:anywhere}
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

/// Links to rows of this page (evidence `E…`, roadmap items `R…`), comma-separated.
fn links(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("<a href=\"#{id}\">{id}</a>"))
        .collect::<Vec<_>>()
        .join(", ")
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
    h.push_str("<h2>03 Scored gap matrix</h2><table id=\"matrix\"><thead><tr><th>#</th><th>Dimension</th><th>Status</th><th>Finding</th><th>Severity</th><th>Effort</th><th>Roadmap</th></tr></thead><tbody>");
    for d in &r.dimensions {
        let _ = write!(
            h,
            "<tr data-dimension=\"{}\" data-status=\"{}\"><td>{:02}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.key,
            d.color,
            d.number,
            esc(d.title),
            status_cell(d.status),
            text(&d.finding),
            d.severity.title(),
            d.effort.unwrap_or("-"),
            match d.roadmap.is_empty() {
                true => "-".to_owned(),
                false => links(&d.roadmap),
            }
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
                links(&f.evidence)
            );
        }
        h.push_str("</tbody></table>");
    }
    let _ = write!(
        h,
        "<h2>05 Verdict &amp; top risks</h2><p id=\"verdict-reasoning\"><b>{}.</b> {}</p>",
        esc(&r.verdict),
        text(&r.verdict_reasoning)
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
                "<li id=\"{id}\"><b>{id} {}</b><span class=\"effort\">{}</span><br>{} <code>{}</code><br><i>Outcome:</i> {}{}</li>",
                text(&i.title),
                i.effort,
                text(&i.detail),
                i.finding,
                text(&i.outcome),
                match i.depends_on.is_empty() {
                    true => String::new(),
                    false => format!("<br><i>After:</i> {}", i.depends_on.join(", ")),
                },
                id = i.id,
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
                links(&d.evidence)
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>09 Evidence index</h2><table id=\"evidence\"><thead><tr><th>Id</th><th>Kind</th><th>Source</th><th>Observed</th><th>Rubric</th><th>Colour</th><th>Severity</th></tr></thead><tbody>");
    for e in &r.evidence {
        let _ = write!(
            h,
            "<tr id=\"{}\"><td>{}</td><td>{:?}</td><td><code>{}</code></td><td>{}{}</td><td>{}</td><td class=\"c-{color}\">{color}</td><td>{}</td></tr>",
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
            },
            text(&e.rubric),
            e.severity.map_or("-", |s| s.title()),
            color = e.color,
        );
    }
    h.push_str("</tbody></table></main></body></html>");
    h
}

/// HTML-escape text for element content and quoted attributes.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
