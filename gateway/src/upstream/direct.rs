//! The lean upstream leg: a caller's request to a Streamable HTTP upstream, on a connection
//! shared by callers, is sent from the calling task on a kept HTTP/1.1 connection made with
//! hyper's connection API ([`LeanHttp`], `lean/pool.rs`), and its answer read there, JSON or SSE, straight into the value the pipeline
//! uses.
//!
//! Through rmcp's client a request passes the peer's queue, the service loop and the transport
//! worker each way, and is converted to rmcp's typed messages and back (its header builder even
//! serialises the whole message once more). A request is a POST whose answer comes on that POST
//! (or on its resumption), so none of that machinery is needed for it: what is written here is
//! the request's bytes and headers, as rmcp's client sends them in each era, and the reading of
//! its answer (`read.rs`). rmcp keeps the connection itself (the handshake, listings, the GET or
//! `subscriptions/listen` stream, tasks) on its reqwest client, per-session connections and stdio.
//!
//! What the answer's stream may carry is handled as on any shared connection: progress for
//! this request goes to the caller on the caller's own token; an answer to anything but this
//! request is dropped and counted (`foreign_answer`); list changes and resource updates are acted
//! on as if they had come on the connection ([`super::handler::UpstreamHandler::notice`]); a
//! request from the upstream is answered as rmcp's client answers it without a client behind the
//! connection ([`Direct::refuse`]); other notifications are dropped. A call the client cancels,
//! or whose deadline passes, drops its response (in 2026-07-28 that is the cancellation; in the
//! `initialize` era the upstream is also told). After its answer, the rest of a stream is read in
//! the background so its connection is reused ([`super::drain`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderName, HeaderValue, Method, Response};
use http_body_util::Full;

use super::http::UpstreamHttp;
use super::lean::LeanHttp;
use read::{MAX_ERROR, Reading, answer, bounded};

mod call;
mod read;
mod request;

use request::{
    Address, LAST_EVENT_ID, MCP_METHOD, MCP_NAME, PROTOCOL_VERSION_HEADER, SESSION_ID, TRACEPARENT,
    bearer_value, content_type, header_value, post,
};

/// Methods sent this way: the ones a caller's request is forwarded as.
pub(super) const METHODS: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The lean leg of one connection.
pub(super) struct Direct {
    /// The connection's rmcp client: its credentials and session.
    http: UpstreamHttp,
    lean: LeanHttp,
    /// What list changes and resource updates on a call's stream go to.
    notices: super::handler::UpstreamHandler,
    url: Address,
    /// What every request's `_meta` carries: the protocol version, the gateway's client info and
    /// the connection's client capabilities.
    meta: Map<String, Value>,
    version: HeaderValue,
    /// The `initialize` era: a session, no client context in `_meta`, no standard headers,
    /// requests from the server answered on the connection, cancellation told.
    legacy: bool,
    next: AtomicU64,
}

/// One request to send.
pub(super) struct Request<'a> {
    /// Its JSON-RPC id, taken from the connection's sequence if not given.
    pub(super) id: Option<u64>,
    pub(super) method: &'a str,
    pub(super) params: Value,
    /// The client capabilities this request declares, replacing the connection's.
    pub(super) capabilities: Option<Value>,
    pub(super) credential: Option<Arc<str>>,
    /// The caller's progress token and stream.
    pub(super) progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    pub(super) param_headers: Vec<(HeaderName, String)>,
    pub(super) cancel: CancellationToken,
    pub(super) timeout: Duration,
    /// How long progress may extend the deadline to (`timeout` when it may not).
    pub(super) max_timeout: Duration,
    /// The largest answer read: a JSON body, or one SSE event.
    pub(super) max_response: usize,
    /// The deepest nesting an answer may have.
    pub(super) max_depth: usize,
    /// Woken by progress for this request that arrives elsewhere than its stream.
    pub(super) wake: Arc<tokio::sync::Notify>,
}

