//! The official MCP conformance suite (`@modelcontextprotocol/conformance`), every server scenario
//! of every requirement set its release supports, run against `/mcp/fixture` with the gateway
//! fronting the fixture upstream over per-session upstream connections.

use std::process::Command;

use portcullis_tests::{Fixture, Gateway, fixture_server, node, relay, workspace};

#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_through_the_gateway() {
    // The suite's 0.1.16 release speaks the initialize-era wire; its fixture upstream does too,
    // so resource subscriptions (gone in 2026-07-28) exist end to end.
    let fx = Fixture::start("legacy").unwrap();
    // Per-session upstream connections: the fixture's log messages, sampling and elicitation
    // requests reach the suite's client that caused them.
    let gw = Gateway::start(&fixture_server("fixture", &fx.url).replace(
        "    allow_private: true\n",
        "    allow_private: true\n    connection: per_session\n",
    ))
    .unwrap();
    let front = relay::start(&gw.base, &gw.key).await.unwrap();
    let suite =
        workspace().join("tests/node/node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let expected = workspace().join("tests/conformance/expected-failures.yaml");
    for spec in ["2025-06-18", "2025-11-25"] {
        let out_dir = gw.dir.path().join(format!("conformance-{spec}"));
        let url = format!("{front}/mcp/fixture");
        let out = tokio::task::spawn_blocking({
            let (suite, expected) = (suite.clone(), expected.clone());
            move || {
                Command::new(node())
                    .arg(suite)
                    .args([
                        "server",
                        "--url",
                        &url,
                        "--spec-version",
                        spec,
                        "--expected-failures",
                    ])
                    .arg(expected)
                    .arg("-o")
                    .arg(out_dir)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "conformance ({spec}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The suite's 0.2 line: every server scenario the 2026-07-28 and 2025-11-25 revisions require,
/// frozen at their release (`--requirements`), through the same gateway front. The checks that
/// still fail are listed with their reasons in `tests/conformance/expected-failures-0.2.yaml`.
/// The 2025-11-25 set runs against `/mcp/fixture` (an upstream of that era, over per-session
/// connections); the 2026-07-28 set against `/mcp/modern`, the same fixture speaking 2026-07-28
/// to the gateway, so that its multi-round tools can ask the suite's client for input through
/// the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn conformance_requirement_sets_of_both_revisions_through_the_gateway() {
    let legacy = Fixture::start("legacy").unwrap();
    let modern = Fixture::start("both").unwrap();
    let config = fixture_server("fixture", &legacy.url).replace(
        "    allow_private: true\n",
        "    allow_private: true\n    connection: per_session\n",
    ) + &fixture_server("modern", &modern.url);
    let gw = Gateway::start(&config).unwrap();
    // The suite sends no credentials: a loopback relay adds the key (written in the tests).
    let front = relay::start(&gw.base, &gw.key).await.unwrap();
    let suite = workspace().join("tests/node/node_modules/conformance-next/dist/index.js");
    let expected = workspace().join("tests/conformance/expected-failures-0.2.yaml");
    for (revision, server) in [("2026-07-28", "modern"), ("2025-11-25", "fixture")] {
        let out_dir = gw.dir.path().join(format!("requirements-{revision}"));
        let url = format!("{front}/mcp/{server}");
        let (suite, expected) = (suite.clone(), expected.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(node())
                .arg(suite)
                .args(["server", "--url", &url, "--requirements", revision])
                .arg("--expected-failures")
                .arg(expected)
                .arg("-o")
                .arg(out_dir)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "conformance requirements {revision} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("passed"), "{stdout}");
    }
}
