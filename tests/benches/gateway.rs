//! `tools/call` latency and throughput: direct to an upstream vs. through the gateway, for two
//! upstreams: the rmcp fixture and one written with the official Python SDK (`MCPServer`), as
//! most servers in the wild are; each with the client speaking the initialize era (a session,
//! SSE answers) and then 2026-07-28 (no session, JSON answers), the revision the gateway speaks
//! to its upstreams, so the upstream's cost is compared at the same revision too.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p portcullis-tests --bench gateway`
//!
//! Both paths use the same client (rmcp's, on a reqwest client that keeps connections alive, as
//! the SDKs' and browsers' HTTP clients do), the same upstream process and the same tool (`echo`),
//! in one run, and the figures are printed as ratios so machine speed cancels out. CPU per call
//! is each process's user and system time over the measured calls, read from `/proc`: on a
//! machine whose cores the client, the gateway and the upstream share, it is what bounds
//! throughput. Connections closed per call counts the TCP connections to the upstream's port that
//! ended during the run (TIME-WAIT), the sign of a connection not reused. Bytes written to disk
//! per call are the gateway's `write_bytes` (`/proc/PID/io`): what its audit file and store cost
//! the disk, page by page, beside the audit file's own growth.
//!
//! For profiling: `BENCH_PROFILE=rmcp,32` (upstream `rmcp` or `python`, a concurrency, and
//! then, in any order, `2025` for the initialize era and `direct` for the upstream alone)
//! only loads that case for 20 seconds, printing the processes' pids first (for `perf record
//! -p`), and at the end CPU and disk bytes per call and the latency's p50 and p99;
//! `BENCH_NO_BUDGET` set (to anything) runs without the budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::{Fixture, Gateway, fixture_server, python};
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt as _, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, json};

type Client = Arc<RunningService<RoleClient, ClientConfig>>;

const WARMUP: usize = 300;
const SEQUENTIAL: usize = 3_000;
const CONCURRENT: usize = 32;
const PER_TASK: usize = 300;

/// A client of `url`, speaking 2026-07-28 (`server/discover`, no session) when `modern`, as the
/// gateway speaks to its upstreams, else the initialize era (2025-11-25, a session).
async fn client(url: &str, key: Option<&str>, modern: bool) -> Client {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .max_concurrent_requests(CONCURRENT * 2);
    if let Some(k) = key {
        cfg = cfg.auth_header(k.to_string());
    }
    let t = StreamableHttpClientTransport::with_client(reqwest::Client::new(), cfg);
    let lifecycle = match modern {
        true => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        false => ClientLifecycleMode::Initialize,
    };
    Arc::new(
        ClientConfig::default()
            .serve_with_lifecycle(t, lifecycle)
            .await
            .expect("connect"),
    )
}

/// TCP connections to or from `port` in TIME-WAIT now (each one a connection that ended in the
/// last minute), from `/proc/net/tcp` and `tcp6`.
fn closed(port: u16) -> usize {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "06" && (f[1].ends_with(&hex) || f[2].ends_with(&hex))
        })
        .count()
}

