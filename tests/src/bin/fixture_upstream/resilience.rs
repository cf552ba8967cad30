//! Tools that misbehave on purpose, offered with `--resilience`: `big` answers `mb` megabytes,
//! `crash` ends the process mid-call. `--exit-after-ms N` ends the process N ms after it starts
//! (a crash loop under a supervisor), `--starts FILE` appends a line to FILE at each start, and
//! `--log-calls FILE` appends each tool call (name and arguments) to FILE as it arrives.

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, Tool};
use serde_json::{Value, json};

/// Where calls are logged (`--log-calls`).
static CALL_LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

/// Log a tool call as it arrives: one line, written at once (it survives the process being
/// killed right after).
pub fn log_call(req: &CallToolRequestParams) {
    use std::io::Write as _;
    if let Some(log) = CALL_LOG.get()
        && let Ok(mut f) = log.lock()
    {
        let args = serde_json::to_string(&req.arguments).unwrap_or_default();
        let _ = writeln!(f, "{} {args}", req.name);
    }
}

/// Whether the tools are offered (`--resilience`).
pub static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The tools, when offered.
pub fn tools() -> Vec<Tool> {
    if !ON.load(std::sync::atomic::Ordering::SeqCst) {
        return Vec::new();
    }
    vec![
        super::tool(
            "big",
            "Answers with `mb` megabytes of text",
            json!({ "type": "object", "properties": { "mb": { "type": "integer" } } }),
        ),
        super::tool(
            "crash",
            "Ends this server's process mid-call",
            super::no_args(),
        ),
    ]
}

/// A misbehaving tool's answer, if `req` names one.
pub fn call(req: &CallToolRequestParams) -> Option<Result<CallToolResponse, McpError>> {
    if !ON.load(std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    match req.name.as_ref() {
        "big" => {
            let mb = req
                .arguments
                .as_ref()
                .and_then(|a| a.get("mb"))
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let text = "x".repeat(usize::try_from(mb).unwrap_or(1) << 20);
            let v = json!({ "content": [{ "type": "text", "text": text }] });
            Some(super::from::<CallToolResult>(v).map(Into::into))
        }
        "crash" => std::process::exit(3),
        _ => None,
    }
}

/// Apply `--exit-after-ms` and `--starts` from `args`.
pub fn start(args: &[String]) {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "--resilience") {
        ON.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if let Some(path) = flag("--starts") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", std::process::id());
        }
    }
    if let Some(path) = flag("--log-calls")
        && let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = CALL_LOG.set(std::sync::Mutex::new(f));
    }
    if let Some(ms) = flag("--exit-after-ms").and_then(|m| m.parse::<u64>().ok()) {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            std::process::exit(4);
        });
    }
}
