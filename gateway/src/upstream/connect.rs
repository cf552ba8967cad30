//! Connecting to an upstream, keeping the connection up, and keeping its tool list current.

use std::sync::Arc;
use std::time::Duration;

use registry::ServerSource;
use rmcp::model::{ClientRequest, ProtocolVersion, ServerResult, Tool};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, PeerRequestOptions};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceExt as _};
use serde_json::json;
use tokio::sync::mpsc;

use super::handler::{ProgressRoutes, UpstreamHandler};
use super::{Connection, Upstream};

/// Connect to endpoint `ep` of `up`: handshake, and the lean leg for an HTTP connection.
pub(super) async fn connect(
    up: &Upstream,
    ep: usize,
    handler: UpstreamHandler,
) -> anyhow::Result<Connection> {
    let server = up.config();
    // The stateless revision first; if the upstream does not speak it (whatever error it gives,
    // per the spec's fallback rule), the initialize handshake on a fresh transport.
    let modern = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let progress = handler.progress.clone();
    let own = rmcp::ClientHandler::get_info(&handler);
    let notices = handler.clone();
    let (service, http) = match handshake(up, ep, handler.clone(), modern).await {
        Ok(s) => s,
        Err(first) => {
            tracing::debug!(server = %server.name, error = %first, "server/discover failed; trying initialize");
            handshake(up, ep, handler, ClientLifecycleMode::Initialize).await?
        }
    };
    let mut conn = connection(service, progress, ep).await?;
    // A shared connection over HTTP takes callers' requests on the lean leg.
    if let Some((http, lean, url)) = http {
        conn.direct = Some(Arc::new(super::direct::Direct::new(
            http,
            lean,
            notices,
            &url,
            conn.protocol.as_str(),
            serde_json::to_value(&own.client_info).unwrap_or_else(|_| json!({})),
            serde_json::to_value(&own.capabilities).unwrap_or_else(|_| json!({})),
            conn.protocol.has_initialize(),
        )));
    }
    Ok(conn)
}

/// A connection bound to one client session: the `initialize` era only, the revisions in which
/// an upstream may send the client requests and log messages.
pub(super) async fn open_link(
    up: &Upstream,
    handler: UpstreamHandler,
) -> anyhow::Result<Connection> {
    let progress = handler.progress.clone();
    let (service, _) = handshake(up, 0, handler, ClientLifecycleMode::Initialize).await?;
    connection(service, progress, 0).await
}

async fn connection(
    service: Service,
    progress: Arc<ProgressRoutes>,
    endpoint: usize,
) -> anyhow::Result<Connection> {
    let info = service
        .peer_info()
        .ok_or_else(|| anyhow::anyhow!("no server info after handshake"))?;
    let peer = service.peer().clone();
    peer.set_response_cache_config(rmcp::service::ClientCacheConfig::disabled())
        .await;
    Ok(Connection {
        peer,
        protocol: info.protocol_version.clone(),
        capabilities: Arc::new(
            serde_json::to_value(&info.capabilities).unwrap_or_else(|_| json!({})),
        ),
        progress,
        direct: None,
        endpoint,
        _service: Arc::new(service),
    })
}

type Service = rmcp::service::RunningService<RoleClient, UpstreamHandler>;

/// What an HTTP connection's lean leg is made of: rmcp's client (credentials, session), the
/// lean client, and the URL.
type Lean = (super::http::UpstreamHttp, super::lean::LeanHttp, String);

