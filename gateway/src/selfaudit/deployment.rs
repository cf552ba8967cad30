//! How the running process is deployed, as evidence: the artefact that started it (the image,
//! the chart and the systemd unit name themselves in `PORTCULLIS_DEPLOYMENT`) and the
//! confinement the kernel reports for this process, read from `/proc`.

use super::probes::Outcome;

/// What the deployment probe saw; `None` when no artefact of this project started the process.
pub(crate) fn probe() -> Option<Outcome> {
    let by = std::env::var("PORTCULLIS_DEPLOYMENT").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    Some(observe(&by, &status, &mounts))
}

/// The confinement in `status` (`/proc/self/status`) and `mounts` (`/proc/self/mountinfo`).
fn observe(by: &str, status: &str, mounts: &str) -> Outcome {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
    };
    let uid = field("Uid:").split_whitespace().nth(1).unwrap_or("?");
    let no_new_privs = field("NoNewPrivs:") == "1";
    // Seccomp 2: a filter is in force.
    let seccomp = field("Seccomp:") == "2";
    let caps = field("CapEff:");
    let no_caps = !caps.is_empty() && caps.trim_start_matches('0').is_empty();
    let read_only_root = mounts.lines().any(|l| {
        let parts: Vec<&str> = l.split_whitespace().collect();
        parts.get(4) == Some(&"/")
            && parts
                .get(5)
                .is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    let facts = [
        (uid != "0" && uid != "?", "a non-root user".to_string()),
        (no_new_privs, "no new privileges".to_string()),
        (seccomp, "a seccomp filter".to_string()),
        (no_caps, "no effective capabilities".to_string()),
        (read_only_root, "a read-only root filesystem".to_string()),
    ];
    let held: Vec<&str> = facts
        .iter()
        .filter(|(h, _)| *h)
        .map(|(_, f)| f.as_str())
        .collect();
    let missing: Vec<&str> = facts
        .iter()
        .filter(|(h, _)| !*h)
        .map(|(_, f)| f.as_str())
        .collect();
    let ok = facts.iter().take(4).all(|(h, _)| *h);
    let mut observed = format!(
        "started by `{by}` as uid {uid}; the kernel reports {}",
        if held.is_empty() {
            "no confinement".to_string()
        } else {
            held.join(", ")
        }
    );
    if !missing.is_empty() {
        observed.push_str(&format!("; without {}", missing.join(", ")));
    }
    Outcome { ok, observed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_process_is_reported_as_such_and_a_root_one_is_not() {
        let confined = "Uid:\t65532\t65532\t65532\t65532\nNoNewPrivs:\t1\nSeccomp:\t2\nCapEff:\t0000000000000000\n";
        let mounts = "22 1 0:21 / / ro,relatime - overlay overlay rw\n";
        let o = observe("helm:portcullis-0.1.0", confined, mounts);
        assert!(o.ok, "{}", o.observed);
        assert!(
            o.observed.contains("a read-only root filesystem") && !o.observed.contains("without")
        );
        let root = "Uid:\t0\t0\t0\t0\nNoNewPrivs:\t0\nSeccomp:\t0\nCapEff:\t000001ffffffffff\n";
        let o = observe(
            "image",
            root,
            "22 1 0:21 / / rw,relatime - overlay overlay rw\n",
        );
        assert!(!o.ok);
        assert!(
            o.observed.ends_with("as uid 0; the kernel reports no confinement; without a non-root user, no new privileges, a seccomp filter, no effective capabilities, a read-only root filesystem"),
            "{}",
            o.observed
        );
    }
}
