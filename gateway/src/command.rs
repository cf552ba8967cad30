//! What every command shares: sysexits exit codes, loading the config, opening the store and
//! the audit log as a command-line process writes them.
//!
//! Exit codes follow sysexits: 64 for bad config or usage, 69 when the store cannot be opened,
//! 70 for internal errors.

use std::process::ExitCode;

use store::Store;

/// Invalid config or usage.
pub(crate) const EX_CONFIG: u8 = 64;
/// An input file could not be opened.
pub(crate) const EX_NOINPUT: u8 = 66;
/// A required service (the store) is unavailable.
pub(crate) const EX_UNAVAILABLE: u8 = 69;
/// Internal software error.
pub(crate) const EX_SOFTWARE: u8 = 70;

/// The audit log as a command-line process writes it: the config's sinks, its own chain. It
/// never rotates a file: that is the running gateway's, which it may be writing at this moment.
pub(crate) async fn cli_audit(
    reg: &registry::Registry,
    store: &Store,
) -> Result<audit::Audit, ExitCode> {
    let mut settings = reg.settings.audit.clone();
    for s in &mut settings.sinks {
        if let registry::SinkKind::File { rotate, .. } = &mut s.kind {
            *rotate = registry::Rotation::OFF;
        }
    }
    audit::Audit::open(&settings, store, "keys", &reg.digest)
        .await
        .map_err(|e| {
            eprintln!("portcullis: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        })
}

pub(crate) fn cli_operator() -> audit::Who {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    audit::Who::named(format!("cli:{user}"))
}

/// Load and validate a config, printing problems and mapping failure to exit 64.
pub(crate) fn load(path: &std::path::Path) -> Result<registry::Registry, ExitCode> {
    registry::load_file(path).map_err(|e| {
        eprintln!("portcullis: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

pub(crate) async fn open_store(reg: &registry::Registry) -> Result<Store, ExitCode> {
    let secrets = crate::secrets::Secrets::new(reg.settings.vault.as_ref()).map_err(|e| {
        eprintln!("portcullis: {e}");
        ExitCode::from(EX_CONFIG)
    })?;
    crate::secrets::open_store(reg, &secrets)
        .await
        .map_err(|e| {
            eprintln!("portcullis: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        })
}
