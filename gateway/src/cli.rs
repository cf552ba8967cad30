//! The command line: parsing, and handing each command to the module that runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::command::{EX_CONFIG, EX_NOINPUT, EX_SOFTWARE, load};
use crate::keys::command::KeysAction;
use crate::operator_cli::{ApprovalsAction, KillAction, ModeAction};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An MCP gateway that fails closed"
)]
struct Cli {
    /// Log lines on stderr as text, or as one JSON object per line (also PORTCULLIS_LOG_FORMAT).
    /// The level filter is PORTCULLIS_LOG, e.g. `info`, `debug`, `portcullis=debug,rmcp=warn`.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PORTCULLIS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Serve {
        /// The config file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Create the store's tables, or bring an older store's up to date, and exit (`serve` does
    /// the same before it starts; run this alone before a rolling upgrade of replicas).
    Migrate {
        /// The config file (YAML) naming the store.
        #[arg(long)]
        config: PathBuf,
    },
    /// Exit 0 when `--url` answers 200 within 3 s, 1 otherwise: a container's health check,
    /// as the image has no shell or HTTP client of its own.
    Health {
        /// e.g. `http://127.0.0.1:8080/readyz`
        #[arg(long)]
        url: String,
    },
    /// Write a starter config in the current directory, issue keys, and run it.
    Quickstart {
        /// Port for the MCP listener (the admin listener uses the next one). Default: the
        /// existing ./portcullis.yaml's, else 8080. Given, it moves a quickstart config's ports.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Print a shell completion script, e.g. `portcullis completions bash > /etc/bash_completion.d/portcullis`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Manage API keys in the store named by the config.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Engage, release or show kill switches (through the admin API).
    Kill {
        #[command(subcommand)]
        action: KillAction,
    },
    /// List, approve or deny held calls (through the admin API).
    Approvals {
        #[command(subcommand)]
        action: ApprovalsAction,
    },
    /// Show or switch the mode: enforce, read_only, shadow (through the admin API).
    Mode {
        #[command(subcommand)]
        action: ModeAction,
    },
    /// The CI gate: exit 1, listing each problem with file:line, unless every server is
    /// allowlisted, pinned, granted and rate-limited on its write tools, and no secret is inline.
    Check {
        /// The config file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Also print each server's readiness scores and gate.
        #[arg(long)]
        explain: bool,
    },
    /// Connect to the upstreams, show what changed in their allowlisted tools, and write the
    /// tool pins into the config.
    Pin {
        /// The config file (YAML); rewritten in place, comments kept.
        #[arg(long)]
        config: PathBuf,
        /// Pin `SERVER/TOOL` even though its definition carries instruction-like text, after
        /// reading it (repeatable).
        #[arg(long, value_name = "SERVER/TOOL")]
        confirm: Vec<String>,
    },
    /// The self-audit of a config (`--config FILE`), offline; or `verify` an audit log.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        #[command(flatten)]
        report: SelfAuditArgs,
    },
}

/// `portcullis audit --config FILE`: score a config against the readiness dimensions without
/// a running gateway (checks that need one are marked static-only).
#[derive(clap::Args)]
struct SelfAuditArgs {
    /// The config file to audit.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "md", value_parser = ["json", "md", "html"])]
    format: String,
    /// Exit 1 when a dimension is below this: `pass` (every dimension green) or `partial`
    /// (no dimension red).
    #[arg(long, value_parser = ["pass", "partial"])]
    fail_under: Option<String>,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check an audit file's hash chains; exits 1 naming the first broken link. A file sink's
    /// path is followed through the files rotated away from it (`<file>.<time>`), oldest first;
    /// several files (rotated by another tool) are checked as one log, in the order given.
    Verify {
        /// The JSON-lines audit file (a file sink, or an `/admin/audit` export), or several,
        /// oldest first.
        #[arg(required = true)]
        file: Vec<PathBuf>,
        /// The input may begin in the middle of a chain (an export made after the store's
        /// retention removed older events); what it continues is reported, not refused.
        #[arg(long)]
        continued: bool,
    },
}