/// The Python SDK upstream: its process and URL.
fn python_upstream() -> (std::process::Child, String, u32) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(python())
        .arg(portcullis_tests::workspace().join("tests/python/bench_upstream.py"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python upstream");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("python upstream line");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("python upstream url")
        .to_string();
    let pid = child.id();
    (child, url, pid)
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
    /// Connections to the upstream's port that ended, per call.
    closed: f64,
    /// Bytes the audit file grew by, per call (through the gateway only).
    audit_bytes: f64,
    /// Bytes the first watched process sent towards the disk, per call (see [`disk`]).
    disk_bytes: f64,
}

/// Bytes `pid` has caused to be written to storage so far (`write_bytes` in `/proc/PID/io`:
/// page-cache pages it dirtied, whichever file or thread): the audit file, the store's WAL and
/// its checkpoints into the database file. A page dirtied again before it was written back
/// counts once. 0 where the kernel keeps no such count.
fn disk(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The size of `path` now (0 when there is none).
fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Calls spread evenly at a given rate: the `k`th call starts no earlier than `k / rate` after
/// the first, whichever task makes it.
#[derive(Clone)]
struct Pace {
    start: Instant,
    gap: Duration,
    next: Arc<std::sync::atomic::AtomicU32>,
}

impl Pace {
    fn new(per_sec: f64) -> Pace {
        Pace {
            start: Instant::now(),
            gap: Duration::from_secs_f64(1.0 / per_sec),
            next: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        }
    }

    /// Wait for the next call's turn. The runtime's timers tick in milliseconds, coarser than
    /// the gaps between calls, so the wait is a thread's sleep, off the runtime's threads.
    async fn turn(&self) {
        let k = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wait = (self.start + self.gap * k).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tokio::task::spawn_blocking(move || std::thread::sleep(wait))
                .await
                .expect("pace");
        }
    }
}

/// Warm up, then measure `concurrency` callers of `tool`, the calls spread at `per_sec` when
/// given; `watched` are the processes whose CPU per call is reported.
async fn run(
    c: &Client,
    tool: &str,
    concurrency: usize,
    watched: &[u32],
    port: u16,
    audit: &std::path::Path,
    per_sec: Option<f64>,
) -> Figures {
    for _ in 0..WARMUP {
        call(c, tool).await;
    }
    let before: Vec<Duration> = watched.iter().map(|p| cpu(*p)).collect();
    let closed_before = closed(port);
    let audit_before = size(audit);
    let disk_before = disk(watched[0]);
    let started = Instant::now();
    let mut lat = measure(c, tool, concurrency, per_sec.map(Pace::new)).await;
    let wall = started.elapsed();
    let closed_after = closed(port);
    let audit_bytes = size(audit).saturating_sub(audit_before);
    let disk_bytes = disk(watched[0]).saturating_sub(disk_before);
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
        closed: closed_after.saturating_sub(closed_before) as f64 / f64::from(calls),
        audit_bytes: audit_bytes as f64 / f64::from(calls),
        disk_bytes: disk_bytes as f64 / f64::from(calls),
    }
}

