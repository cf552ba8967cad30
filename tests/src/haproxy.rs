//! A real load balancer in front of gateway replicas: Debian's `haproxy` (installed by
//! `scripts/test.sh`), round-robin over every request, no stickiness, health-checking each
//! replica's `/readyz` and sending a request that could not connect to a replica to another
//! (never one a replica may have started: a tool call is not replayed).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::Proc;

/// One HAProxy process.
pub struct Haproxy {
    _proc: Proc,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// A loopback port held until the balancer starts, for a listener whose address must be known
/// before it starts: while held, no other process (tests run side by side) can be given it.
pub struct HeldPort {
    listener: std::net::TcpListener,
}

impl HeldPort {
    pub fn new() -> Result<HeldPort> {
        Ok(HeldPort {
            listener: std::net::TcpListener::bind("127.0.0.1:0")?,
        })
    }

    pub fn port(&self) -> Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }
}

impl Haproxy {
    /// Balance `held`'s port over `backends` (`http://127.0.0.1:PORT` each). The port is let
    /// go only now, and what answers on it afterwards is checked to be this balancer.
    pub fn start(held: HeldPort, backends: &[&str]) -> Result<Haproxy> {
        let dir = tempfile::tempdir()?;
        let port = held.port()?;
        let host = format!("127.0.0.1:{port}");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server g{i} {} check\n", b.trim_start_matches("http://")))
            .collect();
        let config = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch 1\n  retry-on conn-failure\n\
             frontend mcp\n  bind {host}\n  monitor-uri /haproxy-alive\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk\n  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {host}\n  default-server inter 300ms fall 2 rise 2\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()?;
        if !check.status.success() {
            bail!(
                "haproxy config refused: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        drop(held);
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log"))?)
            .spawn()?;
        let proc = Proc::new(child);
        for _ in 0..100 {
            // This balancer, not another process that took the port meanwhile.
            if crate::http_status(&host, "/haproxy-alive") == Some(200) {
                return Ok(Haproxy {
                    _proc: proc,
                    _dir: dir,
                    base: format!("http://{host}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("haproxy did not start listening on {host}")
    }

    /// The federated MCP endpoint through the balancer.
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }
}
