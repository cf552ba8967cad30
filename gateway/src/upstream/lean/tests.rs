//! The lean client against a local TLS endpoint whose certificate, for `localhost`, is signed by
//! a certificate authority made for these tests (`test-*.pem`, `test-localhost.key`: test data,
//! trusted nowhere else).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{LeanHttp, SendError, tls};

const CA: &[u8] = include_bytes!("test-ca.pem");
const LEAF: &[u8] = include_bytes!("test-localhost.pem");
const KEY: &[u8] = include_bytes!("test-localhost.key");

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS endpoint on 127.0.0.1 answering every request `200 ok`; its address.
async fn endpoint() -> SocketAddr {
    let chain = vec![CertificateDer::from_pem_slice(LEAF).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let ok = hyper::service::service_fn(|_| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), ok)
                    .await;
            });
        }
    });
    addr
}

/// A client trusting the test authority only, connecting to `addr` whatever the name.
fn trusting(addr: SocketAddr) -> LeanHttp {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(CA).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    LeanHttp::new(vec![addr], http::HeaderMap::new(), tls).unwrap()
}

async fn get(lean: &LeanHttp, url: &str) -> Result<Bytes, SendError> {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = lean.send(req).await?;
    assert_eq!(response.status(), 200);
    Ok(response.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn https_reaches_a_trusted_certificate_for_the_urls_name() {
    let addr = endpoint().await;
    let lean = trusting(addr);
    let body = get(&lean, &format!("https://localhost:{}/mcp", addr.port()))
        .await
        .unwrap();
    assert_eq!(body, "ok");
}

/// A name that resolves nowhere still reaches the checked address (no second lookup), and the
/// certificate is verified against the URL's name, not the address: `localhost`'s certificate
/// does not pass for another name.
#[tokio::test]
async fn a_name_goes_to_the_checked_address_and_the_certificate_must_be_for_that_name() {
    let addr = endpoint().await;
    let lean = trusting(addr);
    let e = get(
        &lean,
        &format!("https://rebind.invalid:{}/mcp", addr.port()),
    )
    .await
    .unwrap_err();
    assert!(e.unreached, "{}", e.why);
    assert!(
        e.why.contains("not valid for name \"rebind.invalid\""),
        "{}",
        e.why
    );
}

/// A TLS connection made with the settings `tls(https)` gives, to a server whose authority they
/// do not trust, is refused before anything is sent.
async fn refused_by_an_unknown_issuer(https: bool) {
    let addr = endpoint().await;
    let lean = LeanHttp::new(vec![addr], http::HeaderMap::new(), tls(https).unwrap()).unwrap();
    let e = get(&lean, &format!("https://localhost:{}/mcp", addr.port()))
        .await
        .unwrap_err();
    assert!(e.unreached, "{}", e.why);
    assert!(e.why.contains("UnknownIssuer"), "{}", e.why);
}

/// The production client verifies with the platform's roots: the test authority is not among
/// them, so nothing is sent.
#[tokio::test]
async fn a_certificate_from_an_authority_the_platform_does_not_trust_is_refused() {
    refused_by_an_unknown_issuer(true).await;
}

/// The settings of an `http` upstream's clients (which trust no authority) refuse a TLS
/// connection, were they ever asked for one.
#[tokio::test]
async fn an_http_upstreams_settings_refuse_a_tls_connection() {
    refused_by_an_unknown_issuer(false).await;
}
