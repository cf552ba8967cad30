//! The official MCP Python SDK against the gateway, in both protocol eras, against upstreams of
//! each era.

use std::process::Command;

use portcullis_tests::{Fixture, Gateway, fixture_server, python, workspace};

fn run_client(gw: &Gateway, mode: &str) {
    let script = workspace().join("tests/python/client_e2e.py");
    let out = Command::new(python())
        .arg(script)
        .arg(gw.mcp())
        .arg(&gw.key)
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client ({mode}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn initialize_era_client_through_legacy_and_modern_upstreams() {
    for era in ["legacy", "modern"] {
        let fx = Fixture::start(era).unwrap();
        let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
        run_client(&gw, "legacy");
    }
}

#[test]
fn discover_era_client_through_legacy_and_modern_upstreams() {
    for era in ["legacy", "modern"] {
        let fx = Fixture::start(era).unwrap();
        let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
        run_client(&gw, "2026-07-28");
    }
}
