//! A real MCP server for the end-to-end tests and the conformance suite.
//!
//! It provides the fixture tools, resources and prompts the official conformance suite's server
//! scenarios call for, plus a few the gateway's own tests use (`echo`, `slow`, `add_tool`). It is
//! built on rmcp and serves Streamable HTTP (`--http ADDR`, prints `fixture listening on URL`)
//! or stdio (`--stdio`). `--era legacy|modern|both` limits the protocol revisions it accepts;
//! `--resilience` adds tools that misbehave (see `resilience.rs`).

#![expect(
    deprecated,
    reason = "the conformance fixtures exercise logging, which rmcp marks deprecated"
)]

#[path = "fixture_upstream/conformance.rs"]
mod conformance;
#[path = "fixture_upstream/diagnostics.rs"]
mod diagnostics;
#[path = "fixture_upstream/mrtr.rs"]
mod mrtr;
#[path = "fixture_upstream/resilience.rs"]
mod resilience;
#[path = "fixture_upstream/tasks.rs"]
mod tasks;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, GetTaskParams, GetTaskResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

/// 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A tiny WAV header with no samples.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";

#[derive(Clone)]
struct Fixture {
    era: Era,
    extra_tool: Arc<AtomicBool>,
    /// Whether `late_prompt` is offered (`test_trigger_prompt_change` flips it).
    extra_prompt: Arc<AtomicBool>,
    /// Whether a client subscribed to `test://watched-resource` (and has not unsubscribed).
    watched: Arc<AtomicBool>,
    /// 0: `echo` as published; 1: its description rewritten; 2: rewritten with a hidden
    /// right-to-left override.
    rug: Arc<std::sync::atomic::AtomicU8>,
}

