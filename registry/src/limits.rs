//! `limits:`: rate limits, concurrency caps and budgets per principal, checked at load.
//!
//! Each entry names whom it applies to (`match`: `level:name`, or `level:*` for every principal
//! of the level, each counted on its own), optionally a server and one of its tools, and sets
//! any of a `rate` (with an optional `burst`), a `concurrency` cap and a `budget` of cost units
//! per calendar hour, day or month (UTC). Every entry that matches a call applies, so the
//! tightest wins.

use policy::Level;
use serde::Deserialize;

use crate::error::ConfigProblem;
use crate::source_map::SourceMap;
use crate::validate::{Rate, Server};

/// One `limits:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    #[serde(rename = "match")]
    pub(crate) principal: Option<String>,
    pub(crate) server: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) rate: Option<String>,
    pub(crate) burst: Option<u32>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) budget: Option<RawBudget>,
}

/// `budget:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub(crate) units: Option<u64>,
    pub(crate) per: Option<String>,
    #[serde(default)]
    pub(crate) refund_failed: bool,
    #[serde(default)]
    pub(crate) exact: bool,
}

/// The calendar period a budget renews in (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
}

impl Period {
    fn parse(text: &str) -> Option<Period> {
        match text {
            "h" | "hour" => Some(Period::Hour),
            "d" | "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The window holding the Unix time `at_s`: its label (`2026-12-05T21`, `2026-12-05`,
    /// `2026-12`) and the Unix time it ends.
    pub fn window(self, at_s: i64) -> (String, i64) {
        let Some(t) = chrono::DateTime::from_timestamp(at_s, 0) else {
            return (String::from("invalid"), at_s);
        };
        use chrono::{Datelike as _, Timelike as _};
        let day_start = at_s - at_s.rem_euclid(86_400);
        // Written with `format!` rather than `strftime` patterns, which are parsed at each use:
        // every call with a budget labels its window.
        let (year, month, day) = (t.year(), t.month(), t.day());
        match self {
            Period::Hour => (
                format!("{year:04}-{month:02}-{day:02}T{:02}", t.hour()),
                at_s - at_s.rem_euclid(3600) + 3600,
            ),
            Period::Day => (format!("{year:04}-{month:02}-{day:02}"), day_start + 86_400),
            Period::Month => {
                let (y, m) = match month {
                    12 => (year + 1, 1),
                    m => (year, m + 1),
                };
                let end = chrono::NaiveDate::from_ymd_opt(y, m, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map_or(at_s, |d| d.and_utc().timestamp());
                (format!("{year:04}-{month:02}"), end)
            }
        }
    }
}

/// Units a principal may spend per period; each call spends its tool's `cost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub units: u64,
    pub per: Period,
    /// Give the units back when the upstream could not answer (unreachable, timed out).
    pub refund_failed: bool,
    /// Every call reserves its own cost in the store: no units are held ahead, however large
    /// the budget, so the store's count is the calls' at every moment.
    pub exact: bool,
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} units/{}", self.units, self.per.as_str())
    }
}

/// Whom an entry applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitMatch {
    pub level: Level,
    /// `None`: every principal of the level, each with an allowance of its own.
    pub name: Option<String>,
}

impl std::fmt::Display for LimitMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            self.level.as_str(),
            self.name.as_deref().unwrap_or("*")
        )
    }
}

/// One entry of `limits:`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Its place in the file (`limits[index]`), for records and refusals.
    pub index: usize,
    pub principal: LimitMatch,
    /// The server it applies to; `None`: every server.
    pub server: Option<String>,
    /// The tool (of `server`) it applies to; `None`: every tool.
    pub tool: Option<String>,
    pub rate: Option<Rate>,
    /// Calls allowed at once before the rate applies (default: the rate's count).
    pub burst: Option<u32>,
    /// Calls running at once.
    pub concurrency: Option<u32>,
    pub budget: Option<Budget>,
}

impl Limit {
    /// Whether the entry covers a call to `tool` on `server`.
    pub fn covers(&self, server: &str, tool: &str) -> bool {
        self.server.as_deref().is_none_or(|s| s == server)
            && self.tool.as_deref().is_none_or(|t| t == tool)
    }

