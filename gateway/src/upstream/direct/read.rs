//! Reading a request's answer on the lean leg: a JSON body, or the POST's SSE stream, resumed
//! with `Last-Event-ID` when it breaks after an event that named itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use http::Response;
use http_body_util::{BodyDataStream, BodyExt as _};

use super::{Direct, Failure};

/// The largest error body read (an HTTP error's JSON-RPC error).
pub(super) const MAX_ERROR: usize = 64 << 10;
/// Times a broken stream is resumed before the call fails.
const MAX_RESUMES: u32 = 5;

/// A JSON-RPC message from the upstream, as far as this leg reads it. A member counts when it is
/// present, whatever its value (`"result": null` is a result, and not an object).
#[derive(Debug, Deserialize)]
pub(super) struct Incoming {
    #[serde(default, deserialize_with = "present")]
    pub(super) id: Option<Value>,
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub(super) result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub(super) error: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `data` as a JSON-RPC message: an object (a derived struct would also read an array).
pub(super) fn parse(data: &[u8]) -> Option<Incoming> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace())?;
    match first {
        b'{' => serde_json::from_slice(data).ok(),
        _ => None,
    }
}

/// What reading one request's SSE stream needs.
pub(super) struct Reading<'a> {
    pub(super) direct: &'a Direct,
    pub(super) id: u64,
    /// Woken by this request's progress that came elsewhere (relayed there).
    pub(super) wake: Arc<tokio::sync::Notify>,
    pub(super) bearer: Option<String>,
    pub(super) progress: Option<(Value, mpsc::UnboundedSender<Value>)>,
    /// Progress extends the deadline by `timeout`, up to `last`.
    pub(super) reset: bool,
    pub(super) timeout: Duration,
    /// The largest event read.
    pub(super) max_response: usize,
    /// The deepest nesting an event may have.
    pub(super) max_depth: usize,
    pub(super) last: Instant,
    pub(super) server: &'a str,
    pub(super) secrets: &'a [String],
}

type Events = super::super::drain::Drained<Result<sse_stream::Sse, sse_stream::Error>>;

/// The SSE events of `response`, each at most `max` bytes: the parser holds an event until its
/// end, so the bytes since the last event's end are counted. `too_large` is set when that is
/// why the stream broke (the response is dropped then, and its connection with it).
fn events(
    response: Response<super::super::lean::Body>,
    answered: Arc<AtomicBool>,
    too_large: Arc<AtomicBool>,
    max: usize,
) -> Events {
    let (mut open, mut tail) = (0usize, [0u8; 2]);
    let bytes = BodyDataStream::new(response.into_body()).map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        open = still_open(open, &mut tail, &chunk);
        if open > max {
            too_large.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other(format!("an event over {max} bytes")));
        }
        Ok(chunk)
    });
    let events = sse_stream::SseStream::from_bytes_stream(bytes).boxed();
    super::super::drain::Drained::new(events, answered)
}

/// The bytes of an unfinished event after `chunk`, given `open` before it and `tail`, the last
/// two bytes before it (updated). An event ends at a blank line: `\n\n`, `\n\r\n` in a CRLF
/// stream or `\r\r` in a CR one, also where the two lines' ends fall in different chunks.
pub(super) fn still_open(open: usize, tail: &mut [u8; 2], chunk: &[u8]) -> usize {
    // Where in `chunk` the last blank line ends: `at` is the index just past it.
    let mut end: Option<usize> = None;
    let joined: Vec<u8> = tail.iter().chain(chunk.iter().take(2)).copied().collect();
    let mut mark = |at: usize| end = Some(end.map_or(at, |e| e.max(at)));
    for (i, w) in joined.windows(2).enumerate() {
        if (w == b"\n\n" || w == b"\r\r") && i > 0 {
            mark(i);
        }
    }
    for (i, w) in joined.windows(3).enumerate() {
        if w == b"\n\r\n" {
            mark(i + 1);
        }
    }
    if let Some(p) = chunk.windows(2).rposition(|w| w == b"\n\n" || w == b"\r\r") {
        mark(p + 2);
    }
    if let Some(p) = chunk.windows(3).rposition(|w| w == b"\n\r\n") {
        mark(p + 3);
    }
    let last_two = [tail[0], tail[1]]
        .into_iter()
        .chain(chunk.iter().copied())
        .rev()
        .take(2)
        .collect::<Vec<u8>>();
    if let [b, a] = last_two[..] {
        *tail = [a, b];
    }
    match end {
        Some(at) => chunk.len() - at.min(chunk.len()),
        None => open + chunk.len(),
    }
}

