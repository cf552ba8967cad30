//! The lean upstream leg: a caller's request to a Streamable HTTP upstream that speaks
//! 2026-07-28 is sent from the calling task, on the connection's pooled keep-alive HTTP client,
//! and its answer read there, JSON or SSE, straight into the value the pipeline uses.
//!
//! Through rmcp's client a request passes the peer's queue, the service loop and the transport
//! worker each way, and is converted to rmcp's typed messages and back (its header builder even
//! serialises the whole message once more). In the stateless revision a request is a POST whose
//! answer comes on that POST alone, so none of that machinery is needed for it: what is written
//! here is the request's bytes and headers (as rmcp's client sends them: `_meta` with the
//! protocol version, client info and capabilities; `MCP-Protocol-Version`, `Mcp-Method`,
//! `Mcp-Name` and `Mcp-Param-*`), and the reading of its answer. rmcp keeps the connection
//! itself (`server/discover`, listings, `subscriptions/listen`, tasks), the `initialize` era
//! and stdio.
//!
//! What the answer's stream may carry is handled as on any shared connection: progress for
//! this request goes to the caller on the caller's own token; an answer to anything but this
//! request is dropped and counted (`foreign_answer`); list changes and resource updates are acted
//! on as if they had come on the connection ([`super::handler::UpstreamHandler::notice`]); other
//! notifications and requests are not for a caller and are dropped (the revision has no
//! server-to-client requests: input is asked for with `InputRequiredResult`). Closing the stream is cancellation: a call the client
//! cancels, or whose deadline passes, drops its response. After its answer, the rest of a stream
//! is read in the background so its connection is reused ([`super::drain`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::UpstreamHttp;

/// Methods sent this way: the ones a caller's request is forwarded as.
pub(super) const METHODS: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

/// The largest answer read, JSON body or one SSE event.
const MAX_ANSWER: usize = 16 << 20;
/// The most of a stream read before its answer (progress and all).
const MAX_STREAM: usize = 4 * MAX_ANSWER;

const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The lean leg of one connection.
pub(super) struct Direct {
    http: UpstreamHttp,
    /// What list changes and resource updates on a call's stream go to.
    notices: super::handler::UpstreamHandler,
    url: Arc<str>,
    /// What every request's `_meta` carries: the protocol version, the gateway's client info and
    /// the connection's client capabilities.
    meta: Map<String, Value>,
    version: String,
    next: AtomicU64,
}

/// One request to send.
pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) params: Value,
    /// The client capabilities this request declares, replacing the connection's.
    pub(super) capabilities: Option<Value>,
    pub(super) credential: Option<Arc<str>>,
    /// The caller's progress token and stream.
    pub(super) progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    pub(super) param_headers: Vec<(String, String)>,
    pub(super) cancel: CancellationToken,
    pub(super) timeout: Duration,
    /// How long progress may extend the deadline to (`timeout` when it may not).
    pub(super) max_timeout: Duration,
}

/// Why a request sent this way failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The upstream's JSON-RPC error (not yet scrubbed).
    Rpc(Value),
    Timeout(Duration),
    Cancelled,
    /// The connection failed, or the upstream answered with an HTTP error.
    Transport(String),
    /// An answer that is not one.
    Unreadable(String),
}

#[derive(Serialize)]
struct Outgoing<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: &'a Value,
}

/// A JSON-RPC message from the upstream, as far as this leg reads it.
#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

impl Direct {
    pub(super) fn new(
        http: UpstreamHttp,
        notices: super::handler::UpstreamHandler,
        url: &str,
        version: &str,
        client_info: Value,
        capabilities: Value,
    ) -> Direct {
        let mut meta = Map::new();
        meta.insert(PROTOCOL_VERSION.into(), Value::String(version.to_string()));
        meta.insert("io.modelcontextprotocol/clientInfo".into(), client_info);
        meta.insert(CLIENT_CAPABILITIES.into(), capabilities);
        Direct {
            http,
            notices,
            url: Arc::from(url),
            meta,
            version: version.to_string(),
            // Apart from rmcp's ids on the same connection (each answer comes on its own POST,
            // so they could not be confused; this keeps the upstream's logs unambiguous).
            next: AtomicU64::new(1 << 32),
        }
    }

