//! A real PostgreSQL server for the tests, started from Debian's `postgresql` package (which
//! `scripts/test.sh` installs): its own data directory, a loopback port, password
//! authentication, stopped when the handle drops.
//!
//! PostgreSQL refuses to run as root; as root, its commands run as the `postgres` user the
//! package creates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The user every test connects as.
pub const USER: &str = "portcullis";

/// One PostgreSQL server.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    /// The password of [`USER`].
    pub password: String,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the newest version installed.
fn bindir() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian package `postgresql`; scripts/test.sh installs it)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when this process is root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Postgres {
    /// Create a cluster in a temporary directory and start it.
    pub fn start() -> Result<Postgres> {
        let bin = bindir()?;
        let dir = tempfile::tempdir()?;
        let password = format!("pw-{}", std::process::id());
        std::fs::write(dir.path().join("pwfile"), &password)?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            )?;
        }
        let mut init = as_owner(&bin.join("initdb"));
        init.arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pwfile").display()));
        run(init, "initdb")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Postgres {
            dir,
            bin,
            port,
            password,
        };
        pg.resume()?;
        Ok(pg)
    }

    /// Start the server (again, after [`Postgres::stop`]).
    pub fn resume(&self) -> Result<()> {
        let mut c = as_owner(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                self.port,
                self.dir.path().display()
            ))
            .arg("start");
        run(c, "pg_ctl start")
    }

    /// Stop the server now (connections are cut).
    pub fn stop(&self) -> Result<()> {
        let mut c = as_owner(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        run(c, "pg_ctl stop")
    }

    /// A file holding the password, for `store_password: file:…`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("pwfile")
    }

    /// The URL of database `db`, without the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Create a database; its URL.
    pub fn database(&self, db: &str) -> Result<String> {
        let out = Command::new("psql")
            .arg(self.url("postgres"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE \"{db}\""))
            .env("PGPASSWORD", &self.password)
            .output()
            .context("psql")?;
        if !out.status.success() {
            bail!("CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(self.url(db))
    }

    /// The config lines of a store on database `db` (created here).
    pub fn store_config(&self, db: &str) -> Result<String> {
        Ok(format!(
            "store: {}\nstore_password: file:{}\n",
            self.database(db)?,
            self.password_file().display()
        ))
    }

    /// Wait until the server accepts connections again.
    pub fn wait_up(&self) -> Result<()> {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("PostgreSQL did not come back")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
