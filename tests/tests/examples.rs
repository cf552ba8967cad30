//! The configs in `examples/` are ones the gateway accepts: each loads, `portcullis check` finds
//! nothing but the pins an operator writes with `portcullis pin` against their own servers, and
//! the stdio example's pinned packages really start and offer the tools it allowlists.

use std::process::Command;

use portcullis_tests::{bin, workspace};

fn examples() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(workspace().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

#[test]
fn every_example_loads_and_lacks_only_the_pins_of_its_http_servers() {
    for file in examples() {
        let out = Command::new(bin("portcullis"))
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("invalid config") && matches!(out.status.code(), Some(0 | 1)),
            "{}: {stderr}",
            file.display()
        );
        assert!(
            stdout.contains("has no tool pins") || stdout.contains(": ready:"),
            "{}: {stdout}{stderr}",
            file.display()
        );
        for line in stdout
            .lines()
            .filter(|l| !l.trim_start().starts_with("fix:"))
        {
            assert!(
                line.contains("has no tool pins") || line.contains(": ready:"),
                "{}: {line}",
                file.display()
            );
        }
    }
}

#[test]
fn the_stdio_example_starts_its_pinned_packages_and_pins_their_tools() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "init"]);
    let text = std::fs::read_to_string(workspace().join("examples/stdio-packages.yaml"))
        .unwrap()
        .replace("/srv/shared", &shared.display().to_string())
        .replace("/srv/repos/handbook", &repo.display().to_string());
    let config = dir.path().join("stdio.yaml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(bin("portcullis"))
        .args(["pin", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pinned = std::fs::read_to_string(&config).unwrap();
    for tool in [
        "read_text_file",
        "list_directory",
        "write_file",
        "git_status",
        "git_log",
        "get_current_time",
    ] {
        assert!(
            stdout.contains(&format!("+ {tool}: sha256:")),
            "{tool}: {stdout}"
        );
    }
    assert!(pinned.contains("pin:"), "{pinned}");
}