/// Why a request sent this way failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The upstream's JSON-RPC error (not yet scrubbed).
    Rpc(Value),
    Timeout(Duration),
    Cancelled,
    /// The connection failed.
    Transport(String),
    /// No connection could be made: the request was not sent.
    Unreached(String),
    /// The upstream answered with an HTTP error that carries no answer to the request.
    Status(u16),
    /// An answer that is not one.
    Unreadable(String),
    /// An answer past the server's bounds (`max_response`, `max_response_depth`).
    Exceeded(String),
    /// The upstream no longer knows the connection's session (404).
    SessionExpired,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: &'a Value,
}

impl Direct {
    #[expect(
        clippy::too_many_arguments,
        reason = "what a connection's handshake settled, each used once here"
    )]
    pub(super) fn new(
        http: UpstreamHttp,
        lean: LeanHttp,
        notices: super::handler::UpstreamHandler,
        url: &str,
        version: &str,
        client_info: Value,
        capabilities: Value,
        legacy: bool,
    ) -> Direct {
        let mut meta = Map::new();
        if !legacy {
            meta.insert(PROTOCOL_VERSION.into(), Value::String(version.to_string()));
            meta.insert("io.modelcontextprotocol/clientInfo".into(), client_info);
            meta.insert(CLIENT_CAPABILITIES.into(), capabilities);
        }
        Direct {
            legacy,
            http,
            lean,
            notices,
            url: Address::of(url),
            meta,
            // A revision name is a valid header value; the empty value for one that is not
            // makes the upstream refuse the request.
            version: HeaderValue::from_str(version).unwrap_or(HeaderValue::from_static("")),
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
        let id =
            r.id.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed));
        let posted = std::sync::atomic::AtomicBool::new(false);
        let outcome = self.exchange(id, r, &posted, server, secrets).await;
        // In the `initialize` era a dropped stream is not cancellation: the upstream is told (of
        // a request it was sent).
        if self.legacy
            && posted.load(Ordering::Relaxed)
            && matches!(outcome, Err(Failure::Cancelled | Failure::Timeout(_)))
        {
            let reason = match outcome {
                Err(Failure::Cancelled) => "cancelled by client",
                _ => "timed out",
            };
            let note = serde_json::json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": { "requestId": id, "reason": reason },
            });
            // Sent on its own: the caller has its answer now.
            let poster = self.poster();
            let server = server.to_string();
            tokio::spawn(async move {
                let told = tokio::time::timeout(Duration::from_secs(2), poster.post(&note)).await;
                if !matches!(told, Ok(Ok(()))) {
                    tracing::debug!(server, "the upstream was not told of a cancelled request");
                }
            });
        }
        outcome
    }

    /// Answer a request the upstream sent on a call's stream as rmcp's client does on a shared
    /// connection (there is no client behind it to ask): `ping` and `roots/list` (no roots) are
    /// answered, sampling, elicitation and anything else refused. In 2026-07-28 there are no
    /// such requests (input is asked for with `InputRequiredResult`): dropped.
    pub(super) fn refuse(&self, id: Value, method: &str, server: &str) {
        if !self.legacy {
            tracing::debug!(
                server,
                method,
                "an upstream request on a call's stream (the revision has none); dropped"
            );
            return;
        }
        let answer = match method {
            "ping" => serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": {} }),
            "roots/list" => {
                serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": { "roots": [] } })
            }
            _ => {
                let message = match method {
                    "sampling/createMessage" => {
                        "the gateway does not relay sampling on a shared connection"
                    }
                    "elicitation/create" => {
                        "the gateway does not relay elicitation on a shared connection"
                    }
                    _ => "method not found",
                };
                serde_json::json!({ "jsonrpc": "2.0", "id": id,
                    "error": { "code": crate::jsonrpc::METHOD_NOT_FOUND, "message": message } })
            }
        };
        // Sent on its own: the call's stream goes on being read meanwhile.
        let poster = self.poster();
        let server = server.to_string();
        let method = method.to_string();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(Duration::from_secs(5), poster.post(&answer)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!(
                    server,
                    method,
                    "an answer to an upstream's request was not delivered"
                );
            }
        });
    }

    /// What sends messages that have no answer on the connection's session.
    fn poster(&self) -> Poster {
        Poster {
            http: self.http.clone(),
            lean: self.lean.clone(),
            url: self.url.clone(),
            version: self.version.clone(),
        }
    }

    async fn exchange(
        &self,
        id: u64,
        r: Request<'_>,
        posted: &std::sync::atomic::AtomicBool,
        server: &str,
        secrets: &[String],
    ) -> Result<Value, Failure> {
        let Request {
            id: _,
            method,
            mut params,
            capabilities,
            credential,
            progress,
            param_headers,
            cancel,
            timeout,
            max_timeout,
            max_response,
            max_depth,
            wake,
        } = r;
        let Value::Object(p) = &mut params else {
            return Err(Failure::Unreadable(
                "the request's params are not an object".into(),
            ));
        };
        forwardable(method, p)?;
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
            // Declared per request only where the revision has a client context.
            if let Some(c) = capabilities.filter(|_| !self.legacy) {
                m.insert(CLIENT_CAPABILITIES.into(), c);
            }
            m.insert("progressToken".into(), Value::from(id));
        }
        // Room for a small request's bytes from the start (growing from empty reallocates
        // several times).
        let mut body = Vec::with_capacity(512);
        let outgoing = Outgoing {
            jsonrpc: "2.0",
            id,
            method,
            params: &params,
        };
        serde_json::to_writer(&mut body, &outgoing)
            .map_err(|e| Failure::Unreadable(e.to_string()))?;
        let session = self.http.session().filter(|_| self.legacy);
        let started = Instant::now();
        let last = started + max_timeout.max(timeout);
        let mut deadline = started + timeout;
        // The credential (a token minted now, on a cache miss) is within the call's deadline.
        let sent = async {
            let bearer = self
                .http
                .credential(credential, Some(method))
                .await
                .map_err(|why| Failure::Transport(why.into()))?;
            let mut req = post(&self.url, &self.version, session.as_deref())?;
            let headers = req.headers_mut();
            // The standard headers came with 2026-07-28.
            if !self.legacy {
                headers.insert(MCP_METHOD, header_value(method)?);
                if let Some(name) = name {
                    headers.insert(MCP_NAME, header_value(&name)?);
                }
                for (header, value) in param_headers {
                    headers.insert(header, header_value(&value)?);
                }
            }
            // A caller's `traceparent` that HTTP cannot carry is left out, as on rmcp's leg.
            if let Some(tp) = traceparent.and_then(|tp| HeaderValue::from_str(&tp).ok()) {
                headers.insert(TRACEPARENT, tp);
            }
            if let Some(b) = &bearer {
                headers.insert(AUTHORIZATION, bearer_value(b)?);
            }
            *req.body_mut() = Full::new(Bytes::from(body));
            posted.store(true, Ordering::Relaxed);
            let response = self.lean.send(req).await.map_err(|e| match e.unreached {
                true => Failure::Unreached(e.why),
                false => Failure::Transport(e.why),
            })?;
            Ok::<_, Failure>((response, bearer))
        };
        let (response, bearer) = tokio::select! {
            r = sent => r?,
            () = cancel.cancelled() => return Err(Failure::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Err(Failure::Timeout(timeout)),
        };
        let status = response.status();
        if status == http::StatusCode::NOT_FOUND && session.is_some() {
            return Err(Failure::SessionExpired);
        }
        let kind = content_type(&response);
        if kind.starts_with("text/event-stream") && status.is_success() {
            let reading = Reading {
                direct: self,
                id,
                wake,
                bearer,
                progress,
                reset: max_timeout > timeout,
                timeout,
                max_response,
                max_depth,
                last,
                server,
                secrets,
            };
            return reading.stream(response, &cancel, &mut deadline).await;
        }
        // As rmcp's client: an authorization failure or a rate limit keeps its HTTP status; an
        // HTTP error with a JSON body may carry the request's JSON-RPC error.
        let json = kind.starts_with("application/json");
        let plain = !json
            || matches!(
                status,
                http::StatusCode::UNAUTHORIZED
                    | http::StatusCode::FORBIDDEN
                    | http::StatusCode::TOO_MANY_REQUESTS
            );
        if !status.is_success() && plain {
            return Err(Failure::Status(status.as_u16()));
        }
        if !json {
            return Err(Failure::Unreadable(format!(
                "an answer of type `{kind}` ({status})"
            )));
        }
        let max = if status.is_success() {
            max_response
        } else {
            MAX_ERROR.min(max_response)
        };
        let body = tokio::select! {
            b = bounded(response, max) => b?,
            () = cancel.cancelled() => return Err(Failure::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Err(Failure::Timeout(timeout)),
        };
        if registry::nested_deeper_than(&body, max_depth) {
            return Err(Failure::Exceeded(format!(
                "an answer nested deeper than {max_depth}"
            )));
        }
        let incoming = read::parse(&body);
        let ours = Some(Value::from(id));
        match incoming {
            // An error status answers with an error, never a result.
            Some(i)
                if i.id == ours
                    && i.method.is_none()
                    && (status.is_success() || i.error.is_some()) =>
            {
                answer(i)
            }
            _ if !status.is_success() => Err(Failure::Status(status.as_u16())),
            None => Err(Failure::Unreadable(
                "the answer is not a JSON-RPC message".into(),
            )),
            Some(_) => {
                tracing::warn!(
                    server,
                    "an upstream answered a POST with something other than its answer; dropped"
                );
                crate::metrics::get().violation(server, "foreign_answer");
                Err(Failure::Unreadable("an answer to another request".into()))
            }
        }
    }

    /// Resume a request's stream after the event `last` (a GET with `Last-Event-ID`).
    async fn resume(
        &self,
        last: &str,
        bearer: Option<&str>,
    ) -> Result<Response<super::lean::Body>, Failure> {
        let mut req = self.url.request(Method::GET)?;
        let headers = req.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.insert(PROTOCOL_VERSION_HEADER, self.version.clone());
        headers.insert(LAST_EVENT_ID, header_value(last)?);
        if let Some(session) = self.http.session().filter(|_| self.legacy) {
            headers.insert(SESSION_ID, header_value(&session)?);
        }
        if let Some(b) = bearer {
            headers.insert(AUTHORIZATION, bearer_value(b)?);
        }
        let response = self
            .lean
            .send(req)
            .await
            .map_err(|e| Failure::Transport(e.why))?;
        let status = response.status();
        match status.is_success() && content_type(&response).starts_with("text/event-stream") {
            true => Ok(response),
            false => Err(Failure::Transport(format!(
                "resuming the stream: HTTP {status}"
            ))),
        }
    }
}