/// The runtime's workers that serve: `TOKIO_WORKER_THREADS` when set (one or more), else one
/// per core the process may use but one, one at least. The runtime has one worker more, held in
/// reserve ([`audit::Reserve`]): a caller writes its audit event to a file itself, on its
/// worker (`audit::inline`), and were that write to hang (a frozen or failing disk), the reserve
/// is woken to run the timers that refuse the other calls at the recording cap. Asleep, it costs
/// nothing: workers that serve wake each other, and on two cores one serving worker spends about
/// half the CPU per call that two do.
pub(crate) fn workers(set: Option<&str>, cores: usize) -> Result<usize, String> {
    match set {
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
            _ => Err(format!(
                "TOKIO_WORKER_THREADS is {text:?}; fix: set it to a whole number of worker threads that serve, 1 to {MAX_WORKERS} (one more is held in reserve for a stalled audit write), or unset it for one per core but one"
            )),
        },
        None => Ok(cores.saturating_sub(1).clamp(1, MAX_WORKERS)),
    }
}

/// Most worker threads that serve.
const MAX_WORKERS: usize = 4096;

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Only the commands that serve calls take the setting; the others need no more than the
    // default (and are not stopped by a value meant for the gateway).
    let serves = matches!(
        cli.command,
        Command::Serve { .. } | Command::Quickstart { .. }
    );
    let set = std::env::var_os("TOKIO_WORKER_THREADS").filter(|_| serves);
    let set = match set.map(std::ffi::OsString::into_string).transpose() {
        Ok(set) => set,
        Err(raw) => {
            eprintln!(
                "portcullis: TOKIO_WORKER_THREADS is {raw:?}, not text; fix: set it to a whole number of worker threads, 1 or more, or unset it"
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    let workers = match workers(set.as_deref(), cores) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.saturating_add(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    // Declared after the runtime, so dropped before it: its shutdown waits for every worker.
    let reserve = audit::EndOnDrop(audit::Reserve::new());
    if serves {
        reserve.0.hold(runtime.handle());
        crate::reserve::set(reserve.0.clone());
    }
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => match load(&config) {
                Ok(reg) => crate::serve::run(reg, &config, None, None).await,
                Err(code) => code,
            },
            Command::Migrate { config } => migrate(&config).await,
            Command::Health { url } => health(&url).await,
            Command::Quickstart { port } => crate::quickstart::quickstart(port).await,
            Command::Completions { shell } => {
                let mut out = std::io::stdout().lock();
                clap_complete::generate(
                    shell,
                    &mut <Cli as clap::CommandFactory>::command(),
                    "portcullis",
                    &mut out,
                );
                ExitCode::SUCCESS
            }
            Command::Keys { action } => crate::keys::command::run(action).await,
            Command::Check { config, explain } => crate::pin::check(&config, explain),
            Command::Pin { config, confirm } => crate::pin::pin(&config, &confirm).await,
            Command::Kill { action } => crate::operator_cli::kill(action).await,
            Command::Approvals { action } => crate::operator_cli::approvals(action).await,
            Command::Mode { action } => crate::operator_cli::mode(action).await,
            Command::Audit {
                action: Some(AuditAction::Verify { file, continued }),
                ..
            } => verify_audit(&file, continued),
            Command::Audit {
                action: None,
                report,
            } => self_audit(report).await,
        }
    })
}

