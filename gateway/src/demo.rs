//! The built-in demo upstream: a small in-memory notes service.
//!
//! It exists so `portcullis quickstart` works with nothing else installed, and it exercises each
//! tool class: `search_notes` and `get_note` read, `create_note` writes, `delete_note` destroys.
//! Notes are also resources (`note://<id>`), and `summarize_notes` is a prompt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, Prompt, PromptMessage, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, Role, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// The notes service. Clones share one store.
#[derive(Clone, Default)]
pub(crate) struct NotesServer {
    notes: Arc<Mutex<BTreeMap<u64, (String, String)>>>,
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn arg<'a>(args: &'a Option<serde_json::Map<String, Value>>, key: &str) -> Option<&'a Value> {
    args.as_ref().and_then(|a| a.get(key))
}

fn text(s: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s.into())])
}

fn failure(s: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(s.into())])
}

impl NotesServer {
    pub(crate) fn new() -> NotesServer {
        let s = NotesServer::default();
        if let Ok(mut n) = s.notes.lock() {
            n.insert(
                1,
                (
                    "Welcome".into(),
                    "Portcullis decides every call before it reaches a tool.".into(),
                ),
            );
            n.insert(
                2,
                (
                    "Shopping".into(),
                    "Milk, bread, a new rope for the gate.".into(),
                ),
            );
        }
        s
    }

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "search_notes",
                "Find notes whose title or body contains the query (case-insensitive).",
                schema(
                    json!({"type":"object","properties":{"query":{"type":"string","description":"text to look for"}},"required":["query"],"additionalProperties":false}),
                ),
            ),
            Tool::new(
                "get_note",
                "Read one note by id.",
                schema(
                    json!({"type":"object","properties":{"id":{"type":"integer","minimum":1}},"required":["id"],"additionalProperties":false}),
                ),
            ),
            Tool::new(
                "create_note",
                "Create a note and return its id.",
                schema(
                    json!({"type":"object","properties":{"title":{"type":"string","maxLength":200},"body":{"type":"string","maxLength":10000}},"required":["title","body"],"additionalProperties":false}),
                ),
            ),
            Tool::new(
                "delete_note",
                "Delete a note permanently.",
                schema(
                    json!({"type":"object","properties":{"id":{"type":"integer","minimum":1}},"required":["id"],"additionalProperties":false}),
                ),
            ),
        ]
    }

    fn call(&self, name: &str, args: &Option<serde_json::Map<String, Value>>) -> CallToolResult {
        let Ok(mut notes) = self.notes.lock() else {
            return failure("notes store unavailable");
        };
        match name {
            "search_notes" => {
                let Some(q) = arg(args, "query").and_then(Value::as_str) else {
                    return failure("`query` (string) is required");
                };
                let q = q.to_lowercase();
                let hits: Vec<Value> = notes
                    .iter()
                    .filter(|(_, (t, b))| {
                        t.to_lowercase().contains(&q) || b.to_lowercase().contains(&q)
                    })
                    .map(|(id, (t, _))| json!({"id": id, "title": t}))
                    .collect();
                text(Value::Array(hits).to_string())
            }
            "get_note" => match arg(args, "id")
                .and_then(Value::as_u64)
                .and_then(|id| notes.get(&id))
            {
                Some((t, b)) => text(format!("# {t}\n\n{b}")),
                None => failure("no such note"),
            },
            "create_note" => {
                let (Some(t), Some(b)) = (
                    arg(args, "title").and_then(Value::as_str),
                    arg(args, "body").and_then(Value::as_str),
                ) else {
                    return failure("`title` and `body` (strings) are required");
                };
                let id = notes.keys().next_back().copied().unwrap_or(0) + 1;
                notes.insert(id, (t.to_string(), b.to_string()));
                text(json!({"id": id}).to_string())
            }
            "delete_note" => match arg(args, "id").and_then(Value::as_u64) {
                Some(id) if notes.remove(&id).is_some() => text(format!("deleted note {id}")),
                _ => failure("no such note"),
            },
            _ => failure(format!("unknown tool `{name}`")),
        }
    }
}

impl ServerHandler for NotesServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "portcullis-demo-notes",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("A small notes service: search, read, create and delete notes.")
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(NotesServer::tools()))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        Ok(self.call(req.name.as_ref(), &req.arguments).into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let notes = self
            .notes
            .lock()
            .map_err(|_| McpError::internal_error("notes store unavailable", None))?;
        let items = notes
            .iter()
            .map(|(id, (t, _))| {
                Resource::new(format!("note://{id}"), t.clone()).with_mime_type("text/markdown")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(items))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let notes = self
            .notes
            .lock()
            .map_err(|_| McpError::internal_error("notes store unavailable", None))?;
        let found = req
            .uri
            .strip_prefix("note://")
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| notes.get(&id));
        match found {
            Some((t, b)) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
                format!("# {t}\n\n{b}"),
                req.uri.clone(),
            )])
            .into()),
            None => Err(McpError::resource_not_found("no such note", None)),
        }
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "summarize_notes",
            Some("Ask the model to summarise every note."),
            None,
        )]))
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if req.name != "summarize_notes" {
            return Err(McpError::invalid_params("unknown prompt", None));
        }
        let notes = self
            .notes
            .lock()
            .map_err(|_| McpError::internal_error("notes store unavailable", None))?;
        let all: Vec<String> = notes.values().map(|(t, b)| format!("- {t}: {b}")).collect();
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Summarise these notes:\n{}", all.join("\n")),
        )])
        .into())
    }
}
