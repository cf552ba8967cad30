//! A raw JSON-RPC-over-HTTP client for tests that check status codes and exact error bodies.

use reqwest::StatusCode;
use serde_json::{Value, json};

/// One caller on one endpoint, with an optional stateful session.
pub struct Raw {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The endpoint.
    pub url: String,
    /// The bearer credential.
    pub key: String,
    /// The session id, once `init` ran.
    pub session: Option<String>,
    /// Sent as `Portcullis-End-User` when set.
    pub end_user: Option<String>,
}

impl Raw {
    pub fn new(url: String, key: &str) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            url,
            key: key.to_string(),
            session: None,
            end_user: None,
        }
    }

    pub fn post(&self, body: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = &self.session {
            r = r.header("mcp-session-id", s);
        }
        if let Some(u) = &self.end_user {
            r = r.header("portcullis-end-user", u);
        }
        r
    }

    pub async fn init(&mut self) {
        self.init_version("2025-11-25").await;
    }

    /// Open a session of `version`; the `initialize` answer.
    pub async fn init_version(&mut self, version: &str) -> Value {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": { "protocolVersion": version, "capabilities": {}, "clientInfo": { "name": "raw", "version": "1" } },
        });
        let resp = self.post(&body.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        self.session = Some(
            resp.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let (_, answer) = read(resp).await;
        let r = self
            .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        answer
    }

    /// The tool names `tools/list` shows this caller, sorted.
    pub async fn tool_names(&self) -> Vec<String> {
        let (_, r) = self.call(req(1, "tools/list", json!({}))).await;
        let mut names: Vec<String> = r["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    }

    /// `tools/list` until its names satisfy `pred`, for up to 10 s; the last names either way.
    pub async fn until_tools(&self, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let names = self.tool_names().await;
            if pred(&names) || std::time::Instant::now() > deadline {
                return names;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// POST a body and return (status, parsed JSON-RPC message). SSE answers are unwrapped.
    pub async fn call(&self, body: Value) -> (StatusCode, Value) {
        let resp = self.post(&body.to_string()).send().await.unwrap();
        read(resp).await
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    if sse {
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .rfind(|d| d.contains("\"id\""))
            .unwrap()
            .to_string();
        return (status, serde_json::from_str(&last).unwrap());
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn req(id: u64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}
