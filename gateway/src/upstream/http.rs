//! The HTTP client under each Streamable HTTP upstream connection: rmcp's reqwest client, with
//! two things added on the way in and out.
//!
//! - **Out:** the `traceparent` of a request's `params._meta` also goes as the W3C header, so
//!   HTTP-level tracing at the upstream joins the same trace.
//! - **In:** an answer is accepted only on the stream of the request it answers. rmcp matches
//!   answers to requests by id alone, whatever stream they arrive on; over a connection that
//!   callers share, an upstream could otherwise answer one caller's request on another caller's
//!   stream. Here a POST's stream (or JSON body) passes only the answer to that POST's request;
//!   a GET stream passes no answer, unless it resumes a POST stream (`Last-Event-ID` of an event
//!   seen on it), and then only that request's. Anything else is dropped and logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, GetMeta as _, RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use sse_stream::{Error as SseError, Sse};

/// Event ids remembered for resumption; past this the oldest half is forgotten.
const MAX_RESUMABLE: usize = 4096;

/// The HTTP client of one upstream connection.
#[derive(Clone)]
pub(crate) struct UpstreamHttp {
    http: reqwest::Client,
    server: Arc<str>,
    /// SSE event id → the request whose POST stream carried it.
    resumable: Arc<Mutex<HashMap<String, Value>>>,
}

impl UpstreamHttp {
    pub(crate) fn new(http: reqwest::Client, server: &str) -> UpstreamHttp {
        UpstreamHttp {
            http,
            server: Arc::from(server),
            resumable: Arc::default(),
        }
    }

    /// Filter `stream` so that only the answer to `expected` (if any) passes.
    fn guard(
        &self,
        stream: BoxStream<'static, Result<Sse, SseError>>,
        expected: Option<Value>,
        record: bool,
    ) -> BoxStream<'static, Result<Sse, SseError>> {
        let server = self.server.clone();
        let resumable = self.resumable.clone();
        stream
            .filter(move |event| {
                let pass = match event {
                    Ok(sse) => {
                        if record
                            && let (Some(id), Some(req)) = (&sse.id, &expected)
                            && let Ok(mut map) = resumable.lock()
                        {
                            if map.len() >= MAX_RESUMABLE {
                                map.clear();
                            }
                            map.insert(id.clone(), req.clone());
                        }
                        sse.data
                            .as_deref()
                            .is_none_or(|d| admits(d, expected.as_ref(), &server))
                    }
                    Err(_) => true,
                };
                std::future::ready(pass)
            })
            .boxed()
    }
}

