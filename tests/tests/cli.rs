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

/// A worker count the gateway cannot use stops it before anything starts, naming the variable
/// and the fix: not a number (the runtime itself would panic on it), none, or more than it
/// allows. One is a count it can use (a worker in reserve comes on top): the start goes on to
/// the config. Commands that serve no calls do not read it.
#[test]
fn an_unusable_worker_count_is_refused_with_the_fix() {
    let out = Command::new(bin("portcullis"))
        .args(["serve", "--config", "/nonexistent/portcullis.yaml"])
        .env("TOKIO_WORKER_THREADS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("TOKIO_WORKER_THREADS"), "{err}");
    assert!(err.contains("/nonexistent/portcullis.yaml"), "{err}");
    for bad in ["0", "many", "4097"] {
        let out = Command::new(bin("portcullis"))
            .args(["serve", "--config", "/nonexistent/portcullis.yaml"])
            .env("TOKIO_WORKER_THREADS", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(
            err.contains(&format!("TOKIO_WORKER_THREADS is {bad:?}")) && err.contains("fix:"),
            "{err}"
        );
    }
    // A command that serves no calls is not stopped by it.
    let out = Command::new(bin("portcullis"))
        .args(["completions", "bash"])
        .env("TOKIO_WORKER_THREADS", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
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

/// The gateway prints its listening lines to stdout; a reader that went away (a closed pipe)
/// must not stop it.
#[test]
fn a_closed_stdout_does_not_stop_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let port = portcullis_tests::quickstart::free_pair();
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{}\nstore: sqlite://{}\nservers:\n  notes:\n    builtin: notes\n    tools: {{ search_notes: {{ class: read }} }}\n",
            port + 1,
            dir.path().join("store.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin("portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        // Its default audit file is relative to here.
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Closed before the gateway writes a line.
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut healthy = false;
    while std::time::Instant::now() < deadline && !healthy {
        std::thread::sleep(std::time::Duration::from_millis(200));
        healthy = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.1 200")
        });
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy && running, "healthy {healthy}, running {running}");
}

/// The gateway turns transparent huge pages off for itself: on a host whose THP mode is
/// `always`, they would back its allocator's heap with 2 MiB pages and nearly double its idle
/// memory. `MIMALLOC_ALLOW_THP=1` keeps what it inherited.
#[cfg(target_os = "linux")]
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let servers = "  notes:\n    builtin: notes\n    tools: { search_notes: { class: read } }\n";
    let of = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("THP_enabled:"));
        line.map(|v| v.trim().to_owned())
            .expect("the kernel reports THP_enabled (Linux 5.0 or later)")
    };
    let thp = |env: &[(&str, &str)]| {
        let gw = portcullis_tests::Gateway::start_with_env("", servers, true, env).unwrap();
        of(&gw.pid().to_string())
    };
    assert!(
        std::env::var_os("MIMALLOC_ALLOW_THP").is_none(),
        "run without MIMALLOC_ALLOW_THP: the gateway would inherit it"
    );
    assert_eq!(
        of("self"),
        "1",
        "run where huge pages are not already off (a kernel with them, a runner that allows them)"
    );
    assert_eq!(thp(&[]), "0");
    assert_eq!(thp(&[("MIMALLOC_ALLOW_THP", "1")]), "1");
    // As the image and the systemd unit set it: mimalloc turns them off itself.
    assert_eq!(thp(&[("MIMALLOC_ALLOW_THP", "0")]), "0");
}
