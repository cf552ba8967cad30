//! The rmcp client (the official Rust SDK) through the gateway: both lifecycles, federated and
//! per-server endpoints, HTTP and stdio upstreams.

use portcullis_tests::{FIXTURE_TOOLS, Fixture, Gateway, bin, file_digest, fixture_server};
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientServiceExt as _, RoleClient};
use serde_json::{Map, json};

async fn connect(url: &str, key: &str, modern: bool) -> RunningService<RoleClient, ClientConfig> {
    let cfg =
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    let transport = StreamableHttpClientTransport::from_config(cfg);
    let lifecycle = if modern {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        }
    } else {
        ClientLifecycleMode::Initialize
    };
    ClientConfig::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .unwrap()
}

async fn echo(client: &RunningService<RoleClient, ClientConfig>, tool: &str, text: &str) -> String {
    let mut args = Map::new();
    args.insert("text".into(), json!(text));
    let r = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap();
    r.content[0].as_text().unwrap().text.clone()
}

#[tokio::test]
async fn both_lifecycles_over_http_upstream() {
    let fx = Fixture::start("both").unwrap();
    let gw = Gateway::start(&fixture_server("fixture", &fx.url)).unwrap();
    for modern in [false, true] {
        let c = connect(&gw.mcp(), &gw.key, modern).await;
        let proto = c.peer_info().unwrap().protocol_version.clone();
        assert_eq!(
            proto.as_str(),
            if modern { "2026-07-28" } else { "2025-11-25" }
        );
        let tools = c.list_all_tools().await.unwrap();
        assert_eq!(
            tools.len(),
            FIXTURE_TOOLS.len() - 1,
            "late_tool is allowlisted but not offered"
        );
        assert!(tools.iter().all(|t| t.name.starts_with("fixture__")));
        assert_eq!(echo(&c, "fixture__echo", "via rmcp").await, "via rmcp");

        let one = connect(&gw.server("fixture"), &gw.key, modern).await;
        assert_eq!(echo(&one, "echo", "one server").await, "one server");
        let prompts = one.list_all_prompts().await.unwrap();
        assert!(prompts.iter().any(|p| p.name == "test_simple_prompt"));
        let _ = one.cancel().await;
        let _ = c.cancel().await;
    }
}

#[tokio::test]
async fn stdio_upstream_through_the_gateway() {
    let servers = format!(
        "  local:\n    command: {{ program: {}, integrity: \"{}\", args: [\"--stdio\"] }}\n    tools:\n      echo: {{ class: read }}\n      test_tool_with_progress: {{ class: read }}\n",
        bin("fixture-upstream").display(),
        file_digest(&bin("fixture-upstream")).unwrap()
    );
    let gw = Gateway::start(&servers).unwrap();
    for modern in [false, true] {
        let c = connect(&gw.mcp(), &gw.key, modern).await;
        let mut names: Vec<String> = c
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["local__echo", "local__test_tool_with_progress"]);
        assert_eq!(echo(&c, "local__echo", "over stdio").await, "over stdio");
        let _ = c.cancel().await;
    }
}