    /// Send `r` and read its result. `server` and `secrets` scrub what goes to the caller.
    pub(super) async fn send(
        &self,
        r: Request<'_>,
        server: &str,
        secrets: &[String],
    ) -> Result<Value, Failure> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let Request {
            method,
            mut params,
            capabilities,
            credential,
            progress,
            param_headers,
            cancel,
            timeout,
            max_timeout,
        } = r;
        let Value::Object(p) = &mut params else {
            return Err(Failure::Unreadable(
                "the request's params are not an object".into(),
            ));
        };
        let name = match method {
            "tools/call" | "prompts/get" => p.get("name").and_then(Value::as_str),
            "resources/read" => p.get("uri").and_then(Value::as_str),
            _ => None,
        }
        .map(crate::tools::param_headers::encode);
        let meta = p
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        let traceparent = meta
            .get("traceparent")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Value::Object(m) = meta {
            for (k, v) in &self.meta {
                m.insert(k.clone(), v.clone());
            }
            if let Some(c) = capabilities {
                m.insert(CLIENT_CAPABILITIES.into(), c);
            }
            m.insert("progressToken".into(), Value::from(id));
        }
        let body = serde_json::to_vec(&Outgoing {
            jsonrpc: "2.0",
            id,
            method,
            params: &params,
        })
        .map_err(|e| Failure::Unreadable(e.to_string()))?;
        let bearer = self
            .http
            .credential(credential, Some(method))
            .await
            .map_err(|why| Failure::Transport(why.into()))?;
        let mut req = self
            .http
            .client()
            .post(&*self.url)
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", &self.version)
            .header("mcp-method", method);
        if let Some(name) = name {
            req = req.header("mcp-name", name);
        }
        for (header, value) in param_headers {
            req = req.header(format!("mcp-param-{header}"), value);
        }
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let started = Instant::now();
        let last = started + max_timeout.max(timeout);
        let mut deadline = started + timeout;
        let response = tokio::select! {
            r = req.body(body).send() => r.map_err(|e| Failure::Transport(e.without_url().to_string()))?,
            () = cancel.cancelled() => return Err(Failure::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Err(Failure::Timeout(timeout)),
        };
        let status = response.status();
        let kind = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if kind.starts_with("text/event-stream") && status.is_success() {
            let reading = Reading {
                id,
                notices: &self.notices,
                progress,
                reset: max_timeout > timeout,
                timeout,
                last,
                server,
                secrets,
            };
            return reading.stream(response, &cancel, &mut deadline).await;
        }
        if !kind.starts_with("application/json") {
            return Err(match status.is_success() {
                true => Failure::Unreadable(format!("an answer of type `{kind}` ({status})")),
                false => Failure::Transport(format!("HTTP {status}")),
            });
        }
        let body = tokio::select! {
            b = bounded(response) => b?,
            () = cancel.cancelled() => return Err(Failure::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Err(Failure::Timeout(timeout)),
        };
        let incoming: Incoming =
            serde_json::from_slice(&body).map_err(|_| match status.is_success() {
                true => Failure::Unreadable("the answer is not a JSON-RPC message".into()),
                false => Failure::Transport(format!("HTTP {status}")),
            })?;
        let ours = Some(Value::from(id));
        if !status.is_success() {
            // An HTTP error may carry the JSON-RPC error (a null id where the request was
            // unread); anything else is the HTTP error.
            let unread = matches!(incoming.id, None | Some(Value::Null)) || incoming.id == ours;
            return match (incoming.error, incoming.method) {
                (Some(error), None) if unread => Err(Failure::Rpc(error)),
                _ => Err(Failure::Transport(format!("HTTP {status}"))),
            };
        }
        if incoming.id != ours || incoming.method.is_some() {
            tracing::warn!(
                server,
                "an upstream answered a POST with something other than its answer; dropped"
            );
            crate::metrics::get().violation(server, "foreign_answer");
            return Err(Failure::Unreadable("an answer to another request".into()));
        }
        answer(incoming)
    }
}

/// What reading one request's SSE stream needs.
struct Reading<'a> {
    id: u64,
    notices: &'a super::handler::UpstreamHandler,
    progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    /// Progress extends the deadline by `timeout`, up to `last`.
    reset: bool,
    timeout: Duration,
    last: Instant,
    server: &'a str,
    secrets: &'a [String],
}

