//! An upstream's tool listing against its allowlist and pins: what is offered, what is held
//! back (quarantined), and why.

use super::*;

/// An allowlisted tool the gateway does not offer because its definition is not the pinned one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quarantined {
    /// The pin in force, if any.
    pub(crate) pinned: Option<String>,
    /// The digest of the definition the upstream now offers.
    pub(crate) seen: String,
    /// Why, for the operator.
    pub(crate) why: String,
}

/// Why a name listed with two definitions is held back.
pub(crate) const LISTED_TWICE: &str =
    "the upstream lists it more than once, with different definitions";

/// The allowlisted names `listing` gives more than one definition, each with its definitions'
/// digests in order (so what is recorded does not change with the listing's order).
pub(crate) fn listed_twice(config: &registry::Server, listing: &[Tool]) -> Vec<(String, String)> {
    let mut digests: HashMap<&str, std::collections::BTreeSet<String>> = HashMap::new();
    for tool in listing
        .iter()
        .filter(|t| config.tools.contains_key(t.name.as_ref()))
    {
        if let Ok(def) = serde_json::to_value(tool) {
            digests
                .entry(tool.name.as_ref())
                .or_default()
                .insert(registry::tool_pin(&def));
        }
    }
    let mut twice: Vec<(String, String)> = digests
        .into_iter()
        .filter(|(_, d)| d.len() > 1)
        .map(|(name, d)| (name.to_owned(), Vec::from_iter(d).join(" ")))
        .collect();
    twice.sort();
    twice
}

impl Upstream {
    /// Allowlisted tools held back because their definitions are not the pinned ones.
    pub(crate) fn quarantined(&self, tool: &str) -> Option<Quarantined> {
        self.quarantine.read().ok()?.get(tool).cloned()
    }

    /// Every quarantined tool, by name (for the self-audit and the operator).
    pub(crate) fn quarantine(&self) -> Vec<(String, Quarantined)> {
        self.quarantine
            .read()
            .map(|q| {
                let mut v: Vec<_> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            })
            .unwrap_or_default()
    }