    /// The name its budget's usage is kept under in the store: whom, where and the period, so
    /// that reordering entries or changing `units` keeps what was spent.
    pub fn budget_key(&self) -> String {
        format!(
            "{} {}/{} per {}",
            self.principal,
            self.server.as_deref().unwrap_or("*"),
            self.tool.as_deref().unwrap_or("*"),
            self.budget.map_or("-", |b| b.per.as_str()),
        )
    }
}

impl crate::validate::Registry {
    /// The config paths that bound how often, or how much, every caller can call `tool` on
    /// `server`: its own `rate`, and each `limits:` entry with a `rate`, or a `budget` the tool
    /// spends from (`cost` above 0), that covers it and applies to every caller: `level:*` for a
    /// level every admitted caller has (one `identity.require` names; the key level when API
    /// keys are the only credentials). An entry for some principals bounds only those.
    pub fn call_bounds(&self, server: &str, tool: &str) -> Vec<String> {
        let entry = self
            .servers
            .iter()
            .find(|s| s.name == server)
            .and_then(|s| s.tools.get(tool));
        let own = entry
            .and_then(|t| t.rate)
            .map(|_| format!("servers.{server}.tools.{tool}.rate"));
        let spends = entry.is_some_and(|t| t.cost > 0);
        let entries = self
            .limits
            .iter()
            .filter(|l| l.covers(server, tool) && self.applies_to_everyone(l))
            .filter(|l| l.rate.is_some() || (spends && l.budget.is_some()))
            .map(|l| format!("limits[{}]", l.index));
        own.into_iter().chain(entries).collect()
    }

    /// Whether every admitted caller meets `limit`: `level:*` for a level `identity.require`
    /// names, or for the key level when API keys are the only credentials.
    pub fn applies_to_everyone(&self, limit: &Limit) -> bool {
        let m = &limit.principal;
        m.name.is_none()
            && (self.access.policy.requires(m.level)
                || (m.level == Level::Key && self.access.oidc.is_empty()))
    }
}

/// The largest concurrency cap (a semaphore's permits on every target).
const MAX_CONCURRENCY: u32 = 1_000_000;