impl Reading<'_> {
    async fn stream(
        self,
        response: reqwest::Response,
        cancel: &CancellationToken,
        deadline: &mut Instant,
    ) -> Result<Value, Failure> {
        let answered = Arc::new(AtomicBool::new(false));
        // Bounded: the parser holds an event until its end, so what it is fed is counted.
        let mut fed = 0usize;
        let bytes = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.without_url()))?;
            fed += chunk.len();
            match fed > MAX_STREAM {
                true => Err(std::io::Error::other(format!(
                    "the stream went past {MAX_STREAM} bytes before its answer"
                ))),
                false => Ok(chunk),
            }
        });
        let events = sse_stream::SseStream::from_bytes_stream(bytes).boxed();
        let mut events = super::drain::Drained::new(events, answered.clone());
        let ours = Value::from(self.id);
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                () = cancel.cancelled() => return Err(Failure::Cancelled),
                () = tokio::time::sleep_until(*deadline) => return Err(Failure::Timeout(self.timeout)),
            };
            let sse = match next {
                None => {
                    return Err(Failure::Transport(
                        "the stream ended before its answer".into(),
                    ));
                }
                Some(Err(e)) => return Err(Failure::Transport(e.to_string())),
                Some(Ok(sse)) => sse,
            };
            let incoming = match classify(sse.data.as_deref().unwrap_or_default(), &ours) {
                Event::Answer(incoming) => incoming,
                Event::Skip => continue,
                Event::TooLarge => {
                    return Err(Failure::Unreadable(format!(
                        "an event over {MAX_ANSWER} bytes"
                    )));
                }
                Event::Malformed => {
                    tracing::warn!(
                        server = self.server,
                        "an upstream sent an event that is not a JSON-RPC message; dropped"
                    );
                    continue;
                }
                Event::Progress(params) => {
                    self.relay_progress(params, &ours, deadline);
                    continue;
                }
                Event::Notification(method, params) => {
                    if !self.notices.notice(&method, params.as_ref()) {
                        tracing::debug!(server = self.server, method = %method, "an upstream notification on a call's stream that is not for the caller; dropped");
                    }
                    continue;
                }
                Event::Request(method) => {
                    tracing::debug!(server = self.server, method = %method, "an upstream request on a call's stream (the revision has none); dropped");
                    continue;
                }
                Event::Foreign => {
                    tracing::warn!(
                        server = self.server,
                        "an upstream answer arrived on another request's stream; dropped"
                    );
                    crate::metrics::get().violation(self.server, "foreign_answer");
                    continue;
                }
            };
            answered.store(true, Ordering::Relaxed);
            // The stream usually ends with its answer: seen ending now, nothing is left to read.
            let _ = events.next().now_or_never();
            return answer(incoming);
        }
    }

    fn relay_progress(&self, params: Option<Value>, ours: &Value, deadline: &mut Instant) {
        let Some(p) = params
            .and_then(|p| serde_json::from_value::<rmcp::model::ProgressNotificationParam>(p).ok())
        else {
            return;
        };
        if serde_json::to_value(&p.progress_token).ok().as_ref() != Some(ours) {
            return;
        }
        if self.reset {
            *deadline = (Instant::now() + self.timeout).min(self.last);
        }
        if let Some((token, sink)) = &self.progress {
            super::handler::relay_progress(&p, token, sink, self.server, self.secrets);
        }
    }
}

/// What one SSE event of a request's stream is.
#[derive(Debug)]
enum Event {
    /// The answer to the request.
    Answer(Incoming),
    /// Progress (whose token is checked against the request's when relayed).
    Progress(Option<Value>),
    Notification(String, Option<Value>),
    /// A request from the server.
    Request(String),
    /// An answer to another request.
    Foreign,
    /// Not a JSON-RPC message.
    Malformed,
    /// Past [`MAX_ANSWER`].
    TooLarge,
    /// Empty (a priming event), or a message that is none of the above.
    Skip,
}

