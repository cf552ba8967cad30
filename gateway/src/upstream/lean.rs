//! The lean leg's HTTP client: keep-alive HTTP/1.1 connections made with hyper's connection API
//! ([`pool`]), with TLS by rustls, reaching only the addresses checked when the connection was
//! made.
//!
//! rmcp's transport (the handshake, listings, the GET stream) keeps its reqwest client. A
//! caller's request goes here instead: reqwest's layers (its URL parsed again from each response,
//! its redirect and retry policies, its default headers copied into every request) cost as much
//! CPU per call as hyper's own exchange, and the lean leg needs none of them (redirects are never
//! followed, and the address is fixed). The TLS settings are reqwest's: the platform's verifier
//! over the process's crypto provider (aws-lc-rs unless another was installed), TLS 1.2 and 1.3.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

mod pool;

pub(super) use pool::Body;
/// TCP keepalive and the unacknowledged-data timeout, reqwest's defaults: a peer that vanished
/// without closing is found out in well under a call's deadline, even on a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;
const USER_TIMEOUT: Duration = Duration::from_secs(30);

type Connector = HttpsConnector<HttpConnector<Checked>>;

/// The lean leg's client for one upstream connection. Cloned cheaply (the pool is shared).
#[derive(Clone)]
pub(super) struct LeanHttp {
    pool: pool::Pool,
    /// The server's credential headers (marked sensitive), sent with every request.
    headers: Arc<HeaderMap>,
    /// The `Host` header for the URL's authority, made on the first request.
    host: Arc<std::sync::OnceLock<(Authority, HeaderValue)>>,
}

/// Why a request did not get a response.
#[derive(Debug)]
pub(super) struct SendError {
    /// No connection could be made: the request never left the gateway.
    pub(super) unreached: bool,
    pub(super) why: String,
}

impl LeanHttp {
    /// A client that connects to `addrs` whatever a name resolves to now (the addresses were
    /// checked against the server's `allow_private`), sending `headers` with every request, with
    /// `tls` (see [`tls`]) for `https` URLs.
    pub(super) fn new(
        addrs: Vec<SocketAddr>,
        headers: HeaderMap,
        tls: rustls::ClientConfig,
    ) -> anyhow::Result<LeanHttp> {
        let mut http = HttpConnector::new_with_resolver(Checked(Arc::new(addrs)));
        http.set_nodelay(true);
        http.set_keepalive(Some(KEEPALIVE));
        http.set_keepalive_interval(Some(KEEPALIVE));
        http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        http.set_tcp_user_timeout(Some(USER_TIMEOUT));
        // `https` URLs are the TLS layer's; it hands the TCP connection down. The name verified
        // (and sent as SNI) is the URL's host, whatever address the resolver gave; `tls` offers
        // HTTP/1.1 by ALPN.
        http.enforce_http(false);
        let https = HttpsConnector::from((http, tls));
        Ok(LeanHttp {
            pool: pool::Pool::new(https),
            headers: Arc::new(headers),
            host: Arc::default(),
        })
    }

    /// Send `req` (to an absolute URL) with the credential headers it does not set itself (as
    /// reqwest's default headers); its response, whose body is read by the caller (its connection
    /// is kept once the body has ended, see [`Body`]). A request
    /// that a kept connection could not take (the upstream closed it while it was idle; hyper
    /// hands the request back unsent) goes on the next one, or a new one.
    pub(super) async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Body>, SendError> {
        let target = req.uri().clone();
        let host = self.host(&target);
        let headers = req.headers_mut();
        for (name, value) in self.headers.iter() {
            if !headers.contains_key(name) {
                headers.insert(name, value.clone());
            }
        }
        if let Some(host) = host {
            headers.entry(HOST).or_insert(host);
        }
        // Origin form: the connection is to the URL's host already.
        *req.uri_mut() = target
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        loop {
            let (mut conn, kept) = match self.pool.take() {
                Some(conn) => (conn, true),
                None => (self.pool.connect(&target).await?, false),
            };
            match conn.exchange(req).await {
                Ok(response) => {
                    let pool = self.pool.clone();
                    return Ok(response.map(|body| Body::new(body, pool, conn)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if kept => req = unsent,
                    // Handed back unsent by a new connection: it never left the gateway.
                    unsent => {
                        return Err(SendError {
                            unreached: unsent.is_some(),
                            why: chain(e.error()),
                        });
                    }
                },
            }
        }
    }

    /// How many connections are kept.
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.pool.kept()
    }

    /// The `Host` header for `url`: its host, and its port unless the scheme's own (as
    /// hyper-util's client sends it).
    fn host(&self, url: &Uri) -> Option<HeaderValue> {
        let authority = url.authority()?;
        if let Some((made_for, value)) = self.host.get()
            && made_for == authority
        {
            return Some(value.clone());
        }
        let default = match url.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let value = match authority.port_u16() {
            Some(port) if port != default => format!("{}:{port}", authority.host()),
            _ => authority.host().to_string(),
        };
        let value = HeaderValue::from_str(&value).ok()?;
        let _ = self.host.set((authority.clone(), value.clone()));
        Some(value)
    }
}

/// `e` and its sources, as one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    why
}

/// The TLS settings of an upstream's clients (rmcp's reqwest client and the lean one share
/// them): for an `https` upstream, the platform's certificate verifier over the process's crypto
/// provider, TLS 1.2 and 1.3, ALPN `http/1.1`, as reqwest's own. An `http` upstream never
/// makes a TLS connection (its URL is fixed and redirects are not followed), so its clients
/// trust no authority at all: nothing is read from the system for them, and a machine without
/// CA roots can still reach it. The verifier is built once per connection, for both clients.
pub(super) fn tls(https: bool) -> anyhow::Result<rustls::ClientConfig> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let versions = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match https {
        true => versions
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(rustls_platform_verifier::Verifier::new(
                provider,
            )?))
            .with_no_client_auth(),
        false => versions
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A resolver that answers every name with the checked addresses: a second lookup cannot move
/// the connection elsewhere (DNS rebinding). A URL with an IP address is not resolved.
#[derive(Clone)]
struct Checked(Arc<Vec<SocketAddr>>);

impl tower_service::Service<Name> for Checked {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(self.0.as_ref().clone().into_iter()))
    }
}

#[cfg(test)]
mod tests;
