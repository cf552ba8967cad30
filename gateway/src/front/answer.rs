//! Running one message and answering it: JSON, or SSE once the request sends interim messages.

use super::*;
use crate::session::replay::Replay;

/// Run one message and answer it: 202 for notifications and responses; for requests JSON, or an
/// SSE stream if the request produced messages (progress, logs) before its result.
pub(super) async fn answer(
    gw: Arc<Gateway>,
    call: Call,
    msg: Inbound,
    accepts_sse: bool,
) -> Response {
    match msg {
        Inbound::Notification { method, params } => {
            crate::dispatch::notification(&gw, &call, &method, params.as_ref());
            StatusCode::ACCEPTED.into_response()
        }
        Inbound::Response { id, outcome } => {
            crate::dispatch::client_response(&call, &id, outcome);
            StatusCode::ACCEPTED.into_response()
        }
        Inbound::Request { id, method, params } => {
            if method == "subscriptions/listen" && matches!(call.era, Era::Stateless) {
                return listen(gw, call, id, params).await;
            }
            request(gw, call, id, method, params, accepts_sse).await
        }
    }
}

/// A request: run in a SERVER span, measured, and answered as [`respond`] decides.
async fn request(
    gw: Arc<Gateway>,
    mut call: Call,
    id: Value,
    method: String,
    params: Option<Value>,
    accepts_sse: bool,
) -> Response {
    let modern = matches!(call.era, Era::Stateless);
    let replay = match &call.era {
        Era::Stateful(s) => Some(s.replay.clone()),
        Era::Stateless => None,
    };
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    call.streams = accepts_sse;
    let protocol = match &call.era {
        Era::Stateful(s) => s.protocol_version.clone(),
        Era::Stateless => STATELESS_VERSION.to_string(),
    };
    let span = crate::telemetry::server_span(
        &call.parent,
        &method,
        params.as_ref(),
        &id,
        call.session_id(),
        &protocol,
    );
    call.trace_id = Some(crate::telemetry::trace_id(&span));
    let fut = {
        let gw = gw.clone();
        let id = id.clone();
        let ended = span.clone();
        async move {
            let started = std::time::Instant::now();
            let answer = crate::dispatch::request(&gw, &call, &id, &method, params, tx).await;
            crate::metrics::get().request(&method, answer.label(), started.elapsed());
            let why = answer.face.as_ref().and_then(|f| f.reason);
            // A 2026-07-28 answer's HTTP status is the refusal's (`Refusal::face`).
            let status = answer.face.as_ref().map_or(StatusCode::OK, |f| f.status);
            let r = answer.result;
            crate::telemetry::finish(&ended, r.as_ref().map_err(|e| (e.code, why)));
            (r, status)
        }
        .with_context(span)
    };
    // Polled here, not spawned: no hand-over to another thread and back on every call.
    let run = Finish::new(fut, gw.detached.clone());
    respond(&gw, run, rx, id, modern, accepts_sse, replay).await
}

/// JSON with the result, unless the request sends an interim message first and the client
/// takes a stream: then SSE with every interim message, then the result.
async fn respond<F>(
    gw: &Gateway,
    mut run: Finish<F>,
    mut rx: mpsc::UnboundedReceiver<Value>,
    id: Value,
    modern: bool,
    accepts_sse: bool,
    replay: Option<Arc<Replay>>,
) -> Response
where
    F: Future<Output = (Result<Value, RpcError>, StatusCode)> + Send + 'static,
{
    let json = |done| {
        let (status, body) = finish(&id, done, modern);
        // Over a limit (2026-07-28 answers only): the wait the refusal names, as `Retry-After`.
        let retry = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| {
                body.pointer("/error/data/retry_after_s")
                    .and_then(Value::as_u64)
            })
            .flatten()
            .map(|s| [(http::header::RETRY_AFTER, s.to_string())]);
        (status, retry, axum::Json(body)).into_response()
    };
    // Wait for either the result or a first message that needs a stream.
    let first = tokio::select! {
        r = &mut run => return json(r),
        m = rx.recv() => m,
    };
    if first.is_none() || !accepts_sse {
        // No interim message (every sender is gone: the result is near), or a client that
        // cannot take a stream: interim messages are dropped, the result is the answer.
        drop(first);
        return json(run.await);
    }
    // Interim messages until every sender is gone (the request has finished), then the result.
    // The request goes on in a task of its own: the stream only carries what it sends.
    let task = gw.detached.spawn(run);
    if let Some(replay) = replay {
        return resumable(gw, replay, first, rx, task, id, modern);
    }
    let head = futures::stream::iter(first);
    let mids =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let last = futures::stream::once(async move {
        let done = task.await.ok().flatten();
        finish(&id, done, modern).1
    });
    let events = head.chain(mids).chain(last).map(|v| {
        Ok::<_, Infallible>(match v.is_null() {
            true => Event::default().comment("waiting"),
            false => Event::default().event("message").data(v.to_string()),
        })
    });
    // A comment whenever nothing else went out for a while: a call held for approval keeps the
    // client's read timeout from running out.
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(STREAM_KEEPALIVE))
        .into_response()
}