/// Classify the data of one event on the stream of the request whose id is `ours`.
fn classify(data: &str, ours: &Value) -> Event {
    if data.trim().is_empty() {
        return Event::Skip;
    }
    if data.len() > MAX_ANSWER {
        return Event::TooLarge;
    }
    // A JSON-RPC message is an object (a derived struct would also read an array).
    if !data.trim_start().starts_with('{') {
        return Event::Malformed;
    }
    let Ok(incoming) = serde_json::from_str::<Incoming>(data) else {
        return Event::Malformed;
    };
    match (incoming.method, incoming.id) {
        (Some(method), Some(_)) => Event::Request(method),
        (Some(method), None) if method == "notifications/progress" => {
            Event::Progress(incoming.params)
        }
        (Some(method), None) => Event::Notification(method, incoming.params),
        (None, id) if incoming.result.is_some() || incoming.error.is_some() => {
            match id.as_ref() == Some(ours) {
                true => Event::Answer(Incoming {
                    id,
                    method: None,
                    params: incoming.params,
                    result: incoming.result,
                    error: incoming.error,
                }),
                false => Event::Foreign,
            }
        }
        (None, _) => Event::Skip,
    }
}

/// The result or error of `incoming`, the answer to the request.
fn answer(incoming: Incoming) -> Result<Value, Failure> {
    match (incoming.result, incoming.error) {
        (_, Some(error)) => Err(Failure::Rpc(error)),
        (Some(result @ Value::Object(_)), None) => Ok(result),
        _ => Err(Failure::Unreadable("the result is not an object".into())),
    }
}

/// The body of `response`, at most [`MAX_ANSWER`] bytes.
async fn bounded(mut response: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::Transport(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Failure::Unreadable(format!(
                "an answer over {MAX_ANSWER} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl super::Upstream {
    /// Send `r` on the lean leg, with the server's deadlines.
    pub(super) async fn send_direct(
        &self,
        direct: &Direct,
        r: super::Outgoing<'_>,
        cancel: &CancellationToken,
        config: &registry::Server,
    ) -> Result<Value, super::UpstreamError> {
        use super::UpstreamError;
        let name = &self.name;
        let params = r.params.unwrap_or_else(|| Value::Object(Map::new()));
        let param_headers = match r.method {
            "tools/call" => {
                let tool = params.get("name").and_then(Value::as_str);
                let tools = self.tools();
                let offered = tools.iter().find(|o| Some(o.tool.name.as_ref()) == tool);
                match (offered, params.get("arguments")) {
                    (Some(o), Some(arguments)) => o.param_headers.emit(arguments),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let capabilities = r
            .declared
            .and_then(|m| m.0.0.get(CLIENT_CAPABILITIES).cloned());
        let max_timeout = match r.progress.is_some() {
            true => config.max_timeout.max(config.timeout),
            false => config.timeout,
        };
        let request = Request {
            method: r.method,
            params,
            capabilities,
            credential: r.credential,
            progress: r.progress,
            param_headers,
            cancel: cancel.clone(),
            timeout: config.timeout,
            max_timeout,
        };
        let secrets = self.sent_secrets();
        match direct.send(request, name, &secrets).await {
            Ok(v) => Ok(v),
            Err(Failure::Rpc(mut error)) => {
                super::scrub::scrub(&mut error, name, &secrets);
                Err(UpstreamError::Rpc {
                    server: name.clone(),
                    error,
                })
            }
            Err(Failure::Timeout(d)) => Err(UpstreamError::Timeout(name.clone(), d)),
            Err(Failure::Cancelled) => Err(UpstreamError::Cancelled(name.clone())),
            Err(Failure::Transport(why)) => {
                tracing::warn!(server = %name, error = %why, "upstream request failed");
                Err(UpstreamError::Transport(name.clone()))
            }
            Err(Failure::Unreadable(why)) => {
                tracing::warn!(server = %name, error = %why, "upstream answer not readable");
                Err(UpstreamError::Unreadable(name.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
