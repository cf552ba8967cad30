//! OpenTelemetry: a SERVER span per inbound MCP request and a CLIENT span per upstream request,
//! named and attributed as the MCP semantic conventions say (`mcp.method.name`,
//! `gen_ai.operation.name = execute_tool`, `gen_ai.tool.name`, `mcp.session.id`, `error.type`, …).
//!
//! W3C trace context comes from the inbound `traceparent`/`tracestate` headers, or from
//! `params._meta` when the headers carry none; upstream requests carry it in `params._meta` and,
//! over HTTP, in the headers too (`upstream::http`). Arguments and results are never span
//! attributes. Without `telemetry.otlp` spans still get ids (trace ids appear in the audit log
//! and are passed upstream) but go nowhere.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use registry::TelemetrySettings;
use serde_json::{Map, Value};

/// Longest attribute value taken from a request (names are bounded; this is belt and braces).
const MAX_ATTRIBUTE: usize = 128;

struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

fn telemetry() -> &'static Telemetry {
    TELEMETRY.get_or_init(|| build(None, "portcullis"))
}

/// What the last span export ended in, for the self-audit.
#[derive(Clone, Debug)]
pub(crate) struct ExportStatus {
    /// Unix milliseconds when the export finished.
    pub(crate) at_ms: i64,
    /// Spans in the batch.
    pub(crate) spans: usize,
    /// Why it failed, if it did.
    pub(crate) error: Option<String>,
}

static LAST_EXPORT: std::sync::Mutex<Option<ExportStatus>> = std::sync::Mutex::new(None);

/// The outcome of the latest OTLP export, if one has run in this process.
pub(crate) fn last_export() -> Option<ExportStatus> {
    LAST_EXPORT.lock().ok().and_then(|s| s.clone())
}

/// The OTLP exporter, noting each export's outcome so the self-audit can say whether spans are
/// delivered rather than only configured.
#[derive(Debug)]
struct Watched(opentelemetry_otlp::SpanExporter);

impl opentelemetry_sdk::trace::SpanExporter for Watched {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let spans = batch.len();
        let sent = self.0.export(batch);
        async move {
            let result = sent.await;
            let status = ExportStatus {
                at_ms: store::now_ms(),
                spans,
                error: result.as_ref().err().map(ToString::to_string),
            };
            if let Ok(mut last) = LAST_EXPORT.lock() {
                *last = Some(status);
            }
            result
        }
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

fn build(exporter: Option<opentelemetry_otlp::SpanExporter>, service: &str) -> Telemetry {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(e) = exporter {
        builder = builder.with_batch_exporter(Watched(e));
    }
    let provider = builder.build();
    let tracer = provider.tracer("portcullis");
    Telemetry { provider, tracer }
}

/// Set up span export as configured. Call once, before serving, from a thread that may block
/// (the OTLP exporter's HTTP client is a blocking one, run on the batch processor's thread).
pub(crate) fn init(settings: &TelemetrySettings) -> Result<(), String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = match &settings.otlp {
        None => None,
        Some(o) => {
            let client = reqwest::blocking::Client::builder()
                .timeout(o.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("telemetry.otlp: cannot build the HTTP client: {e}"))?;
            Some(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_endpoint(format!("{}/v1/traces", o.endpoint))
                    .with_timeout(o.timeout)
                    .build()
                    .map_err(|e| format!("telemetry.otlp: {e}"))?,
            )
        }
    };
    TELEMETRY
        .set(build(exporter, &settings.service_name))
        .map_err(|_| "telemetry was already set up".to_string())
}

/// Send what is buffered and stop. Blocks: call from a blocking thread.
pub(crate) fn shutdown() {
    if let Some(t) = TELEMETRY.get()
        && let Err(e) = t.provider.shutdown()
    {
        tracing::warn!(error = %e, "telemetry shutdown");
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Meta<'a>(&'a Map<String, Value>);

impl Extractor for Meta<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaOut<'a>(&'a mut Map<String, Value>);

impl Injector for MetaOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), Value::String(value));
    }
}

/// The caller's trace context: the `traceparent` header, else `params._meta.traceparent`.
pub(crate) fn extract(headers: &HeaderMap, params: Option<&Value>) -> Context {
    let propagator = TraceContextPropagator::new();
    if headers.contains_key("traceparent") {
        return propagator.extract_with_context(&Context::new(), &Headers(headers));
    }
    match params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
    {
        Some(meta) if meta.contains_key("traceparent") => {
            propagator.extract_with_context(&Context::new(), &Meta(meta))
        }
        _ => Context::new(),
    }
}

fn bounded(s: &str) -> String {
    let mut s = s.to_string();
    crate::redact::shorten(&mut s, MAX_ATTRIBUTE);
    s
}

/// What names a span: the tool, prompt or resource a request targets.
fn target<'a>(method: &str, params: Option<&'a Value>) -> Option<&'a str> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return None,
    };
    params?.get(key)?.as_str()
}

/// The span's target as shown: URIs without credentials or queries, names bounded.
fn shown_target(method: &str, params: Option<&Value>) -> Option<String> {
    let t = target(method, params)?;
    Some(if method.starts_with("resources/") {
        crate::redact::uri_for_record(t)
    } else {
        bounded(t)
    })
}

