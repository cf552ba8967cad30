//! `tools/call` latency and throughput: direct to an rmcp upstream vs. through the gateway.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p portcullis-tests --bench gateway`
//!
//! Both paths use the same rmcp client, the same upstream process and the same tool (`echo`), in
//! one run, and the figures are printed as ratios so machine speed cancels out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::{Fixture, Gateway, fixture_server};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Map, json};

type Client = Arc<RunningService<RoleClient, ClientConfig>>;

const WARMUP: usize = 300;
const SEQUENTIAL: usize = 3_000;
const CONCURRENT: usize = 32;
const PER_TASK: usize = 300;

async fn client(url: &str, key: Option<&str>) -> Client {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .max_concurrent_requests(CONCURRENT * 2);
    if let Some(k) = key {
        cfg = cfg.auth_header(k.to_string());
    }
    let t = StreamableHttpClientTransport::from_config(cfg);
    Arc::new(ClientConfig::default().serve(t).await.expect("connect"))
}

async fn call(c: &Client, tool: &str) -> Duration {
    let mut args = Map::new();
    args.insert("text".into(), json!("benchmark payload"));
    let started = Instant::now();
    let r = c
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("call");
    assert_ne!(r.is_error, Some(true));
    started.elapsed()
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn figures(mut lat: Vec<Duration>, wall: Duration) -> Figures {
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
    }
}

async fn run(c: &Client, tool: &str, concurrency: usize) -> Figures {
    for _ in 0..WARMUP {
        call(c, tool).await;
    }
    if concurrency == 1 {
        let started = Instant::now();
        let mut lat = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            lat.push(call(c, tool).await);
        }
        return figures(lat, started.elapsed());
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let c = c.clone();
            let tool = tool.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(PER_TASK);
                for _ in 0..PER_TASK {
                    lat.push(call(&c, &tool).await);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    figures(lat, started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let fx = Fixture::start("both").expect("fixture");
    let gw = Gateway::start(&fixture_server("fixture", &fx.url)).expect("gateway");
    let direct = client(&fx.url, None).await;
    let through = client(&gw.mcp(), Some(&gw.key)).await;
    println!(
        "tools/call `echo`: direct to the rmcp upstream vs. through Portcullis (/mcp, federated)\n"
    );
    println!(
        "{:>4}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
        "C", "direct p50", "gw p50", "added p50", "direct p99", "gw p99", "throughput"
    );
    for c in [1, CONCURRENT] {
        let d = run(&direct, "echo", c).await;
        let g = run(&through, "fixture__echo", c).await;
        println!(
            "{:>4}  {:>8.3}ms  {:>8.3}ms  {:>8.3}ms  {:>8.3}ms  {:>8.3}ms  {:>9.2}x",
            c,
            ms(d.p50),
            ms(g.p50),
            ms(g.p50.saturating_sub(d.p50)),
            ms(d.p99),
            ms(g.p99),
            g.per_sec / d.per_sec
        );
        println!(
            "      calls/s direct {:.0}, through gateway {:.0}; p50 ratio {:.2}, p99 ratio {:.2}",
            d.per_sec,
            g.per_sec,
            g.p50.as_secs_f64() / d.p50.as_secs_f64(),
            g.p99.as_secs_f64() / d.p99.as_secs_f64()
        );
    }
}
