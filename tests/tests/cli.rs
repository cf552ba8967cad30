//! The command line: config errors and exit codes (the quickstart has `quickstart.rs`).

use std::process::Command;

use portcullis_tests::bin;

/// Write `text` as a config, run `serve` on it, return (exit code, stderr, path).
fn serve_config(dir: &std::path::Path, text: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let path = dir.join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin("portcullis"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

#[test]
fn invalid_config_exits_64_with_location_and_fix_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 would fail to bind as non-root, and binding must not even be attempted.
    let (code, err, path) = serve_config(
        dir.path(),
        "listen: 127.0.0.1:1\nservers:\n  notes:\n    url: http://127.0.0.1:9/mcp\n",
    );
    assert_eq!(code, Some(64));
    assert!(err.contains(&format!("{}:3:3:", path.display())), "{err}");
    assert!(
        err.contains("has no `tools` allowlist") && err.contains("fix:"),
        "{err}"
    );

    let (code, err, _) = serve_config(
        dir.path(),
        "servers:\n  notes:\n    url: http://127.0.0.1:9/mcp\n    tools: { a: { class: read } }\n    colour: blue\n",
    );
    assert_eq!(code, Some(64));
    assert!(
        err.contains(":5:5:") && err.contains("unknown key `colour`"),
        "{err}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("portcullis"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("portcullis")
                && text.contains("quickstart")
                && text.contains("approvals"),
            "{shell}: {text}"
        );
    }
    let out = Command::new(bin("portcullis"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
