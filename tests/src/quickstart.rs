//! `portcullis quickstart` as a user runs it, on two adjacent free ports.
//!
//! The quickstart listens on `--port` and the next port. A port found free a moment ago can be
//! taken by another test's connection before the gateway binds it; the quickstart then exits
//! having written nothing, and this harness tries again on another pair.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::bin;

/// A running quickstart, killed on drop.
pub struct Quickstart {
    child: Child,
    /// The MCP port (the admin listener is on the next one).
    pub port: u16,
    /// Every line printed up to and including the banner's last line.
    pub banner: Vec<String>,
    /// The client key the banner printed.
    pub client: String,
    /// The admin key the banner printed.
    pub admin_key: String,
    /// The admin listener's base URL, e.g. `http://127.0.0.1:8081`.
    pub admin: String,
    /// Everything the gateway wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two adjacent ports free at this moment.
pub fn free_pair() -> u16 {
    for _ in 0..200 {
        let Ok(first) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free ports on 127.0.0.1");
}

/// Run `portcullis quickstart --port P` in `dir` with `envs` until its banner is printed.
pub fn start(dir: &Path, envs: &[(&str, &str)]) -> Quickstart {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_pair();
        match attempt(dir, port, envs) {
            Ok(q) => return q,
            Err(why) if why.contains("cannot listen") => last = why,
            Err(why) => panic!("quickstart did not start: {why}"),
        }
    }
    panic!("quickstart could not bind any port pair: {last}");
}

fn attempt(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Result<Quickstart, String> {
    let mut child = Command::new(bin("portcullis"))
        .args(["quickstart", "--port", &port.to_string()])
        .current_dir(dir)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(mut err) = child.stderr.take() {
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let mut banner = Vec::new();
    let (mut client, mut admin_key) = (None, None);
    let mut done = false;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(k) = line.trim().strip_prefix("Client key:") {
            client = Some(k.trim().to_string());
        }
        if let Some(k) = line.trim().strip_prefix("Admin key:") {
            admin_key = k.split_whitespace().next().map(str::to_string);
        }
        let last = line.contains("--method tools/list");
        banner.push(line);
        if last {
            done = true;
            break;
        }
    }
    // Keep draining so the gateway's stdout stays open.
    std::thread::spawn(move || for _ in lines {});
    let (Some(client), Some(admin_key), true) = (client, admin_key, done) else {
        let _ = child.wait();
        // Let the stderr reader catch up with the exited process.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
        let _ = child.kill();
        return Err(format!("stdout: {banner:?}\nstderr: {err}"));
    };
    Ok(Quickstart {
        child,
        port,
        banner,
        client,
        admin_key,
        admin: format!("http://127.0.0.1:{}", port + 1),
        stderr,
    })
}