    /// The pin a tool's definition must match, or why there is none.
    fn expected_pin(
        &self,
        config: &registry::Server,
        tool: &str,
        seen: &str,
    ) -> Result<String, &'static str> {
        if let Some(pins) = &config.pins {
            return pins
                .get(tool)
                .cloned()
                .ok_or("the tool is allowlisted but not pinned; run `portcullis pin`");
        }
        match (&config.source, self.profile) {
            (registry::ServerSource::Builtin(_), _) => Ok(seen.to_string()),
            (registry::ServerSource::Http { .. }, registry::Profile::Production) => {
                Err("the server has no `pin`; run `portcullis pin`")
            }
            _ => {
                // No pins in config: the first definition seen in this process is the one kept.
                let Ok(mut first) = self.first_seen.lock() else {
                    return Err("the gateway cannot track first-seen definitions");
                };
                Ok(first
                    .entry(tool.to_string())
                    .or_insert_with(|| seen.to_string())
                    .clone())
            }
        }
    }

    /// Record endpoint `ep`'s listing (`None`: it failed) and apply every endpoint's: the
    /// allowlisted tools whose definitions match their pins, and are the same on every endpoint
    /// that listed them, are offered. A mismatch, an unpinned tool, a definition with hidden
    /// characters, or one that differs between endpoints is quarantined: not offered, calls
    /// refused, and an event written when that changes.
    /// True when what is offered or held back changed.
    pub(crate) fn set_listing(&self, ep: usize, listed: Option<Vec<Tool>>) -> bool {
        let _serial = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = self.endpoints.get(ep)
            && let Ok(mut slot) = e.listed.lock()
        {
            *slot = listed;
        }
        self.apply_listings()
    }

    /// The pin a definition digested as `seen` must match, and whether it does.
    fn pinned_verdict(
        &self,
        config: &registry::Server,
        tool: &str,
        seen: &str,
    ) -> Result<(), (Option<String>, String)> {
        match self.expected_pin(config, tool, seen) {
            Ok(pin) if pin == seen => Ok(()),
            Ok(pin) => Err((Some(pin), "the definition differs from its pin".to_string())),
            Err(why) => Err((None, why.to_string())),
        }
    }

    /// Apply the endpoints' last listings, with the refresh lock held: the first endpoint's
    /// that has one is checked against the allowlist and pins, and every other endpoint's must
    /// list each allowlisted tool the same.
    /// True when what is offered or held back changed.
    pub(super) fn apply_listings(&self) -> bool {
        let config = self.config();
        let listings: Vec<(usize, Vec<Tool>)> = self
            .endpoints
            .iter()
            .filter_map(|e| Some((e.index, e.listed.lock().ok()?.clone()?)))
            .collect();
        let mut held: HashMap<String, Quarantined> = HashMap::new();
        // First, a name any endpoint lists with two definitions: held back before any pin is
        // checked or first-seen definition kept, and for the same reason whatever the order.
        for (_, listing) in &listings {
            for (name, seen) in listed_twice(&config, listing) {
                let pinned = config.pins.as_ref().and_then(|p| p.get(&name).cloned());
                held.entry(name).or_insert_with(|| Quarantined {
                    pinned,
                    seen,
                    why: LISTED_TWICE.to_owned(),
                });
            }
        }
        let mut listings = listings.into_iter();
        let listed = listings.next().map(|(_, l)| l).unwrap_or_default();
        // Each allowlisted tool's definition digest on every other endpoint that listed.
        for (index, other) in listings {
            let digests: HashMap<&str, String> = other
                .iter()
                .filter(|t| config.tools.contains_key(t.name.as_ref()))
                .filter_map(|t| {
                    Some((
                        t.name.as_ref(),
                        registry::tool_pin(&serde_json::to_value(t).ok()?),
                    ))
                })
                .collect();
            for tool in listed
                .iter()
                .filter(|t| config.tools.contains_key(t.name.as_ref()))
            {
                let Some(base) = serde_json::to_value(tool)
                    .ok()
                    .map(|d| registry::tool_pin(&d))
                else {
                    continue;
                };
                let seen = digests.get(tool.name.as_ref());
                if seen == Some(&base) || held.contains_key(tool.name.as_ref()) {
                    continue;
                }
                let label = self
                    .endpoints
                    .get(index)
                    .map(Endpoint::label)
                    .unwrap_or_default();
                let why = match seen {
                    Some(_) => format!("endpoint `{label}` offers a different definition"),
                    None => format!("endpoint `{label}` does not offer it"),
                };
                let pinned = config
                    .pins
                    .as_ref()
                    .and_then(|p| p.get(tool.name.as_ref()).cloned());
                let seen = seen.cloned().unwrap_or_else(|| "absent".to_owned());
                held.insert(tool.name.to_string(), Quarantined { pinned, seen, why });
            }
        }
        // A name listed again with the same definition is one tool (one with two is held).
        let mut taken = std::collections::HashSet::new();
        let mut offered: Vec<Arc<Offered>> = listed
            .into_iter()
            .filter_map(|tool| {
                // Byte-exact match against the allowlist: no folding, no normalisation.
                config.tools.get(tool.name.as_ref())?;
                if held.contains_key(tool.name.as_ref()) {
                    return None;
                }
                if !taken.insert(tool.name.to_string()) {
                    return None;
                }
                let def = serde_json::to_value(&tool).ok()?;
                let seen = registry::tool_pin(&def);
                let verdict = match registry::hidden_in_definition(&def) {
                    Some((at, why)) => Err((
                        None,
                        format!(
                            "the definition carries {why} at `{}`",
                            if at.is_empty() { "/" } else { &at }
                        ),
                    )),
                    // Instruction-like text is served only under a pin an operator wrote
                    // after seeing it (`portcullis pin --confirm`), never first-seen.
                    None if config
                        .pins
                        .as_ref()
                        .is_none_or(|p| !p.contains_key(tool.name.as_ref())) =>
                    {
                        match registry::instructions_in_definition(&def) {
                            Some((at, what)) => Err((
                                None,
                                format!(
                                    "the definition carries instruction-like text (`{what}`) at `{}`; review it, then `portcullis pin --confirm {}/{}`",
                                    if at.is_empty() { "/" } else { &at },
                                    self.name,
                                    tool.name
                                ),
                            )),
                            None => self.pinned_verdict(&config, &tool.name, &seen),
                        }
                    }
                    None => self.pinned_verdict(&config, &tool.name, &seen),
                };
                if let Err((pinned, why)) = verdict {
                    held.insert(tool.name.to_string(), Quarantined { pinned, seen, why });
                    return None;
                }
                Offered::derive(&self.name, &config, tool).map(Arc::new)
            })
            .collect();
        // Nothing held is offered (a name is held before its definition is taken, so this keeps
        // only what already holds).
        offered.retain(|o| !held.contains_key(o.tool.name.as_ref()));
        let before = self
            .quarantine
            .read()
            .map(|q| q.clone())
            .unwrap_or_default();
        for (tool, q) in &held {
            if before.get(tool) == Some(q) {
                continue;
            }
            tracing::warn!(server = %self.name, %tool, seen = %q.seen, pinned = ?q.pinned, why = %q.why, "tool quarantined");
            if let Some(audit) = &self.audit {
                let mut e = audit::Event::new("tool.quarantine");
                e.server = Some(self.name.clone());
                e.tool = Some(tool.clone());
                e.outcome = Some("quarantined");
                e.reason = Some(q.why.clone());
                e.detail = Some(json!({ "pinned": q.pinned, "seen": q.seen }));
                audit.note(e);
            }
        }
        let fingerprints = |tools: &[Arc<Offered>]| -> Vec<(String, String)> {
            tools
                .iter()
                .map(|o| (o.tool.name.to_string(), o.fingerprint.clone()))
                .collect()
        };
        let changed =
            before != held || fingerprints(self.tools().as_slice()) != fingerprints(&offered);
        if let Ok(mut slot) = self.quarantine.write() {
            *slot = held;
        }
        if let Ok(mut slot) = self.tools.write() {
            *slot = Arc::new(OfferedTools::new(offered));
        }
        changed
    }
}

// Last in the file: what follows `cfg(test)` is read as test code by the vocabulary check.
#[cfg(test)]
impl Upstream {
    /// Replace the offered tools with the allowlisted part of `listed` whose definitions match
    /// their pins (the single endpoint's listing). See [`Upstream::set_listing`].
    pub(crate) fn set_tools(&self, listed: Vec<Tool>) {
        let _changed = self.set_listing(0, Some(listed));
    }
}
