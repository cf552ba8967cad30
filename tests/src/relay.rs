//! A loopback HTTP relay that adds an API key to every request.
//!
//! The conformance suite's client cannot send credentials, and the gateway has no anonymous path,
//! so the conformance test puts this relay in front of it. It forwards method, path, headers and
//! body unchanged, streams responses (SSE) back, and rewrites only its own authority in `Host` and
//! `Origin` to the gateway's: a foreign `Host` or `Origin` (the suite's DNS-rebinding probe)
//! reaches the gateway untouched.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt as _;
use http::{HeaderValue, header};

#[derive(Clone)]
struct Relay {
    http: reqwest::Client,
    upstream: String,
    own: String,
    key: String,
}

/// Start a relay to `gateway_base` (`http://127.0.0.1:PORT`); returns its own base URL.
pub async fn start(gateway_base: &str, key: &str) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let own = listener.local_addr()?.to_string();
    let relay = Relay {
        http: reqwest::Client::new(),
        upstream: gateway_base.trim_end_matches('/').to_string(),
        own: own.clone(),
        key: key.to_string(),
    };
    let app = axum::Router::new().fallback(forward).with_state(relay);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{own}"))
}

async fn forward(State(r): State<Relay>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let gateway_authority = r.upstream.trim_start_matches("http://").to_string();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let mut out = r
        .http
        .request(parts.method.clone(), format!("{}{}", r.upstream, path));
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        let v = value.to_str().unwrap_or_default();
        let v = if name == header::HOST && v == r.own {
            gateway_authority.clone()
        } else if name == header::ORIGIN && v == format!("http://{}", r.own) {
            format!("http://{gateway_authority}")
        } else {
            v.to_string()
        };
        out = out.header(name, v);
    }
    out = out
        .header(header::AUTHORIZATION, format!("Bearer {}", r.key))
        .body(body);
    match out.send().await {
        Ok(resp) => {
            let mut b = Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                if name == header::CONNECTION
                    || name == header::TRANSFER_ENCODING
                    || name == header::CONTENT_LENGTH
                {
                    continue;
                }
                b = b.header(name, value);
            }
            let stream = resp
                .bytes_stream()
                .map(|c| c.map_err(std::io::Error::other));
            b.body(Body::from_stream(stream)).unwrap_or_default()
        }
        Err(e) => {
            let mut resp = Response::new(Body::from(format!("relay error: {e}")));
            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
    }
}
