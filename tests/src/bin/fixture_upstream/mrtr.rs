//! Multi-round tools and a prompt (2026-07-28 `InputRequiredResult`), as the conformance
//! suite's `input-required-result-*` scenarios describe them: each answers with the input it
//! needs (elicitation, sampling, roots) until the retry carries the answers, and those that
//! issue a `requestState` accept only one they issued (a stateful server's check).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, InputRequiredResult, Tool,
};
use serde_json::{Map, Value, json};

/// The multi-round tools, with their descriptions.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "test_input_required_result_elicitation",
        "Asks the client for a name (elicitation), then greets it",
    ),
    (
        "test_input_required_result_sampling",
        "Asks the client's model a question (sampling), then answers with its reply",
    ),
    (
        "test_input_required_result_list_roots",
        "Asks the client for its roots, then names them",
    ),
    (
        "test_input_required_result_request_state",
        "Asks for a confirmation with a requestState it checks on the retry",
    ),
    (
        "test_input_required_result_multiple_inputs",
        "Asks for an elicitation, a sampling and the roots at once",
    ),
    (
        "test_input_required_result_multi_round",
        "Asks twice, with a new requestState each round",
    ),
    (
        "test_input_required_result_tampered_state",
        "Refuses a retry whose requestState it did not issue",
    ),
    (
        "test_input_required_result_capabilities",
        "Asks only for what the client declared in this request",
    ),
];

/// The multi-round prompt.
pub const PROMPT: &str = "test_input_required_result_prompt";

/// Every state issued, with what it carries (an earlier round's answer); a retry must bring
/// back one of them.
static ISSUED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn issue(label: &str) -> String {
    carry(label, String::new())
}

fn carry(label: &str, kept: String) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let state = format!("fixture-{label}-{}", NEXT.fetch_add(1, Ordering::SeqCst));
    if let Ok(mut issued) = ISSUED.lock() {
        issued
            .get_or_insert_with(HashMap::new)
            .insert(state.clone(), kept);
    }
    state
}

/// What `state` carries, if it is one this fixture issued under `label`.
fn kept(state: &str, label: &str) -> Option<String> {
    if !state.starts_with(&format!("fixture-{label}-")) {
        return None;
    }
    ISSUED.lock().ok()?.as_ref()?.get(state).cloned()
}

/// Whether `state` is one this fixture issued under `label`.
fn issued(state: &str, label: &str) -> bool {
    kept(state, label).is_some()
}

fn elicit(message: &str, field: &str, kind: &str) -> Value {
    json!({ "method": "elicitation/create", "params": { "message": message, "requestedSchema": {
        "type": "object", "properties": { field: { "type": kind } }, "required": [field] } } })
}

fn sample(text: &str) -> Value {
    json!({ "method": "sampling/createMessage", "params": {
        "messages": [{ "role": "user", "content": { "type": "text", "text": text } }], "maxTokens": 50 } })
}

fn roots() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

fn asking(requests: Value, state: Option<String>) -> Result<InputRequiredResult, McpError> {
    let mut v = json!({ "resultType": "input_required", "inputRequests": requests });
    if let Some(s) = state {
        v["requestState"] = json!(s);
    }
    super::from(v)
}

fn done(text: String) -> Result<CallToolResponse, McpError> {
    Ok(
        super::from::<CallToolResult>(json!({ "content": [{ "type": "text", "text": text }] }))?
            .into(),
    )
}

fn tampered() -> McpError {
    McpError::invalid_params("requestState failed its integrity check", None)
}

/// The text of an elicitation answer's field, or of a sampling answer.
fn said(answer: Option<&Value>, field: &str) -> String {
    let Some(a) = answer else {
        return String::new();
    };
    a.get("content")
        .and_then(|c| c.get(field).or_else(|| c.get("text")))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .unwrap_or_default()
}