/// One handshake attempt over a new transport.
/// An HTTP connection also returns what its lean leg is made of.
async fn handshake(
    up: &Upstream,
    ep: usize,
    handler: UpstreamHandler,
    lifecycle: ClientLifecycleMode,
) -> anyhow::Result<(Service, Option<Lean>)> {
    let server = up.config();
    let limit = server.timeout;
    Ok(match &server.source {
        ServerSource::Http { url, endpoints } => {
            // This endpoint's URL (the first one's for a session's own connection).
            let url = endpoints.get(ep).map_or(url, |e| &e.url);
            // A session the upstream forgot (it restarted) is not re-initialised under the
            // connection's feet: the connection closes, and the supervisor reconnects and lists
            // the tools again, checking them against their pins, before any call goes over it.
            let cfg = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                .reinit_on_expired_session(false);
            // Pooled keep-alive connections with Nagle off; redirects are not followed (an
            // upstream must be reached at the address the config names).
            let (host, port) = registry::url_host(url)
                .ok_or_else(|| anyhow::anyhow!("`{url}` is not an http(s) URL"))?;
            let addrs = checked_addresses(&host, port, server.allow_private).await?;
            let mut headers = http::HeaderMap::new();
            for c in &server.credentials {
                let secret = up.secrets.resolve(&c.secret).await?;
                let text = match c.bearer {
                    true => format!("Bearer {}", secret.expose()),
                    false => secret.expose().to_string(),
                };
                up.sent([text.clone(), secret.expose().to_string()]);
                let mut value = http::HeaderValue::from_str(&text).map_err(|_| {
                    anyhow::anyhow!("secret `{}` is not a valid header value", c.secret)
                })?;
                value.set_sensitive(true);
                let name = http::HeaderName::from_bytes(c.header.as_bytes())?;
                headers.insert(name, value);
            }
            let https = url
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("https:"));
            let tls = super::lean::tls(https)?;
            let mut builder = reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would resolve the host itself, past the checked addresses.
                .no_proxy()
                .default_headers(headers.clone());
            // Connect only to the addresses that were checked: a second lookup cannot move the
            // connection elsewhere (DNS rebinding).
            if host.parse::<std::net::IpAddr>().is_err() {
                builder = builder.resolve_to_addrs(&host, &addrs);
            }
            let lean = super::lean::LeanHttp::new(addrs, headers, tls)?;
            let http = builder.build()?;
            let own = server.minted.as_ref().map(|m| super::http::OwnCredential {
                minter: up.minter.clone(),
                client: m.client().clone(),
                exchange: matches!(m, registry::Minted::Exchange { .. }),
            });
            let client = super::http::UpstreamHttp::new(http, up.name(), own);
            let transport = StreamableHttpClientTransport::with_client(client.clone(), cfg);
            let service =
                tokio::time::timeout(limit, handler.serve_with_lifecycle(transport, lifecycle))
                    .await??;
            (service, Some((client, lean, url.to_string())))
        }
        ServerSource::Command(cmd) => {
            let mut c = super::launch::command(cmd, &up.cache, up.profile).await?;
            c.args(&cmd.args).kill_on_drop(true);
            for (k, r) in &cmd.env {
                let secret = up.secrets.resolve(r).await?;
                up.sent([secret.expose().to_string()]);
                c.env(k, secret.expose());
            }
            if let Some(dir) = &cmd.cwd {
                c.current_dir(dir);
            }
            let transport = TokioChildProcess::new(c)?;
            let service =
                tokio::time::timeout(limit, handler.serve_with_lifecycle(transport, lifecycle))
                    .await??;
            (service, None)
        }
        ServerSource::Builtin(registry::BuiltinServer::Notes) => {
            let (a, b) = tokio::io::duplex(1 << 16);
            tokio::spawn(async move {
                if let Ok(running) = crate::demo::NotesServer::new().serve(a).await {
                    let _ = running.waiting().await;
                }
            });
            let service =
                tokio::time::timeout(limit, handler.serve_with_lifecycle(b, lifecycle)).await??;
            (service, None)
        }
    })
}

/// Resolve an upstream host and check every address: all must be public unless the server
/// allows private addresses. The connection then goes to these addresses only.
pub(crate) async fn checked_addresses(
    host: &str,
    port: u16,
    allow_private: bool,
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let addrs: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
    };
    if addrs.is_empty() {
        anyhow::bail!("`{host}` has no address");
    }
    if !allow_private {
        if let Some(why) = registry::literal_host_problem(host) {
            anyhow::bail!("refused: `{host}` is {why} (set `allow_private: true` to allow)");
        }
        for a in &addrs {
            if let Some(why) = registry::non_public(a.ip()) {
                anyhow::bail!(
                    "refused: `{host}` resolves to {} ({why}); set `allow_private: true` on this server to allow it",
                    a.ip()
                );
            }
        }
    }
    Ok(addrs)
}

/// Connect once as a client with every capability, list every tool the upstream offers
/// (untrusted, unfiltered), and disconnect.
pub(crate) async fn fetch_definitions(up: &Upstream) -> anyhow::Result<Vec<Tool>> {
    let (refresh, _ignored) = mpsc::unbounded_channel();
    let handler = UpstreamHandler {
        server: up.name().to_string(),
        progress: Arc::new(ProgressRoutes::default()),
        events: up.events.clone(),
        refresh,
        relay: None,
        secrets: up.sent_secrets.clone(),
        pinning: true,
    };
    let conn = connect(up, 0, handler).await?;
    let tools = list_all(up, &conn.peer).await;
    if let Ok(service) = Arc::try_unwrap(conn._service) {
        let _ = service.cancel().await;
    }
    tools
}

/// List the tools on endpoint `ep`'s connection and apply that listing; true when what is
/// offered or held back changed.
pub(super) async fn refresh_tools(
    up: &Upstream,
    ep: usize,
    peer: &Peer<RoleClient>,
) -> anyhow::Result<bool> {
    let all = list_all(up, peer).await?;
    Ok(up.set_listing(ep, Some(all)))
}

/// Every page of the upstream's tool list.
async fn list_all(up: &Upstream, peer: &Peer<RoleClient>) -> anyhow::Result<Vec<Tool>> {
    let mut all: Vec<Tool> = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1000 {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let req: ClientRequest =
            serde_json::from_value(json!({ "method": "tools/list", "params": params }))?;
        let res = peer
            .send_request_with_option(req, PeerRequestOptions::with_timeout(up.config().timeout))
            .await?
            .await_response()
            .await?;
        let ServerResult::ListToolsResult(page) = res else {
            anyhow::bail!("unexpected reply to tools/list");
        };
        all.extend(page.tools);
        match page.next_cursor {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    Ok(all)
}