impl Reading<'_> {
    pub(super) async fn stream(
        self,
        response: Response<super::super::lean::Body>,
        cancel: &CancellationToken,
        deadline: &mut Instant,
    ) -> Result<Value, Failure> {
        let answered = Arc::new(AtomicBool::new(false));
        let too_large = Arc::new(AtomicBool::new(false));
        let max = self.max_response;
        let mut events = events(response, answered.clone(), too_large.clone(), max);
        let ours = Value::from(self.id);
        // Where the stream may be resumed from, after how long, and how many attempts in a row
        // have failed (a resumed stream that delivers starts the count again, as rmcp's does).
        let mut last_event: Option<String> = None;
        let mut retry = Duration::from_millis(100);
        let mut failures = 0;
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                () = self.wake.notified() => {
                    self.extend(deadline);
                    continue;
                }
                () = cancel.cancelled() => return Err(Failure::Cancelled),
                () = tokio::time::sleep_until(*deadline) => return Err(Failure::Timeout(self.timeout)),
            };
            let sse = match next {
                Some(Ok(sse)) => sse,
                broken => {
                    if too_large.load(Ordering::Relaxed) {
                        return Err(Failure::Exceeded(format!("an event over {max} bytes")));
                    }
                    let why = match broken {
                        Some(Err(e)) => e.to_string(),
                        _ => "the stream ended before its answer".to_string(),
                    };
                    // Resumed where it stopped, as the spec has it, if it said where.
                    let response = loop {
                        let Some(from) = last_event.as_deref().filter(|_| failures < MAX_RESUMES)
                        else {
                            return Err(Failure::Transport(why));
                        };
                        failures += 1;
                        tracing::debug!(server = self.server, error = %why, failures, "resuming an upstream answer's stream");
                        let attempt = tokio::select! {
                            r = async {
                                tokio::time::sleep(retry).await;
                                self.direct.resume(from, self.bearer.as_deref()).await
                            } => r,
                            () = cancel.cancelled() => return Err(Failure::Cancelled),
                            () = tokio::time::sleep_until(*deadline) => return Err(Failure::Timeout(self.timeout)),
                        };
                        match attempt {
                            Ok(r) => break r,
                            Err(e) => {
                                tracing::debug!(server = self.server, error = ?e, "resuming failed")
                            }
                        }
                    };
                    events = self::events(response, answered.clone(), too_large.clone(), max);
                    continue;
                }
            };
            failures = 0;
            // Only untyped or `message` events carry JSON-RPC messages.
            if sse
                .event
                .as_deref()
                .is_some_and(|t| !t.is_empty() && t != "message")
            {
                continue;
            }
            if let Some(id) = &sse.id {
                last_event = Some(id.clone());
            }
            if let Some(ms) = sse.retry {
                retry = Duration::from_millis(ms.min(10_000));
            }
            let data = sse.data.as_deref().unwrap_or_default();
            // Bounded above by the bytes between events (an event that ends in the chunk that
            // takes it past the bound is caught here).
            if data.len() > max {
                return Err(Failure::Exceeded(format!("an event over {max} bytes")));
            }
            if registry::nested_deeper_than(data.as_bytes(), self.max_depth) {
                return Err(Failure::Exceeded(format!(
                    "an event nested deeper than {}",
                    self.max_depth
                )));
            }
            let incoming = match classify(data, &ours) {
                Event::Answer(incoming) => incoming,
                Event::Skip => continue,
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
                    if !self.direct.notices.notice(&method, params.as_ref()) {
                        tracing::debug!(server = self.server, method = %method, "an upstream notification on a call's stream that is not for the caller; dropped");
                    }
                    continue;
                }
                Event::Request(id, method) => {
                    self.direct.refuse(id, &method, self.server);
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

    /// Progress came: the deadline moves on by `timeout`, up to `last`, where it may.
    fn extend(&self, deadline: &mut Instant) {
        if self.reset {
            *deadline = (Instant::now() + self.timeout).min(self.last);
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
        self.extend(deadline);
        if let Some((token, sink)) = &self.progress {
            super::super::handler::relay_progress(&p, token, sink, self.server, self.secrets);
        }
    }
}

/// What one SSE event of a request's stream is.
#[derive(Debug)]
pub(super) enum Event {
    /// The answer to the request.
    Answer(Incoming),
    /// Progress (whose token is checked against the request's when relayed).
    Progress(Option<Value>),
    Notification(String, Option<Value>),
    /// A request from the server: its id and method.
    Request(Value, String),
    /// An answer to another request.
    Foreign,
    /// Not a JSON-RPC message.
    Malformed,
    /// Empty (a priming event), or a message that is none of the above.
    Skip,
}

/// Classify the data of one event on the stream of the request whose id is `ours`.
pub(super) fn classify(data: &str, ours: &Value) -> Event {
    if data.trim().is_empty() {
        return Event::Skip;
    }
    let Some(incoming) = parse(data.as_bytes()) else {
        return Event::Malformed;
    };
    match (incoming.method, incoming.id) {
        (Some(method), Some(id)) => Event::Request(id, method),
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
pub(super) fn answer(incoming: Incoming) -> Result<Value, Failure> {
    match (incoming.result, incoming.error) {
        (_, Some(error)) => Err(Failure::Rpc(error)),
        (Some(result @ Value::Object(_)), None) => Ok(result),
        _ => Err(Failure::Unreadable("the result is not an object".into())),
    }
}

/// The body of `response`, at most `max` bytes.
pub(super) async fn bounded(
    response: Response<super::super::lean::Body>,
    max: usize,
) -> Result<Vec<u8>, Failure> {
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| Failure::Transport(super::super::lean::chain(&e)))?;
        // Trailers carry nothing an answer needs.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if body.len() + chunk.len() > max {
            return Err(Failure::Exceeded(format!("an answer over {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