/// A multi-round tool's answer, if `req` names one.
pub fn call(
    req: &CallToolRequestParams,
    caps: Option<ClientCapabilities>,
) -> Option<Result<CallToolResponse, McpError>> {
    let name = req.name.as_ref();
    TOOLS.iter().find(|(t, _)| *t == name)?;
    let empty = Default::default();
    let responses = req.input_responses.as_ref().unwrap_or(&empty);
    let got = |k: &str| responses.get(k);
    let state = req.request_state.as_deref();
    let ask = |requests: Value, state: Option<String>| asking(requests, state).map(Into::into);
    Some(match name {
        "test_input_required_result_elicitation" => match got("user_name") {
            Some(a) => done(format!("Hello, {}!", said(Some(a), "name"))),
            None => ask(
                json!({ "user_name": elicit("What is your name?", "name", "string") }),
                None,
            ),
        },
        "test_input_required_result_sampling" => match got("capital_question") {
            Some(a) => done(format!("The model said: {}", said(Some(a), "text"))),
            None => ask(
                json!({ "capital_question": sample("What is the capital of France?") }),
                None,
            ),
        },
        "test_input_required_result_list_roots" => match got("client_roots") {
            Some(a) => done(format!(
                "Roots: {}",
                a.get("roots").cloned().unwrap_or_default()
            )),
            None => ask(json!({ "client_roots": roots() }), None),
        },
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            let label = if name.ends_with("tampered_state") {
                "tamper"
            } else {
                "confirm"
            };
            match (state, got("confirm")) {
                (Some(s), _) if !issued(s, label) => Err(tampered()),
                (Some(_), Some(_)) => done("state-ok: the requestState was the one issued".into()),
                _ => ask(
                    json!({ "confirm": elicit("Please confirm", "ok", "boolean") }),
                    Some(issue(label)),
                ),
            }
        }
        "test_input_required_result_multiple_inputs" => {
            let all = ["user_name", "greeting", "client_roots"]
                .iter()
                .all(|k| got(k).is_some());
            match state {
                Some(s) if !issued(s, "multi") => Err(tampered()),
                Some(_) if all => done(format!(
                    "{} / {} / {}",
                    said(got("user_name"), "name"),
                    said(got("greeting"), "text"),
                    got("client_roots").cloned().unwrap_or_default()
                )),
                _ => ask(
                    json!({ "user_name": elicit("What is your name?", "name", "string"),
                            "greeting": sample("Generate a greeting"), "client_roots": roots() }),
                    Some(issue("multi")),
                ),
            }
        }
        "test_input_required_result_multi_round" => match state {
            // The first answer travels in the second round's state.
            Some(s) if issued(s, "round1") && got("step1").is_some() => ask(
                json!({ "step2": elicit("Step 2: What is your favorite color?", "color", "string") }),
                Some(carry("round2", said(got("step1"), "name"))),
            ),
            Some(s) if issued(s, "round2") && got("step2").is_some() => done(format!(
                "{} likes {}",
                kept(s, "round2").unwrap_or_default(),
                said(got("step2"), "color")
            )),
            Some(s) if !issued(s, "round1") && !issued(s, "round2") => Err(tampered()),
            _ => ask(
                json!({ "step1": elicit("Step 1: What is your name?", "name", "string") }),
                Some(issue("round1")),
            ),
        },
        _ => capabilities(caps, responses),
    })
}

/// Asks only for what this request's client declared.
fn capabilities(
    caps: Option<ClientCapabilities>,
    responses: &std::collections::BTreeMap<String, Value>,
) -> Result<CallToolResponse, McpError> {
    if !responses.is_empty() {
        return done(format!(
            "answered: {}",
            responses.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let caps = caps.unwrap_or_default();
    let mut requests = Map::new();
    if caps.elicitation.is_some() {
        requests.insert(
            "user_name".into(),
            elicit("What is your name?", "name", "string"),
        );
    }
    if caps.sampling.is_some() {
        requests.insert("greeting".into(), sample("Generate a greeting"));
    }
    if caps.roots.is_some() {
        requests.insert("client_roots".into(), roots());
    }
    if requests.is_empty() {
        return done("the client declared nothing it could be asked".into());
    }
    asking(Value::Object(requests), None).map(Into::into)
}

/// `test_input_required_result_prompt`: asks for context, then builds the prompt with it.
pub fn prompt(req: &GetPromptRequestParams) -> Result<GetPromptResponse, McpError> {
    match req.input_responses.as_ref().and_then(|r| r.get("context")) {
        Some(a) => {
            let text = format!("Use this context: {}", said(Some(a), "context"));
            let messages = json!([{ "role": "user", "content": { "type": "text", "text": text } }]);
            Ok(super::from::<GetPromptResult>(json!({ "messages": messages }))?.into())
        }
        None => Ok(asking(
            json!({ "context": elicit("What context should the prompt use?", "context", "string") }),
            None,
        )?
        .into()),
    }
}

/// The multi-round tools as listed.
pub fn tools() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|(name, description)| super::tool(name, description, super::no_args()))
        .collect()
}
