//! The deployment artefacts (`deploy/`, `helm/`, `terraform/`) validated by the tools their
//! users run: Helm (the Helm v4 library), the Kubernetes schemas, checkov, hadolint,
//! systemd-analyze and an HCL parser, and the configs they carry loaded by the real binary
//! (`deploy/validate.py` says what each check is).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

use portcullis_tests::{bin, workspace};

#[test]
fn deploy_artefacts_pass_their_users_tools() {
    let python = workspace().join(".venv-deploy/bin/python");
    let out = Command::new(&python)
        .arg(workspace().join("deploy/validate.py"))
        .arg(bin("portcullis"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs it)", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all deploy checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