async fn measure(c: &Client, tool: &str, concurrency: usize, pace: Option<Pace>) -> Vec<Duration> {
    if concurrency == 1 {
        let mut lat = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            if let Some(p) = &pace {
                p.turn().await;
            }
            lat.push(call(c, tool).await);
        }
        return lat;
    }
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let c = c.clone();
            let tool = tool.to_string();
            let pace = pace.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(PER_TASK);
                for _ in 0..PER_TASK {
                    if let Some(p) = &pace {
                        p.turn().await;
                    }
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

fn port_of(url: &str) -> u16 {
    let rest = url.split("://").nth(1).expect("url");
    let host = rest.split('/').next().expect("host");
    host.rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port")
}

#[tokio::main]
async fn main() {
    let fx = Fixture::start("both").expect("fixture");
    let (mut py, py_url, py_pid) = python_upstream();
    // Every control on, limits included: a rate, a concurrency cap and a budget reserved in the
    // store on every call (none of them reached in the run).
    // `BENCH_NO_BUDGET` set leaves the budget out, to see what its reservation costs.
    let budget = match std::env::var_os("BENCH_NO_BUDGET") {
        Some(_) => "",
        None => ", budget: { units: 1000000000, per: month }",
    };
    let limits = format!(
        "limits:\n  - {{ match: \"key:*\", rate: 1000000/s, concurrency: 1000{budget} }}\n"
    );
    let servers = format!(
        "{}  py:\n    url: {py_url}\n    allow_private: true\n    timeout: 5s\n    tools:\n      echo: {{ class: read }}\n",
        fixture_server("fixture", &fx.url)
    );
    let gw = Gateway::start_with(&limits, &servers).expect("gateway");
    // Idle: started, upstreams connected, no client yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss(gw.pid());
    if let Ok(what) = std::env::var("BENCH_PROFILE") {
        println!("RSS idle {:.1} MB", mb(idle_rss));
        profile(&what, &gw, (&fx.url, fx.pid()), (&py_url, py_pid)).await;
        let _ = py.kill();
        let _ = py.wait();
        return;
    }
    println!("tools/call `echo` through Portcullis (/mcp, federated, every control on) vs. direct");
    println!("client: rmcp on a reqwest client that keeps connections alive");
    for (what, url, tool, pid) in [
        (
            "the rmcp upstream",
            fx.url.clone(),
            "fixture__echo",
            fx.pid(),
        ),
        (
            "the Python SDK upstream (MCPServer)",
            py_url.clone(),
            "py__echo",
            py_pid,
        ),
    ] {
        // The client speaks each era to both paths; the gateway speaks 2026-07-28 upstream.
        for (modern, era) in [
            (false, "2025-11-25: initialize, a session, SSE answers"),
            (
                true,
                "2026-07-28: server/discover, no session, JSON answers",
            ),
        ] {
            let port = port_of(&url);
            let direct = client(&url, None, modern).await;
            let through = client(&gw.mcp(), Some(&gw.key), modern).await;
            println!("\n{what}, the client speaking {era}\n");
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
                let audit = gw.audit_file();
                let d = run(&direct, "echo", c, &[pid, me], port, &audit, None).await;
                let g = run(&through, tool, c, &[gw.pid(), pid, me], port, &audit, None).await;
                // The upstream's CPU per call depends on how often calls come (a runtime that
                // idles between calls spends more waking up for each): direct again at the
                // gateway's rate separates the gateway's own effect on the upstream from that.
                let paced = run(&direct, "echo", c, &[pid], port, &audit, Some(g.per_sec)).await;
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
                    "      calls/s direct {:.0}, through gateway {:.0}; p50 ratio {:.2}, p99 ratio {:.2}\n      CPU/call through the gateway: upstream {:.0}us ({:.2}x direct), client {:.0}us; direct: client {:.0}us\n      upstream connections closed per call: direct {:.2}, through the gateway {:.2}; bytes per call: audit file {:.0}, written by the gateway to disk {:.0}",
                    d.per_sec,
                    g.per_sec,
                    g.p50.as_secs_f64() / d.p50.as_secs_f64(),
                    g.p99.as_secs_f64() / d.p99.as_secs_f64(),
                    us(g.cpu[1]),
                    g.cpu[1].as_secs_f64() / d.cpu[0].as_secs_f64(),
                    us(g.cpu[2]),
                    us(d.cpu[1]),
                    d.closed,
                    g.closed,
                    g.audit_bytes,
                    g.disk_bytes,
                );
                println!(
                    "      direct at the gateway's rate ({:.0} calls/s): upstream CPU/call {:.0}us; through the gateway {:.2}x that",
                    paced.per_sec,
                    us(paced.cpu[0]),
                    g.cpu[1].as_secs_f64() / paced.cpu[0].as_secs_f64(),
                );
            }
        }
    }

    // Memory: idle, and with 1,000 stateful sessions open.
    let before = rss(gw.pid());
    open_sessions(&gw.mcp(), &gw.key, SESSIONS).await;
    let with_sessions = rss(gw.pid());
    println!(
        "\nRSS: idle {:.1} MB; after the runs {:.1} MB; with {SESSIONS} more sessions open {:.1} MB",
        mb(idle_rss),
        mb(before),
        mb(with_sessions)
    );

    // A warm federated tools/list over ten upstreams (one fixture process, ten servers).
    let ten: String = (0..10)
        .map(|i| fixture_server(&format!("f{i}"), &fx.url))
        .collect();
    let gw10 = Gateway::start_with("", &ten).expect("gateway with ten upstreams");
    let lister = client(&gw10.mcp(), Some(&gw10.key), false).await;
    let mut lat = Vec::with_capacity(LISTS);
    let mut tools = 0;
    for i in 0..(LISTS + 20) {
        let started = Instant::now();
        let listed = lister.list_all_tools().await.expect("tools/list");
        if i >= 20 {
            lat.push(started.elapsed());
        }
        tools = listed.len();
    }
    lat.sort();
    println!(
        "federated tools/list over 10 upstreams ({tools} tools, warm, {LISTS} lists): p50 {:.3}ms, p99 {:.3}ms",
        ms(lat[lat.len() / 2]),
        ms(lat[(lat.len() - 1) * 99 / 100]),
    );
    let _ = py.kill();
    let _ = py.wait();
}