pub(crate) fn limits(
    raw: &[RawLimit],
    servers: &[Server],
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<Limit> {
    let mut out = Vec::new();
    for (index, r) in raw.iter().enumerate() {
        let at = |key: &str| format!("limits[{index}].{key}");
        let before = problems.len();
        let principal = match r.principal.as_deref().map(parse_match) {
            Some(Ok(m)) => Some(m),
            Some(Err(why)) => {
                problems.push(map.problem(
                    &at("match"),
                    why,
                    "write `level:name` or `level:*`, with a level of org, team, key, user or agent",
                ));
                None
            }
            None => {
                problems.push(map.problem(
                    &format!("limits[{index}]"),
                    "a limit without `match`".into(),
                    "say whom it applies to, e.g. `match: team:research` or `match: key:*`",
                ));
                None
            }
        };
        let server = r
            .server
            .as_ref()
            .and_then(|s| match servers.iter().find(|x| &x.name == s) {
                Some(found) => Some(found),
                None => {
                    let names: Vec<&str> = servers.iter().map(|x| x.name.as_str()).collect();
                    problems.push(map.problem(
                        &at("server"),
                        format!("`{s}` is not a configured server"),
                        &format!("use one of: {}", names.join(", ")),
                    ));
                    None
                }
            });
        if let Some(t) = &r.tool {
            match (&r.server, server) {
                (None, _) => problems.push(map.problem(
                    &at("tool"),
                    format!("`tool: {t}` without a `server`"),
                    "add the `server` the tool belongs to",
                )),
                (Some(_), Some(s)) if !s.tools.contains_key(t) => problems.push(map.problem(
                    &at("tool"),
                    format!("`{t}` is not allowlisted on `{}`", s.name),
                    "name a tool from the server's `tools`",
                )),
                _ => {}
            }
        }
        let rate = r.rate.as_deref().and_then(|text| {
            let parsed = Rate::parse(text);
            if parsed.is_none() {
                problems.push(map.problem(
                    &at("rate"),
                    format!("`{text}` is not a rate"),
                    "write calls per period, e.g. `600/min`, `10/s`, `1000/h`, `5000/day`",
                ));
            }
            parsed
        });
        if r.burst == Some(0) || (r.burst.is_some() && r.rate.is_none()) {
            problems.push(map.problem(
                &at("burst"),
                "`burst` must be at least 1 and goes with a `rate`".into(),
                "remove `burst`, or give the entry a `rate` and a burst of 1 or more",
            ));
        }
        if let Some(r) = rate
            && r.per.checked_div(r.count).is_none_or(|d| d.is_zero())
        {
            problems.push(map.problem(
                &at("rate"),
                format!("`{r}` is finer than the limiter can count"),
                "write at most 1000000000 calls per second",
            ));
        }
        if r.concurrency.is_some_and(|n| n > MAX_CONCURRENCY) {
            problems.push(map.problem(
                &at("concurrency"),
                format!("`concurrency` above {MAX_CONCURRENCY} is not a cap"),
                "write a smaller number, or remove it",
            ));
        }
        if r.concurrency == Some(0) {
            problems.push(map.problem(
                &at("concurrency"),
                "`concurrency: 0` would refuse every call".into(),
                "set at least 1, or use the kill switch to stop calls",
            ));
        }
        let budget = r
            .budget
            .as_ref()
            .and_then(|b| budget(b, &at("budget"), map, problems));
        if r.rate.is_none() && r.concurrency.is_none() && r.budget.is_none() {
            problems.push(map.problem(
                &format!("limits[{index}]"),
                "a limit that sets neither `rate`, `concurrency` nor `budget`".into(),
                "add `rate: N/period`, `concurrency: N` and/or `budget: { units: N, per: day }`",
            ));
        }
        if let Some(principal) = principal
            && problems.len() == before
        {
            let limit = Limit {
                index,
                principal,
                server: r.server.clone(),
                tool: r.tool.clone(),
                rate,
                burst: r.burst,
                concurrency: r.concurrency,
                budget,
            };
            // Usage is kept by whom, where and period: two such budgets would share one count.
            let same = out
                .iter()
                .find(|o: &&Limit| o.budget.is_some() && o.budget_key() == limit.budget_key());
            match (limit.budget, same) {
                (Some(_), Some(first)) => problems.push(map.problem(
                    &at("budget"),
                    format!(
                        "a second budget for {} per {} (limits[{}] has one)",
                        limit.principal,
                        limit.budget.map_or("", |b| b.per.as_str()),
                        first.index
                    ),
                    "merge the two budgets into one entry, or give one of them another period",
                )),
                _ => out.push(limit),
            }
        }
    }
    out
}

fn budget(
    raw: &RawBudget,
    at: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Budget> {
    let units = match raw.units {
        Some(0) | None => {
            problems.push(map.problem(
                &format!("{at}.units"),
                "a budget needs `units` of 1 or more".into(),
                "write `units: N`, the cost units a principal may spend per period (each call spends its tool's `cost`, 1 unless set)",
            ));
            None
        }
        Some(n) if n > i64::MAX as u64 => {
            problems.push(map.problem(
                &format!("{at}.units"),
                format!("`{n}` units is more than the store can count"),
                "write a smaller number",
            ));
            None
        }
        n => n,
    };
    let per = match raw.per.as_deref().map(|p| (p, Period::parse(p))) {
        Some((_, Some(p))) => Some(p),
        Some((text, None)) => {
            problems.push(map.problem(
                &format!("{at}.per"),
                format!("`{text}` is not a budget period"),
                "write `hour`, `day` or `month` (calendar periods in UTC)",
            ));
            None
        }
        None => {
            problems.push(map.problem(
                at,
                "a budget without `per`".into(),
                "add `per: hour`, `per: day` or `per: month` (calendar periods in UTC)",
            ));
            None
        }
    };
    Some(Budget {
        units: units?,
        per: per?,
        refund_failed: raw.refund_failed,
        exact: raw.exact,
    })
}

fn parse_match(text: &str) -> Result<LimitMatch, String> {
    let Some((level, name)) = text.split_once(':') else {
        return Err(format!("`{text}` is not `level:name`"));
    };
    let level: Level = level
        .parse()
        .map_err(|_| format!("`{level}` is not an identity level"))?;
    let name = match name {
        "*" => None,
        "" => return Err(format!("`{text}` names no principal")),
        n => Some(n.to_string()),
    };
    Ok(LimitMatch { level, name })
}

#[cfg(test)]
mod tests;
