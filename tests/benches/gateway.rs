//! `tools/call` latency and throughput: direct to an rmcp upstream vs. through the gateway.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p portcullis-tests --bench gateway`
//!
//! Both paths use the same rmcp client, the same upstream process and the same tool (`echo`), in
//! one run, and the figures are printed as ratios so machine speed cancels out. Two clients:
//! rmcp's default (a new connection for every call) and one that keeps connections alive, as
//! the Python SDK's and browsers' HTTP clients do. CPU per call is each process's user and system
//! time over the measured calls, read from `/proc`: on a machine whose cores the client, the
//! gateway and the upstream share, it is what bounds throughput.

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

async fn client(url: &str, key: Option<&str>, keep_alive: bool) -> Client {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .max_concurrent_requests(CONCURRENT * 2);
    if let Some(k) = key {
        cfg = cfg.auth_header(k.to_string());
    }
    let t = match keep_alive {
        true => StreamableHttpClientTransport::with_client(reqwest::Client::new(), cfg),
        false => StreamableHttpClientTransport::from_config(cfg),
    };
    Arc::new(ClientConfig::default().serve(t).await.expect("connect"))
}

/// CPU time a process has used so far (user and system), from `/proc/PID/stat`.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let per_sec = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_nanos(ticks * 1_000_000_000 / per_sec)
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
    /// CPU per call of each watched process, in the order given to [`run`].
    cpu: Vec<Duration>,
}

async fn run(c: &Client, tool: &str, concurrency: usize, watched: &[u32]) -> Figures {
    for _ in 0..WARMUP {
        call(c, tool).await;
    }
    let before: Vec<Duration> = watched.iter().map(|p| cpu(*p)).collect();
    let started = Instant::now();
    let mut lat = measure(c, tool, concurrency).await;
    let wall = started.elapsed();
    let calls = lat.len() as u32;
    let cpu = watched
        .iter()
        .zip(before)
        .map(|(p, b)| (cpu(*p) - b) / calls)
        .collect();
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        cpu,
    }
}

async fn measure(c: &Client, tool: &str, concurrency: usize) -> Vec<Duration> {
    if concurrency == 1 {
        let mut lat = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            lat.push(call(c, tool).await);
        }
        return lat;
    }
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
    lat
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let fx = Fixture::start("both").expect("fixture");
    // Every control on, limits included: a rate, a concurrency cap and a budget reserved in the
    // store on every call (none of them reached in the run).
    let limits = "limits:\n  - { match: \"key:*\", rate: 1000000/s, concurrency: 1000, budget: { units: 1000000000, per: month } }\n";
    let gw = Gateway::start_with(limits, &fixture_server("fixture", &fx.url)).expect("gateway");
    println!(
        "tools/call `echo`: direct to the rmcp upstream vs. through Portcullis (/mcp, federated)"
    );
    for (keep_alive, what) in [
        (
            false,
            "rmcp's default client: a new connection for every call",
        ),
        (true, "a client that keeps connections alive"),
    ] {
        let direct = client(&fx.url, None, keep_alive).await;
        let through = client(&gw.mcp(), Some(&gw.key), keep_alive).await;
        println!("\n{what}\n");
        println!(
            "{:>4}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>12}  {:>12}",
            "C",
            "direct p50",
            "gw p50",
            "added p50",
            "direct p99",
            "gw p99",
            "throughput",
            "gw CPU/call",
            "up CPU/call"
        );
        for c in [1, CONCURRENT] {
            let me = std::process::id();
            let d = run(&direct, "echo", c, &[fx.pid(), me]).await;
            let g = run(&through, "fixture__echo", c, &[gw.pid(), fx.pid(), me]).await;
            println!(
                "{:>4}  {:>8.3}ms  {:>8.3}ms  {:>8.3}ms  {:>8.3}ms  {:>8.3}ms  {:>9.2}x  {:>10.0}us  {:>10.0}us",
                c,
                ms(d.p50),
                ms(g.p50),
                ms(g.p50.saturating_sub(d.p50)),
                ms(d.p99),
                ms(g.p99),
                g.per_sec / d.per_sec,
                us(g.cpu[0]),
                us(d.cpu[0]),
            );
            println!(
                "      calls/s direct {:.0}, through gateway {:.0}; p50 ratio {:.2}, p99 ratio {:.2}\n      CPU/call through the gateway: upstream {:.0}us, client {:.0}us; direct: client {:.0}us",
                d.per_sec,
                g.per_sec,
                g.p50.as_secs_f64() / d.p50.as_secs_f64(),
                g.p99.as_secs_f64() / d.p99.as_secs_f64(),
                us(g.cpu[1]),
                us(g.cpu[2]),
                us(d.cpu[1]),
            );
        }
    }
}