/// `BENCH_PROFILE=<rmcp|python>,<C>[,2025][,direct]`: only load the gateway in front of one
/// upstream (or, with `direct`, the upstream itself) at concurrency C (the client speaking
/// 2026-07-28, or 2025-11-25 with `2025`) for 20 seconds, the gateway's and the upstream's pids
/// printed first, so a profiler can watch them (`perf record -p`).
async fn profile(what: &str, gw: &Gateway, up: (&str, u32), py: (&str, u32)) {
    let mut parts = what.split(',');
    let (upstream, c) = (parts.next().unwrap_or("rmcp"), parts.next().unwrap_or("32"));
    let flags: Vec<&str> = parts.collect();
    let modern = !flags.contains(&"2025");
    let direct = flags.contains(&"direct");
    let c: usize = c.parse().expect("BENCH_PROFILE concurrency");
    let ((url, pid), tool) = match upstream {
        "python" => (py, "py__echo"),
        _ => (up, "fixture__echo"),
    };
    let (through, tool) = match direct {
        true => (client(url, None, modern).await, "echo"),
        false => (client(&gw.mcp(), Some(&gw.key), modern).await, tool),
    };
    for _ in 0..WARMUP {
        call(&through, tool).await;
    }
    println!("gateway pid {} upstream pid {pid}", gw.pid());
    let started = Instant::now();
    let (gw_cpu, up_cpu, gw_disk) = (cpu(gw.pid()), cpu(pid), disk(gw.pid()));
    let mut lat = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        lat.extend(measure(&through, tool, c, None).await);
    }
    let secs = started.elapsed().as_secs_f64();
    let calls = lat.len();
    let per_call = |d: Duration| us(d) / calls as f64;
    lat.sort();
    let at = |q: f64| ms(lat[((lat.len() as f64 - 1.0) * q) as usize]);
    println!(
        "{calls} calls in {secs:.1}s: {:.0} calls/s; CPU per call: gateway {:.0}us, upstream {:.0}us; the gateway wrote {:.0} bytes per call to disk; p50 {:.3}ms, p99 {:.3}ms",
        calls as f64 / secs,
        per_call(cpu(gw.pid()) - gw_cpu),
        per_call(cpu(pid) - up_cpu),
        disk(gw.pid()).saturating_sub(gw_disk) as f64 / calls as f64,
        at(0.50),
        at(0.99),
    );
}

/// Sessions opened for the memory figure.
const SESSIONS: usize = 1_000;
/// Lists measured for the federated `tools/list` figure.
const LISTS: usize = 200;

/// Resident memory of a process, in bytes (`VmRSS` in `/proc/PID/status`).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Open `n` stateful sessions (`initialize`, then `notifications/initialized`) and leave them
/// open, eight at a time.
async fn open_sessions(url: &str, key: &str, n: usize) {
    let http = reqwest::Client::new();
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "bench", "version": "1" } }
    });
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let opened = chunk.iter().map(|_| {
            let http = http.clone();
            let init = init.clone();
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(key)
                    .header("accept", "application/json, text/event-stream")
                    .json(&init)
                    .send()
                    .await
                    .expect("initialize");
                assert!(r.status().is_success(), "initialize: {}", r.status());
                let sid = r.headers()["mcp-session-id"]
                    .to_str()
                    .expect("session id")
                    .to_string();
                let _ = r.bytes().await;
                let done = http
                    .post(url)
                    .bearer_auth(key)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-session-id", &sid)
                    .header("mcp-protocol-version", "2025-11-25")
                    .json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
                    .send()
                    .await
                    .expect("initialized");
                assert!(done.status().is_success(), "initialized: {}", done.status());
            }
        });
        futures::future::join_all(opened).await;
    }
}