/// Start the SERVER span of one inbound request, as a child of `parent`.
pub(crate) fn server_span(
    parent: &Context,
    method: &str,
    params: Option<&Value>,
    id: &Value,
    session: Option<&str>,
    protocol: &str,
) -> Context {
    let target = shown_target(method, params);
    let name = match &target {
        Some(t) => format!("{method} {t}"),
        None => method.to_string(),
    };
    let mut attrs = vec![
        KeyValue::new("mcp.method.name", method.to_string()),
        KeyValue::new("mcp.protocol.version", protocol.to_string()),
        KeyValue::new("network.transport", "tcp"),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new(
            "jsonrpc.request.id",
            match id {
                Value::String(s) => bounded(s),
                other => bounded(&other.to_string()),
            },
        ),
    ];
    if let Some(s) = session {
        attrs.push(KeyValue::new("mcp.session.id", s.to_string()));
    }
    if method == "tools/call" {
        attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        if let Some(t) = &target {
            attrs.push(KeyValue::new("gen_ai.tool.name", t.clone()));
        }
    } else if method == "prompts/get"
        && let Some(t) = target
    {
        attrs.push(KeyValue::new("gen_ai.prompt.name", t));
    }
    let tracer = &telemetry().tracer;
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}

/// The trace id of the span in `cx`, as 32 hex digits.
pub(crate) fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

/// End the span in `cx` with the outcome of its request: `error.type` is the JSON-RPC code,
/// or `tool_error` for a tool result with `isError`; `portcullis.reason` names a refusal.
pub(crate) fn finish(cx: &Context, outcome: Result<&Value, (i64, Option<&str>)>) {
    let span = cx.span();
    match outcome {
        Ok(v) if v.get("isError").and_then(Value::as_bool) == Some(true) => {
            span.set_attribute(KeyValue::new("error.type", "tool_error"));
            span.set_status(opentelemetry::trace::Status::error("tool_error"));
        }
        Ok(_) => {}
        Err((code, reason)) => {
            span.set_attribute(KeyValue::new("error.type", code.to_string()));
            span.set_attribute(KeyValue::new("rpc.jsonrpc.error_code", code));
            if let Some(r) = reason {
                span.set_attribute(KeyValue::new("portcullis.reason", bounded(r)));
            }
            span.set_status(opentelemetry::trace::Status::error(code.to_string()));
        }
    }
    span.end();
}

/// Start the CLIENT span of minting one upstream credential (`kind`: `exchange` or
/// `client_credentials`), a child of the current context.
pub(crate) fn credential_span(server: &str, kind: &'static str) -> Context {
    let parent = Context::current();
    let tracer = &telemetry().tracer;
    let span = tracer
        .span_builder(format!("credential {kind}"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("portcullis.server", server.to_string()),
            KeyValue::new("portcullis.credential.kind", kind),
        ])
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// End a credential span: `minted`, `cached`, or the error it was refused with (never a token).
pub(crate) fn finish_credential(cx: &Context, outcome: Result<&'static str, &str>) {
    let span = cx.span();
    match outcome {
        Ok(o) => span.set_attribute(KeyValue::new("portcullis.credential.outcome", o)),
        Err(why) => {
            span.set_attribute(KeyValue::new("portcullis.credential.outcome", "refused"));
            span.set_attribute(KeyValue::new("error.type", "credential_unavailable"));
            span.set_status(opentelemetry::trace::Status::error(bounded(why)));
        }
    }
    span.end();
}

/// Start the CLIENT span of one upstream request, a child of the current context, and put its
/// trace context into `params._meta`.
pub(crate) fn client_span(
    server: &str,
    address: Option<(&str, u16)>,
    method: &str,
    params: &mut Option<Value>,
) -> Context {
    let parent = Context::current();
    let target = shown_target(method, params.as_ref());
    let name = match &target {
        Some(t) => format!("{method} {t}"),
        None => method.to_string(),
    };
    let mut attrs = vec![
        KeyValue::new("mcp.method.name", method.to_string()),
        KeyValue::new("portcullis.server", server.to_string()),
        KeyValue::new(
            "network.transport",
            if address.is_some() { "tcp" } else { "pipe" },
        ),
    ];
    if let Some((host, port)) = address {
        attrs.push(KeyValue::new("server.address", host.to_string()));
        attrs.push(KeyValue::new("server.port", i64::from(port)));
    }
    if method == "tools/call" {
        attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        if let Some(t) = target {
            attrs.push(KeyValue::new("gen_ai.tool.name", t));
        }
    }
    let tracer = &telemetry().tracer;
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attrs)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let p = params.get_or_insert_with(|| Value::Object(Map::new()));
    if let Some(obj) = p.as_object_mut() {
        let meta = obj
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            TraceContextPropagator::new().inject_context(&cx, &mut MetaOut(m));
            // The caller's vendor state is the caller's: upstreams get the trace, nothing more.
            m.remove("tracestate");
        }
    }
    cx
}

#[cfg(test)]
mod tests;
