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
use rmcp::model::{
    ClientJsonRpcMessage, GetExtensions as _, GetMeta as _, RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use sse_stream::{Error as SseError, Sse};

/// Requests whose last SSE event id is remembered for resumption; past this, forgotten.
const MAX_RESUMABLE: usize = 4096;

/// A token minted for one call, carried to the HTTP layer in the request's extensions (which
/// are never serialized or printed) and sent as `Authorization: Bearer`.
#[derive(Clone)]
pub(crate) struct CallCredential(pub(crate) Arc<str>);

/// The gateway's own token source for a server whose credentials are minted: what the
/// connection's traffic outside of calls (initialize, listings, notifications, the GET stream)
/// carries.
#[derive(Clone)]
pub(crate) struct OwnCredential {
    pub(crate) minter: Arc<crate::credentials::Minter>,
    pub(crate) client: registry::OAuthClient,
    /// The server exchanges caller tokens: a request made for a caller never goes without one.
    pub(crate) exchange: bool,
}

/// Requests made for a caller, which carry the caller's minted token on an exchange server.
const FOR_A_CALLER: [&str; 6] = [
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/get",
    "completion/complete",
];

/// The HTTP client of one upstream connection.
#[derive(Clone)]
pub(crate) struct UpstreamHttp {
    http: reqwest::Client,
    server: Arc<str>,
    own: Option<OwnCredential>,
    /// Request id → the last SSE event id its POST stream carried (a GET that resumes from
    /// that event continues that request's stream). An entry goes when the answer passes.
    resumable: Arc<Mutex<HashMap<Value, String>>>,
    /// The session rmcp's transport holds (the `initialize` era), as it last sent it: the lean
    /// leg's requests go in the same session.
    session: Arc<Mutex<Option<Arc<str>>>>,
}

impl UpstreamHttp {
    pub(crate) fn new(
        http: reqwest::Client,
        server: &str,
        own: Option<OwnCredential>,
    ) -> UpstreamHttp {
        UpstreamHttp {
            http,
            server: Arc::from(server),
            own,
            resumable: Arc::default(),
            session: Arc::default(),
        }
    }

    /// Filter `stream` so that only the answer to `expected` (if any) passes.
    fn guard(
        &self,
        stream: BoxStream<'static, Result<Sse, SseError>>,
        expected: Option<Value>,
        record: bool,
        resumed: bool,
        answered: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> BoxStream<'static, Result<Sse, SseError>> {
        let server = self.server.clone();
        let resumable = self.resumable.clone();
        // A resumed stream continues a request that is remembered; a new POST's is not yet.
        let mut remembered = resumed;
        stream
            .filter(move |event| {
                let pass = match event {
                    Ok(sse) => {
                        let verdict = sse
                            .data
                            .as_deref()
                            .map_or(Verdict::Other, |d| admits(d, expected.as_ref(), &server));
                        if let (Verdict::Answer, Some(flag)) = (&verdict, &answered) {
                            flag.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        // Only events that pass move the resumption point, as rmcp's
                        // `Last-Event-ID` only moves over what it received. The map is touched
                        // only for a stream whose events carry ids (most carry none).
                        let touch = match (&verdict, &sse.id) {
                            (Verdict::Other, Some(_)) => true,
                            (Verdict::Answer, _) => remembered,
                            _ => false,
                        };
                        if let (true, true, Some(req), Ok(mut map)) =
                            (record, touch, &expected, resumable.lock())
                        {
                            match (&verdict, &sse.id) {
                                (Verdict::Answer, _) => {
                                    map.remove(req);
                                }
                                (Verdict::Other, Some(id)) => {
                                    if map.len() >= MAX_RESUMABLE
                                        && !map.contains_key(req)
                                        && let Some(old) = map.keys().next().cloned()
                                    {
                                        // Requests that timed out leave entries: one goes.
                                        map.remove(&old);
                                    }
                                    map.insert(req.clone(), id.clone());
                                    remembered = true;
                                }
                                _ => {}
                            }
                        }
                        verdict != Verdict::Dropped
                    }
                    Err(_) => true,
                };
                std::future::ready(pass)
            })
            .boxed()
    }
}

/// The parts of a JSON-RPC message that say whether it is an answer, and to what. A member
/// counts when it is present, whatever its value (`"result": null` is still a result, as rmcp
/// reads it).
#[derive(Deserialize)]
struct Shape {
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: bool,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// What one SSE event is, for the stream of `expected`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The answer to the stream's own request.
    Answer,
    /// An answer to something else: dropped.
    Dropped,
    /// Not an answer: a request, a notification, or an empty (priming) event.
    Other,
}

/// Whether `data` may pass on the stream of `expected`. What is not a JSON-RPC object is
/// dropped too: nothing that cannot be classified reaches rmcp's matching.
fn admits(data: &str, expected: Option<&Value>, server: &str) -> Verdict {
    let trimmed = data.trim_start();
    if trimmed.is_empty() {
        return Verdict::Other;
    }
    // A JSON-RPC message is an object (a derived struct would also read an array).
    let shape = match trimmed.starts_with('{') {
        true => serde_json::from_str::<Shape>(data).ok(),
        false => None,
    };
    let Some(shape) = shape else {
        tracing::warn!(server = %server, "an upstream sent an event that is not a JSON-RPC message; dropped");
        return Verdict::Dropped;
    };
    if shape.method || (!shape.result && !shape.error) {
        return Verdict::Other;
    }
    let ok = shape.id.is_some() && shape.id.as_ref() == expected;
    if ok {
        return Verdict::Answer;
    }
    {
        let null = serde_json::Value::Null;
        tracing::warn!(
            server = %server,
            answered = %shape.id.as_ref().unwrap_or(&null),
            expected = %expected.unwrap_or(&null),
            "an upstream answer arrived on another request's stream; dropped"
        );
        crate::metrics::get().violation(server, "foreign_answer");
    }
    Verdict::Dropped
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

impl UpstreamHttp {
    /// The bearer token a message goes with: its call's minted token, else (for a server whose
    /// credentials are minted) the gateway's own, else what the transport was given.
    async fn bearer(
        &self,
        message: Option<&ClientJsonRpcMessage>,
        given: Option<String>,
    ) -> Result<Option<String>, StreamableHttpError<reqwest::Error>> {
        let (call, method) = match message {
            Some(ClientJsonRpcMessage::Request(r)) => (
                r.request
                    .extensions()
                    .get::<CallCredential>()
                    .map(|c| c.0.clone()),
                Some(r.request.method()),
            ),
            _ => (None, None),
        };
        match self.credential(call, method).await {
            Ok(Some(token)) => Ok(Some(token)),
            Ok(None) => Ok(given),
            Err(why) => Err(StreamableHttpError::UnexpectedServerResponse(why.into())),
        }
    }

    /// The bearer token a request for `method` goes with: `call`, its call's minted token, else
    /// (for a server whose credentials are minted) the gateway's own; `None` where the server's
    /// credentials are static (in the client's default headers) or absent. A caller's request on
    /// an exchange server never goes without the caller's token.
    pub(crate) async fn credential(
        &self,
        call: Option<Arc<str>>,
        method: Option<&str>,
    ) -> Result<Option<String>, &'static str> {
        if let Some(token) = call {
            return Ok(Some(token.to_string()));
        }
        let Some(own) = &self.own else {
            return Ok(None);
        };
        if own.exchange
            && let Some(method) = method.filter(|m| FOR_A_CALLER.contains(m))
        {
            tracing::error!(server = %self.server, method, "a caller's request without its minted token; not sent");
            return Err("no credential for the caller");
        }
        match own.minter.own(&self.server, &own.client).await {
            Ok(t) => Ok(Some(t.value.to_string())),
            Err(e) => {
                tracing::warn!(server = %self.server, error = %e, "no credential for the connection; not sent");
                Err("no credential for the upstream")
            }
        }
    }
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
        // Once answered, read to its end even when rmcp lets it go early, so its connection is
        // reused; dropped before its answer (a cancelled call), it is let go at once.
        StreamableHttpPostResponse::Sse(stream, session) => {
            let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
            Ok(StreamableHttpPostResponse::Sse(
                client.guard(
                    super::drain::Drained::new(stream, answered.clone()).boxed(),
                    expected,
                    true,
                    false,
                    Some(answered),
                ),
                session,
            ))
        }
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
        self.saw_session(session_id.as_ref());
        trace_headers(&message, &mut custom_headers);
        let expected = request_id(&message);
        let auth_header = self.bearer(Some(&message), auth_header).await?;
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
        self.saw_session(session_id.as_ref());
        trace_headers(&message, &mut custom_headers);
        let expected = request_id(&message);
        let auth_header = self.bearer(Some(&message), auth_header).await?;
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
        if let Ok(mut s) = self.session.lock() {
            *s = None;
        }
        let auth_header = self.bearer(None, auth_header).await?;
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
        let auth_header = self.bearer(None, auth_header).await?;
        let stream = self
            .http
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await?;
        Ok(self.guard(
            stream,
            expected.clone(),
            expected.is_some(),
            expected.is_some(),
            None,
        ))
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
        let auth_header = self.bearer(None, auth_header).await?;
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
        Ok(self.guard(
            stream,
            expected.clone(),
            expected.is_some(),
            expected.is_some(),
            None,
        ))
    }
}

impl UpstreamHttp {
    pub(super) fn saw_session(&self, session: Option<&Arc<str>>) {
        if let (Some(id), Ok(mut s)) = (session, self.session.lock())
            && s.as_ref() != Some(id)
        {
            *s = Some(id.clone());
        }
    }

    /// The connection's session, once rmcp's transport has sent a request in it.
    pub(crate) fn session(&self) -> Option<Arc<str>> {
        self.session.lock().ok().and_then(|s| s.clone())
    }

    /// The request whose POST stream a GET with this `Last-Event-ID` resumes (resumption is
    /// rare: a scan of the requests in flight).
    fn resumed(&self, last_event_id: Option<&str>) -> Option<Value> {
        let id = last_event_id?;
        let map = self.resumable.lock().ok()?;
        map.iter()
            .find(|(_, last)| last.as_str() == id)
            .map(|(req, _)| req.clone())
    }
}

#[cfg(test)]
mod tests;