/// `portcullis health --url URL`: one GET, 200 or not.
async fn health(url: &str) -> ExitCode {
    // Straight to the address given: never through a proxy from the environment.
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            eprintln!("portcullis: {url} answered {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("portcullis: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portcullis migrate`: open the store, which brings its schema up to date, and say so.
async fn migrate(config: &std::path::Path) -> ExitCode {
    let reg = match load(config) {
        Ok(reg) => reg,
        Err(code) => return code,
    };
    match crate::command::open_store(&reg).await {
        Ok(store) => {
            println!(
                "store `{}` ({}) is at schema version {}",
                reg.settings.store,
                store.backend().as_str(),
                store::SCHEMA_VERSION
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colour only for a person at a terminal; a log file or collector gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // One object per line: timestamp, level, target, message and the event's fields.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

async fn self_audit(args: SelfAuditArgs) -> ExitCode {
    use crate::selfaudit::Status;
    let Some(config) = args.config else {
        eprintln!(
            "portcullis: give `--config FILE` for the self-audit, or `portcullis audit verify FILE` to check an audit log"
        );
        return ExitCode::from(EX_CONFIG);
    };
    let reg = match load(&config) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let report = crate::selfaudit::report(&reg, None).await;
    let text = match args.format.as_str() {
        "json" => match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("portcullis: cannot render the report: {e}");
                return ExitCode::from(EX_SOFTWARE);
            }
        },
        "html" => crate::selfaudit::html(&report),
        _ => crate::selfaudit::markdown(&report),
    };
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return ExitCode::from(EX_SOFTWARE);
        }
    }
    let floor = match args.fail_under.as_deref() {
        Some("pass") => Status::Pass,
        Some(_) => Status::Partial,
        None => return ExitCode::SUCCESS,
    };
    let below: Vec<String> = report
        .dimensions
        .iter()
        .filter(|d| d.status > floor)
        .map(|d| format!("{:02} {} ({})", d.number, d.title, d.color))
        .collect();
    match below.is_empty() {
        true => ExitCode::SUCCESS,
        false => {
            eprintln!(
                "portcullis: {} dimension(s) below `{}`: {}",
                below.len(),
                args.fail_under.unwrap_or_default(),
                below.join(", ")
            );
            ExitCode::from(1)
        }
    }
}

fn verify_audit(given: &[PathBuf], continued: bool) -> ExitCode {
    use audit::verify::{Verdict, Verifier};
    // Several files as given; a rotated file alone; or a sink's current file after every file
    // rotated away from it.
    let files = match given {
        [path] if !audit::file::is_rotated(path) => {
            let mut f = audit::file::rotated_files(path);
            f.push(path.clone());
            f
        }
        _ => given.to_vec(),
    };
    // Only when asked may the input begin in the middle of a chain: otherwise a removed head
    // (older files deleted by `keep`, archived, or cut) is a broken log.
    let mut v = match continued {
        true => Verifier::continuing(),
        false => Verifier::default(),
    };
    for file in &files {
        let input = match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("portcullis: cannot open `{}`: {e}", file.display());
                return ExitCode::from(EX_NOINPUT);
            }
        };
        match v.file(std::io::BufReader::new(input)) {
            Ok(None) => {}
            Ok(Some(Verdict::Broken { line, id, why })) => {
                let head = !continued && why.contains("earlier events are missing");
                println!(
                    "broken at {}:{line}{}: {why}{}",
                    file.display(),
                    id.map(|i| format!(" (event {i})")).unwrap_or_default(),
                    match head {
                        true =>
                            " (if older files were deleted by `keep` or archived, check what is left with --continued)",
                        false => "",
                    }
                );
                return ExitCode::from(1);
            }
            Ok(Some(Verdict::Intact { .. })) => {}
            Err(e) => {
                eprintln!("portcullis: cannot read `{}`: {e}", file.display());
                return ExitCode::from(EX_NOINPUT);
            }
        }
    }
    if let Verdict::Intact {
        events,
        chains,
        last,
        anchor,
        unclosed,
    } = v.finish()
    {
        let across = match files.len() {
            1 => String::new(),
            n => format!(
                " across {n} files (oldest {})",
                files
                    .first()
                    .map_or(String::new(), |f| f.display().to_string())
            ),
        };
        println!(
            "intact: {events} events in {chains} chain(s){across}; last hash {}",
            last.as_deref().unwrap_or("-")
        );
        for c in unclosed {
            println!(
                "chain {c} has no audit.stop: its process is running or crashed, or its last events were removed"
            );
        }
        if let Some(a) = anchor {
            println!(
                "the log begins by linking to {a}, an event not in it: compare that with the last hash of what came before (older files deleted by `keep` or archived, or events past the store's retention)"
            );
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests;
