//! The lean leg's HTTP requests: the address parsed once, the headers each era sends.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Response};
use http_body_util::Full;

use super::Failure;

pub(super) const PROTOCOL_VERSION_HEADER: HeaderName =
    HeaderName::from_static("mcp-protocol-version");
pub(super) const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub(super) const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub(super) const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(super) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The upstream's address, parsed once: a string would be parsed again on every request. It is
/// read as rmcp's client reads it (a URL, percent-encoded where it must be, dot segments
/// resolved), so both legs reach the same path. One that does not parse fails each request with
/// the reason (the URL itself is not repeated: its query may carry a credential).
#[derive(Clone)]
pub(super) struct Address(Result<http::Uri, Arc<str>>);

impl Address {
    pub(super) fn of(url: &str) -> Address {
        let uri = reqwest::Url::parse(url)
            .map_err(|e| e.to_string())
            .and_then(|u| u.as_str().parse::<http::Uri>().map_err(|e| e.to_string()));
        Address(uri.map_err(Arc::from))
    }

    /// A request to the address, with an empty body.
    pub(super) fn request(&self, method: Method) -> Result<http::Request<Full<Bytes>>, Failure> {
        let uri = self.0.as_ref().map_err(|why| {
            Failure::Unreached(format!("the upstream's URL does not parse: {why}"))
        })?;
        let mut req = http::Request::new(Full::new(Bytes::new()));
        // Room for every header a request carries, so none reallocates the map.
        *req.headers_mut() = http::HeaderMap::with_capacity(12);
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        Ok(req)
    }
}

/// A POST of a JSON-RPC message to the upstream, in `session` where there is one (the body is
/// set by the caller).
pub(super) fn post(
    url: &Address,
    version: &HeaderValue,
    session: Option<&str>,
) -> Result<http::Request<Full<Bytes>>, Failure> {
    let mut req = url.request(Method::POST)?;
    let headers = req.headers_mut();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(PROTOCOL_VERSION_HEADER, version.clone());
    if let Some(session) = session {
        headers.insert(SESSION_ID, header_value(session)?);
    }
    Ok(req)
}

/// `value` as a header's value; a request that cannot carry it is not sent.
pub(super) fn header_value(value: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(value)
        .map_err(|_| Failure::Transport("a header value that HTTP cannot carry".into()))
}

/// `Authorization: Bearer <token>`, marked sensitive (kept out of debug output).
pub(super) fn bearer_value(token: &str) -> Result<HeaderValue, Failure> {
    let mut value = header_value(&format!("Bearer {token}"))?;
    value.set_sensitive(true);
    Ok(value)
}

pub(super) fn content_type<B>(response: &Response<B>) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}