/// A session's streamed answer, resumable (`session/replay.rs`): a task of its own writes each
/// message to the session's log with its event id, and the answer (or a GET resuming it) reads
/// them from there.
fn resumable(
    gw: &Gateway,
    replay: Arc<Replay>,
    first: Option<Value>,
    mut rx: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<Option<(Result<Value, RpcError>, StatusCode)>>,
    id: Value,
    modern: bool,
) -> Response {
    let stream = replay.open();
    let log = replay.clone();
    // The answer's own connection closing is its client going away, as without resumption: the
    // request's messages stop (a held call stops waiting and never runs); a call already
    // running goes on, and its response is kept for a client that resumes.
    let gone = tokio_util::sync::CancellationToken::new();
    let left = gone.clone();
    gw.detached.spawn(async move {
        // `null` only opens the stream (a comment): nothing to keep.
        for m in first.into_iter().filter(|m| !m.is_null()) {
            log.push(stream, m.to_string(), false);
        }
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) if !m.is_null() => log.push(stream, m.to_string(), false),
                    Some(_) => {}
                    None => break,
                },
                () = left.cancelled() => break,
            }
        }
        drop(rx);
        let done = task.await.ok().flatten();
        log.push(stream, finish(&id, done, modern).1.to_string(), true);
    });
    let opened = futures::stream::once(async { Ok(Event::default().comment("waiting")) });
    let guard = gone.drop_guard();
    let events = opened.chain(replay.follow(stream, None).map(move |e| {
        let _open = &guard;
        sent(e)
    }));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(STREAM_KEEPALIVE))
        .into_response()
}

/// One kept message as an SSE event with its id.
pub(super) fn sent((id, data): crate::session::replay::Sent) -> Result<Event, Infallible> {
    Ok(Event::default().id(id).event("message").data(&*data))
}

/// How long an answer's stream stays silent before a comment goes out.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(5);

/// A request's future, polled where its answer is awaited. Its output is `None` if it panicked.
///
/// Abandoned unfinished (the client went away and the connection dropped the handler), it is
/// finished in a task of its own, tracked so shutdown waits for it: a call that was let through
/// still runs to its end and its result is recorded, as when the client stays.
struct Finish<F: Future + Send + 'static>
where
    F::Output: Send,
{
    fut: Option<std::pin::Pin<Box<F>>>,
    detached: tokio_util::task::TaskTracker,
}

impl<F: Future + Send + 'static> Finish<F>
where
    F::Output: Send,
{
    fn new(fut: F, detached: tokio_util::task::TaskTracker) -> Finish<F> {
        Finish {
            fut: Some(Box::pin(fut)),
            detached,
        }
    }
}

impl<F: Future + Send + 'static> Future for Finish<F>
where
    F::Output: Send,
{
    type Output = Option<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let slot = &mut self.fut;
        let Some(fut) = slot.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        // No panic is expected on this path; if one happens anyway, the caller gets an
        // internal error, as from a failed task, and the connection survives. The future that
        // panicked is dropped inside the guard too.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match fut.as_mut().poll(cx) {
                std::task::Poll::Pending => None,
                std::task::Poll::Ready(out) => Some(out),
            }
        }));
        match polled {
            Ok(None) => std::task::Poll::Pending,
            Ok(Some(out)) => {
                *slot = None;
                std::task::Poll::Ready(Some(out))
            }
            Err(_) => {
                let failed = slot.take();
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(failed)));
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Finish<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                self.detached.spawn_on(fut, &rt);
            }
            Err(_) => tracing::error!("a request was abandoned with no runtime to finish it"),
        }
    }
}

fn finish(
    id: &Value,
    done: Option<(Result<Value, RpcError>, StatusCode)>,
    modern: bool,
) -> (StatusCode, Value) {
    match done {
        Some((Ok(result), _)) => (StatusCode::OK, jsonrpc::response(id, result)),
        Some((Err(e), status)) => {
            let status = if modern { status } else { StatusCode::OK };
            (status, jsonrpc::error_response(Some(id), &e))
        }
        None => {
            tracing::error!("request failed unexpectedly");
            (
                StatusCode::OK,
                jsonrpc::error_response(
                    Some(id),
                    &RpcError::new(jsonrpc::INTERNAL_ERROR, "internal error"),
                ),
            )
        }
    }
}