/// The connection's client, address and revision, owned (for a message sent on its own).
struct Poster {
    http: UpstreamHttp,
    lean: LeanHttp,
    url: Address,
    version: HeaderValue,
}

impl Poster {
    async fn post(&self, message: &Value) -> Result<(), Failure> {
        let bearer = self
            .http
            .credential(None, None)
            .await
            .map_err(|why| Failure::Transport(why.into()))?;
        let session = self.http.session();
        let mut req = post(&self.url, &self.version, session.as_deref())?;
        if let Some(b) = &bearer {
            req.headers_mut().insert(AUTHORIZATION, bearer_value(b)?);
        }
        *req.body_mut() = Full::new(Bytes::from(message.to_string()));
        let response = self
            .lean
            .send(req)
            .await
            .map_err(|e| Failure::Transport(e.why))?;
        match response.status().is_success() {
            true => Ok(()),
            false => Err(Failure::Transport(format!("HTTP {}", response.status()))),
        }
    }
}

/// Keep of `params` only what the method's request carries (as rmcp's typed requests would):
/// a caller's other members never reach the upstream, since nothing checks or records them.
fn forwardable(method: &str, params: &mut Map<String, Value>) -> Result<(), Failure> {
    let own: &[&str] = match method {
        "tools/call" | "prompts/get" => &["name", "arguments"],
        "resources/read" => &["uri"],
        _ => &[],
    };
    params.retain(|k, _| {
        own.contains(&k.as_str())
            || matches!(k.as_str(), "_meta" | "inputResponses" | "requestState")
    });
    let well_formed = own.iter().all(|k| {
        matches!(
            (*k, params.get(*k)),
            ("arguments", None | Some(Value::Object(_))) | (_, Some(Value::String(_)))
        )
    }) && matches!(params.get("requestState"), None | Some(Value::String(_)))
        && matches!(params.get("inputResponses"), None | Some(Value::Object(_)));
    match well_formed {
        true => Ok(()),
        false => Err(Failure::Unreadable(format!(
            "the {method} request is not well-formed"
        ))),
    }
}

#[cfg(test)]
mod tests;