/// The parts of a JSON-RPC message that say whether it is an answer, and to what.
#[derive(Deserialize)]
struct Shape {
    id: Option<Value>,
    method: Option<IgnoredAny>,
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

/// True unless `data` is an answer to something other than `expected`. What does not parse
/// passes: rmcp refuses it itself.
fn admits(data: &str, expected: Option<&Value>, server: &str) -> bool {
    let Ok(shape) = serde_json::from_str::<Shape>(data) else {
        return true;
    };
    if shape.method.is_some() || (shape.result.is_none() && shape.error.is_none()) {
        return true;
    }
    let ok = shape.id.is_some() && shape.id.as_ref() == expected;
    if !ok {
        let null = serde_json::Value::Null;
        tracing::warn!(
            server = %server,
            answered = %shape.id.as_ref().unwrap_or(&null),
            expected = %expected.unwrap_or(&null),
            "an upstream answer arrived on another request's stream; dropped"
        );
        crate::metrics::get().violation(server, "foreign_answer");
    }
    ok
}

fn request_id(message: &ClientJsonRpcMessage) -> Option<Value> {
    match message {
        ClientJsonRpcMessage::Request(r) => id_value(&r.id),
        _ => None,
    }
}

fn id_value(id: &RequestId) -> Option<Value> {
    serde_json::to_value(id).ok()
}

/// The `traceparent` a request carries in `params._meta`, read from the parsed message (no
/// copy of the request is made).
fn trace_headers(message: &ClientJsonRpcMessage, headers: &mut HashMap<HeaderName, HeaderValue>) {
    let ClientJsonRpcMessage::Request(r) = message else {
        return;
    };
    if let Some(tp) = r.request.get_meta().get_traceparent()
        && let Ok(hv) = HeaderValue::from_str(tp)
    {
        headers.insert(HeaderName::from_static("traceparent"), hv);
    }
}

/// The POST's answer, checked: a JSON answer to another request is refused, a stream filtered.
fn checked(
    client: &UpstreamHttp,
    expected: Option<Value>,
    response: StreamableHttpPostResponse,
) -> Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>> {
    match response {
        StreamableHttpPostResponse::Json(message, session) => {
            let answer = match &message {
                ServerJsonRpcMessage::Response(r) => Some(id_value(&r.id)),
                ServerJsonRpcMessage::Error(e) => Some(e.id.as_ref().and_then(id_value)),
                _ => None,
            };
            match answer {
                Some(id) if id.is_none() || id != expected => {
                    tracing::warn!(server = %client.server, "an upstream answered a POST with the answer to another request; dropped");
                    crate::metrics::get().violation(&client.server, "foreign_answer");
                    Err(StreamableHttpError::UnexpectedServerResponse(
                        "an answer to another request".into(),
                    ))
                }
                _ => Ok(StreamableHttpPostResponse::Json(message, session)),
            }
        }
        StreamableHttpPostResponse::Sse(stream, session) => Ok(StreamableHttpPostResponse::Sse(
            client.guard(stream, expected, true),
            session,
        )),
        other => Ok(other),
    }
}

impl StreamableHttpClient for UpstreamHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        trace_headers(&message, &mut custom_headers);
        let expected = request_id(&message);
        let response = self
            .http
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await?;
        checked(self, expected, response)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        trace_headers(&message, &mut custom_headers);
        let expected = request_id(&message);
        let response = self
            .http
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await?;
        checked(self, expected, response)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.http
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let expected = self.resumed(last_event_id.as_deref());
        let stream = self
            .http
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await?;
        Ok(self.guard(stream, expected.clone(), expected.is_some()))
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let expected = self.resumed(last_event_id.as_deref());
        let stream = self
            .http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await?;
        Ok(self.guard(stream, expected.clone(), expected.is_some()))
    }
}

impl UpstreamHttp {
    /// The request whose POST stream a GET with this `Last-Event-ID` resumes.
    fn resumed(&self, last_event_id: Option<&str>) -> Option<Value> {
        let id = last_event_id?;
        self.resumable.lock().ok()?.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_expected_answer_passes() {
        let n = Some(json!(3));
        let answer = |id: Value| json!({ "jsonrpc": "2.0", "id": id, "result": {} }).to_string();
        assert!(admits(&answer(json!(3)), n.as_ref(), "s"));
        assert!(!admits(&answer(json!(4)), n.as_ref(), "s"));
        assert!(!admits(&answer(json!("3")), n.as_ref(), "s"));
        assert!(!admits(&answer(json!(3)), None, "s"));
        let error = json!({ "jsonrpc": "2.0", "id": 4, "error": { "code": 1, "message": "x" } });
        assert!(!admits(&error.to_string(), n.as_ref(), "s"));
        let no_id = json!({ "jsonrpc": "2.0", "error": { "code": 1, "message": "x" } });
        assert!(!admits(&no_id.to_string(), n.as_ref(), "s"));
        // Requests and notifications are not answers, whatever their id.
        let request = json!({ "jsonrpc": "2.0", "id": 4, "method": "ping" });
        assert!(admits(&request.to_string(), n.as_ref(), "s"));
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": {} });
        assert!(admits(&note.to_string(), None, "s"));
    }
}
