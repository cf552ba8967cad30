use super::*;

#[test]
fn labels_are_closed_sets_and_the_text_parses() {
    assert_eq!(method_label("tools/call"), "tools/call");
    assert_eq!(method_label("evil/\"method"), "other");
    assert_eq!(outcome_label("sk-secret"), "error");
    let m = Metrics(Mutex::new(Inner::default()));
    m.request("tools/call", "ok", Duration::from_micros(700));
    m.request("tools/call", "denied", Duration::from_millis(3));
    m.tool_call("fx", "echo", "allowed");
    m.fail_closed("audit_unavailable");
    let text = m.render(&[Gauge {
        name: "portcullis_approvals_pending",
        kind: "gauge",
        help: "Approval requests waiting.",
        labels: vec![],
        value: 2.0,
    }]);
    assert!(
        text.contains("portcullis_requests_total{method=\"tools/call\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "portcullis_request_duration_seconds_bucket{method=\"tools/call\",le=\"0.001\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("portcullis_request_duration_seconds_count{method=\"tools/call\"} 2"),
        "{text}"
    );
    assert!(text.contains("portcullis_fail_closed_total{cause=\"audit_unavailable\"} 1"));
    assert!(text.contains("portcullis_approvals_pending 2"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.starts_with("portcullis_"), "{line}");
    }
}