#[derive(Clone, Copy, PartialEq)]
enum Era {
    Legacy,
    Modern,
    Both,
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, McpError> {
    serde_json::from_value(v)
        .map_err(|e| McpError::internal_error(format!("fixture bug: {e}"), None))
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    Tool::new(
        name.to_string(),
        description.to_string(),
        Arc::new(schema.as_object().cloned().unwrap_or_default()),
    )
}

fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources_subscribe()
            .enable_logging()
            .build();
        capabilities
            .extensions
            .get_or_insert_with(Default::default)
            .insert(
                rmcp::model::TASKS_EXTENSION_ID.to_string(),
                Default::default(),
            );
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("portcullis-fixture", "1.0.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match self.era {
            Era::Both => Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
            Era::Legacy => Cow::Owned(
                ProtocolVersion::KNOWN_VERSIONS
                    .iter()
                    .filter(|v| v.has_initialize())
                    .cloned()
                    .collect(),
            ),
            Era::Modern => Cow::Owned(vec![ProtocolVersion::V_2026_07_28]),
        }
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        if self.rug.load(Ordering::SeqCst) == 3 {
            return Err(McpError::internal_error("the tool listing is broken", None));
        }
        let mut tools = self.tools();
        // As some servers do: a tool that needs the client's model is offered only to clients
        // that declare sampling.
        // (Stateful revisions declare it at initialize; 2026-07-28 in each request's `_meta`.)
        let per_request = ctx
            .meta
            .get("io.modelcontextprotocol/clientCapabilities")
            .is_some_and(|c| c.get("sampling").is_some_and(|s| !s.is_null()));
        let at_initialize = ctx
            .peer
            .peer_info()
            .is_some_and(|c| c.capabilities.sampling.is_some());
        if per_request || at_initialize {
            tools.push(tool(
                "ask_model",
                "Asks the client's model; offered only to clients that declare sampling",
                no_args(),
            ));
        }
        // Offered only to clients that can follow a task (the 2026-07-28 extension).
        if ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks())
        {
            tools.push(tool(
                "deferred",
                "Answers with a task that completes after ms milliseconds",
                json!({"type":"object","properties":{"ms":{"type":"integer"}},"required":["ms"]}),
            ));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        TOOL_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        resilience::log_call(&req);
        let args = req
            .arguments
            .clone()
            .map(Value::Object)
            .unwrap_or(json!({}));
        if req.name.as_ref() == "deferred"
            && ctx
                .client_capabilities()
                .is_some_and(|c| c.supports_tasks())
        {
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
            let fails = args.get("fail").and_then(Value::as_bool).unwrap_or(false);
            return tasks::create(ms, fails);
        }
        if let Some(answer) = resilience::call(&req) {
            return answer;
        }
        if let Some(answer) = mrtr::call(&req, ctx.client_capabilities()) {
            return answer;
        }
        if let Some(answer) =
            diagnostics::call(&req, &ctx, &self.extra_tool, &self.extra_prompt).await
        {
            return answer;
        }
        let v = self.call(req.name.as_ref(), args, ctx).await?;
        Ok(from::<CallToolResult>(v)?.into())
    }

    async fn get_task(
        &self,
        req: GetTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        tasks::get(req)
    }

    async fn cancel_task(
        &self,
        req: CancelTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tasks::cancel(req)
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        from(json!({ "resources": [
            { "uri": "test://static-text", "name": "static-text", "mimeType": "text/plain" },
            { "uri": "test://static-binary", "name": "static-binary", "mimeType": "image/png" },
            { "uri": "test://watched-resource", "name": "watched-resource", "mimeType": "text/plain" },
            { "uri": "secret://hidden", "name": "hidden", "mimeType": "text/plain" } ] }))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        from(json!({ "resourceTemplates": [
            { "uriTemplate": "test://template/{id}/data", "name": "template", "mimeType": "application/json" } ] }))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = req.uri.clone();
        let contents = match uri.as_str() {
            "test://static-text" => {
                json!({ "uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource." })
            }
            "test://static-binary" => json!({ "uri": uri, "mimeType": "image/png", "blob": PNG }),
            "test://watched-resource" => {
                json!({ "uri": uri, "mimeType": "text/plain", "text": "watched" })
            }
            "secret://hidden" => json!({ "uri": uri, "mimeType": "text/plain", "text": "hidden" }),
            u => match u
                .strip_prefix("test://template/")
                .and_then(|r| r.strip_suffix("/data"))
            {
                Some(id) => json!({ "uri": uri, "mimeType": "application/json",
                    "text": json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") }).to_string() }),
                None => {
                    return Err(McpError::resource_not_found(
                        "Resource not found",
                        Some(json!({ "uri": uri })),
                    ));
                }
            },
        };
        Ok(from::<ReadResourceResult>(json!({ "contents": [contents] }))?.into())
    }

    async fn subscribe(
        &self,
        p: SubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if p.uri == "test://watched-resource" {
            self.watched.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        p: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if p.uri == "test://watched-resource" {
            self.watched.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        from(json!({ "prompts": [
            { "name": "test_simple_prompt", "description": "A simple prompt without arguments" },
            { "name": "test_prompt_with_arguments", "description": "A prompt with arguments", "arguments": [
                { "name": "arg1", "description": "First argument", "required": true },
                { "name": "arg2", "description": "Second argument", "required": true } ] },
            { "name": "test_prompt_with_embedded_resource", "description": "A prompt with an embedded resource", "arguments": [
                { "name": "resourceUri", "description": "URI of the resource to embed", "required": true } ] },
            { "name": "test_prompt_with_image", "description": "A prompt with an image" },
            { "name": mrtr::PROMPT, "description": "A prompt that asks the client for context first" } ] }))
        .map(|mut listed: ListPromptsResult| {
            if self.extra_prompt.load(Ordering::SeqCst) {
                listed.prompts.extend(from(json!({ "name": "late_prompt", "description": "Appeared after test_trigger_prompt_change" })));
            }
            listed
        })
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if req.name == mrtr::PROMPT {
            return mrtr::prompt(&req);
        }
        let arg = |k: &str| {
            req.arguments
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let user = |content: Value| json!({ "role": "user", "content": content });
        let messages = match req.name.as_str() {
            "test_simple_prompt" => vec![user(
                json!({ "type": "text", "text": "This is a simple prompt for testing." }),
            )],
            "test_prompt_with_arguments" => vec![user(json!({ "type": "text",
                "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2")) }))],
            "test_prompt_with_embedded_resource" => vec![
                user(
                    json!({ "type": "resource", "resource": { "uri": arg("resourceUri"), "mimeType": "text/plain",
                    "text": "Embedded resource content for testing." } }),
                ),
                user(
                    json!({ "type": "text", "text": "Please process the embedded resource above." }),
                ),
            ],
            "test_prompt_with_image" => vec![
                user(json!({ "type": "image", "data": PNG, "mimeType": "image/png" })),
                user(json!({ "type": "text", "text": "Please analyze the image above." })),
            ],
            "late_prompt" if self.extra_prompt.load(Ordering::SeqCst) => vec![user(
                json!({ "type": "text", "text": "A prompt that appeared later." }),
            )],
            _ => return Err(McpError::invalid_params("Unknown prompt", None)),
        };
        Ok(from::<GetPromptResult>(json!({ "messages": messages }))?.into())
    }

    async fn complete(
        &self,
        _: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        from(
            json!({ "completion": { "values": ["test1", "test2"], "total": 2, "hasMore": false } }),
        )
    }

    async fn set_level(
        &self,
        params: SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Ok(mut l) = LEVELS.lock()
            && let Ok(Value::String(level)) = serde_json::to_value(params.level)
        {
            l.push(level);
        }
        Ok(())
    }
}

/// Tool calls received, over all sessions.
static TRACEPARENTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static AUTHORIZATIONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// The levels of the `logging/setLevel` requests received, in order.
static LEVELS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

static TOOL_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// `slow` calls that ended because the client cancelled them.
static CANCELLATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    resilience::start(&args);
    let era = match flag("--era").as_deref() {
        Some("legacy") => Era::Legacy,
        Some("modern") => Era::Modern,
        _ => Era::Both,
    };
    let fixture = Fixture {
        era,
        extra_tool: Arc::new(AtomicBool::new(false)),
        extra_prompt: Arc::new(AtomicBool::new(false)),
        watched: Arc::new(AtomicBool::new(false)),
        // `--rug N` starts with `echo` as `rug_pull` with mode N leaves it.
        rug: Arc::new(std::sync::atomic::AtomicU8::new(
            flag("--rug").and_then(|m| m.parse().ok()).unwrap_or(0),
        )),
    };
    let stdio = args.iter().any(|a| a == "--stdio");
    let addr = flag("--http").unwrap_or_else(|| "127.0.0.1:0".to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if stdio {
            let running = fixture.serve(rmcp::transport::stdio()).await?;
            running.waiting().await?;
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let bound = listener.local_addr()?;
        let shared = fixture.clone();
        let manager = Arc::new(LocalSessionManager::default());
        let service = StreamableHttpService::new(
            move || Ok(shared.clone()),
            manager.clone(),
            StreamableHttpServerConfig::default(),
        );
        // `GET /calls`: how many tool calls reached this upstream, so tests can prove a refused
        // call never got here.
        let calls = || async {
            TOOL_CALLS
                .load(std::sync::atomic::Ordering::SeqCst)
                .to_string()
        };
        // `GET /traceparents`: the W3C `traceparent` headers of the requests that carried one,
        // so tests can see the gateway joined the caller's trace.
        let seen = || async {
            TRACEPARENTS
                .lock()
                .map(|t| t.join("\n"))
                .unwrap_or_default()
        };
        let record = |req: axum::extract::Request, next: axum::middleware::Next| async move {
            if let Some(tp) = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                && let Ok(mut t) = TRACEPARENTS.lock()
            {
                t.push(tp.to_string());
            }
            if let Some(a) = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                && let Ok(mut t) = AUTHORIZATIONS.lock()
            {
                t.push(a.to_string());
            }
            next.run(req).await
        };
        // `--fail-calls STATUS`: every tool call is answered with that HTTP status before it
        // reaches a tool (as a proxy in front of a failing replica would); the rest works.
        let fail_calls = flag("--fail-calls").and_then(|s| s.parse::<u16>().ok());
        let failing = move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let Some(status) = fail_calls else {
                return next.run(req).await;
            };
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 64 << 20)
                .await
                .unwrap_or_default();
            if bytes.windows(12).any(|w| w == b"\"tools/call\"") {
                let code = axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                return axum::response::IntoResponse::into_response(code);
            }
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        };
        let app = axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(failing))
            .layer(axum::middleware::from_fn(record))
            .route("/calls", axum::routing::get(calls))
            .route("/traceparents", axum::routing::get(seen))
            // `GET /task-cancels`: `deferred` tasks a client cancelled before they completed.
            .route(
                "/task-cancels",
                axum::routing::get(|| async {
                    tasks::CANCELLED
                        .load(std::sync::atomic::Ordering::SeqCst)
                        .to_string()
                }),
            )
            // `GET /cancellations`: `slow` calls this upstream saw cancelled.
            .route(
                "/cancellations",
                axum::routing::get(|| async {
                    CANCELLATIONS
                        .load(std::sync::atomic::Ordering::SeqCst)
                        .to_string()
                }),
            )
            // `GET /sessions`: how many MCP sessions are open on this upstream, so tests can
            // see the gateway's per-session connections end with their client sessions.
            .route(
                "/sessions",
                axum::routing::get(move || async move {
                    manager.sessions.read().await.len().to_string()
                }),
            )
            // `GET /levels`: the `logging/setLevel` levels that reached this upstream.
            .route(
                "/levels",
                axum::routing::get(|| async {
                    LEVELS.lock().map(|t| t.join("\n")).unwrap_or_default()
                }),
            )
            // `GET /authorizations`: the `Authorization` headers that reached this upstream, so
            // tests can see which credential the gateway sent (and that the caller's never is).
            .route(
                "/authorizations",
                axum::routing::get(|| async {
                    AUTHORIZATIONS
                        .lock()
                        .map(|t| t.join("\n"))
                        .unwrap_or_default()
                }),
            );
        println!("fixture listening on http://{bound}/mcp");
        // Small answers go out at once (no Nagle delay waiting for the client's delayed ACK), as
        // a production server would have it; the benchmark's keep-alive client depends on it.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}
