//! One inbound message's context: who sent it, on which endpoint, in which protocol era.

use std::sync::Arc;

use audit::Event;

use crate::auth::Caller;
use crate::session::{Scope, Session};

/// Which protocol era a request arrived in.
pub(crate) enum Era {
    /// 2025-era: a session created by `initialize`.
    Stateful(Arc<Session>),
    /// 2026-07-28: everything is in the request.
    Stateless,
}

/// One inbound message's context.
pub(crate) struct Call {
    pub(crate) caller: Caller,
    pub(crate) scope: Scope,
    pub(crate) era: Era,
    /// This gateway's id for the inbound message, in its audit events and spans.
    pub(crate) request_id: String,
    /// The W3C trace this request belongs to (its SERVER span's trace id).
    pub(crate) trace_id: Option<String>,
    /// The caller's trace context, parent of the SERVER span.
    pub(crate) parent: opentelemetry::Context,
    /// `Mcp-Param-*` headers of a 2026-07-28 request, checked against a tool call's arguments.
    pub(crate) param_headers: Vec<crate::tools::param_headers::Sent>,
    /// True if the client takes an SSE stream for this request's response (interim messages
    /// reach it); false for JSON-only requests and batch members.
    pub(crate) streams: bool,
}

impl Call {
    /// True for a 2026-07-28 request.
    pub(crate) fn modern(&self) -> bool {
        matches!(self.era, Era::Stateless)
    }

    /// An audit event about this request: its ids, session and caller filled in.
    pub(crate) fn event(&self, kind: &'static str) -> Event {
        let mut e = Event::new(kind);
        e.request_id = Some(self.request_id.clone());
        e.trace_id = self.trace_id.clone();
        e.session = self.session_id().map(str::to_string);
        e.identity = Some(crate::auth::who(&self.caller));
        e
    }

    pub(crate) fn session_id(&self) -> Option<&str> {
        match &self.era {
            Era::Stateful(s) => Some(&s.id),
            Era::Stateless => None,
        }
    }
}
